//go:build linux

package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/masterjob/masterjob/internal/childproc"
)

// envWills names the file where each runner's last will, run by the
// supervisor of a runner that died, records that it ran (runner mode). The
// driver gives it to every runner; the command's environment, and so the
// will's, inherits it.
const envWills = "MASTERJOB_CHAOS_WILLS"

// WillRun is one last will that ran: which runner's (Index, Gen), for
// which lease, when it started and ended on the shared clock, and its exit
// code (-1 when it did not record its end: killed, or its hard timeout).
type WillRun struct {
	Index int    `json:"idx"`
	Gen   int    `json:"gen"`
	Lock  string `json:"lock"`
	Token int64  `json:"token"`
	Pid   int    `json:"pid"`
	Start int64  `json:"start"`
	End   int64  `json:"end,omitempty"`
	Exit  int    `json:"exit"`
}

// willRecord is one line of the wills file: a will's start, or its end.
type willRecord struct {
	WillRun
	Phase string `json:"phase"` // "start" or "end"
}

// recordWill writes the start of the last will this process runs to the
// file that getenv names, and returns the function that writes its end.
// Without the file (not under a driver) both do nothing. A write that fails
// loses only the record, which the driver then reports as a missing will:
// it must not change what the will does.
func recordWill(getenv func(string) string) (done func(exit int)) {
	path := getenv(envWills)
	if path == "" {
		return func(int) {}
	}
	w := WillRun{Lock: getenv(childproc.EnvLock), Pid: os.Getpid(), Start: Mono(), Exit: -1}
	w.Token, _ = strconv.ParseInt(getenv(childproc.EnvToken), 10, 64)
	w.Index, w.Gen, _ = slotOf(getenv(envSlot))
	appendWill(path, willRecord{w, "start"})
	return func(exit int) {
		w.End, w.Exit = Mono(), exit
		appendWill(path, willRecord{w, "end"})
	}
}

// appendWill appends r to the wills file in one write, which O_APPEND
// keeps whole beside the writes of other wills.
func appendWill(path string, r willRecord) {
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}

// readWills returns the wills recorded in the file at path, one per will
// process, in the order they started; a missing file is no will.
func readWills(path string) ([]WillRun, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []WillRun
	type key struct {
		pid   int
		start int64
	}
	at := map[key]int{} // a will: its index in out
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		var r willRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		k := key{r.Pid, r.Start}
		i, ok := at[k]
		switch {
		case r.Phase == "start" || !ok:
			at[k] = len(out)
			out = append(out, r.WillRun)
		default:
			out[i].End, out[i].Exit = r.End, r.Exit
		}
	}
	return out, sc.Err()
}
