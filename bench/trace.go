//go:build linux

package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The steps of a graceful hand-off, in order, as the trace marks name them
// (internal/trace): the old master's runner, then the new one's. Each is
// measured from the SIGTERM to the runner; the report orders them by their
// median and shows the gap between consecutive medians, so that every
// millisecond has a name (the follower's notification may arrive before
// the releasing runner has its answer).
var handoffStepMarks = []struct {
	name, mark string
	old        bool // a mark of the old master's runner (else of the new)
	// any: a mark of any process (a supervisor's: only the old master's
	// sees its command exit, only the new one's is told to start it)
	any bool
}{
	{"signal received by the runner", "signal.received", true, false},
	{"job's context cancelled", "job.cancel", true, false},
	{"child signalled (SIGTERM)", "child.signalled", true, false},
	{"old supervisor asked to signal the rest", "supervisor.signal", false, true},
	{"old supervisor's scan of /proc done", "supervisor.scanned", false, true},
	{"old child reaped by its supervisor", "supervisor.reaped", false, true},
	{"old supervisor has no child left", "supervisor.empty", false, true},
	// A crash: the dead runner's last will, run by its supervisor.
	{"last will: supervisor execs it", "supervisor.will", false, true},
	{"last will: started", "will.started", false, true},
	{"last will: store opened", "will.opened", false, true},
	{"last will: lease released", "will.released", false, true},
	{"child reaped", "child.reaped", true, false},
	{"job returned", "job.stopped", true, false},
	{"release sent", "release.sent", true, false},
	{"release committed (answer received)", "release.done", true, false},
	{"old runner: member record deleted (Leave sent)", "leave.sent", true, false},
	{"old runner: Leave answered", "leave.done", true, false},
	{"old runner: Run returned", "run.returned", true, false},
	{"old runner: exiting", "runner.exit", true, false},
	{"notification received by the follower", "notify.lease", false, false},
	{"acquire sent", "acquire.sent", false, false},
	{"acquire committed (answer received)", "acquire.done", false, false},
	// A lease given in the release (store.Transfers) is read, not acquired.
	{"given lease read: sent", "adopt.sent", false, false},
	{"given lease read: answered", "adopt.done", false, false},
	{"job started", "job.start", false, false},
	{"new supervisor told to start", "supervisor.go", false, true},
	{"new supervisor forked the child", "supervisor.forked", false, true},
	{"child forked", "child.forked", false, false},
}

// StepSeries is the time of one step of a hand-off over the trials.
type StepSeries struct {
	Step    string          `json:"step"`
	Samples []time.Duration `json:"samples"`
	Summary Summary         `json:"summary"`
}

// addSteps adds one trial's step times.
func (r *Result) addSteps(steps []time.Duration) {
	if r.Steps == nil {
		r.Steps = make([]StepSeries, len(handoffStepMarks)+1)
		for i, s := range handoffStepMarks {
			r.Steps[i].Step = s.name
		}
		r.Steps[len(handoffStepMarks)].Step = "child running (its first instruction)"
	}
	for i, d := range steps {
		if d >= 0 {
			r.Steps[i].Samples = append(r.Steps[i].Samples, d)
			r.Steps[i].Summary = Summarize(r.Steps[i].Samples)
		}
	}
}

type traceMark struct {
	mono  int64
	pid   int
	event string
	lock  string
}

// handoffSteps reads the trace marks of one hand-off of lock: from t0 (the
// SIGTERM to the runner oldPid) to end (the new child running), and returns
// each step's time since t0; -1 for a step whose mark is missing.
func handoffSteps(path, lock string, oldPid int, t0, end time.Duration) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var marks []traceMark
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 || fields[3] != lock {
			continue
		}
		mono, err1 := strconv.ParseInt(fields[0], 10, 64)
		pid, err2 := strconv.Atoi(fields[1])
		if err1 != nil || err2 != nil || mono < int64(t0) || mono > int64(end) {
			continue
		}
		marks = append(marks, traceMark{mono, pid, fields[2], fields[3]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// The new master is the runner whose job started (after an
	// acquisition, or a read of a lease given to it).
	newPid := 0
	for _, m := range marks {
		if m.event == "job.start" && m.pid != oldPid {
			newPid = m.pid
		}
	}
	if newPid == 0 {
		return nil, fmt.Errorf("no job start for %s in the trace between the SIGTERM and the new child", lock)
	}
	out := make([]time.Duration, len(handoffStepMarks)+1)
	for i, s := range handoffStepMarks {
		want := newPid
		if s.old {
			want = oldPid
		}
		out[i] = -1
		for _, m := range marks {
			if (s.any || m.pid == want) && m.event == s.mark { // the first after t0
				out[i] = time.Duration(m.mono - int64(t0))
				break
			}
		}
	}
	out[len(handoffStepMarks)] = end - t0
	return out, nil
}
