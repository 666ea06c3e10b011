package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// controlTimeout bounds status, disable and enable, store connection included.
const controlTimeout = 30 * time.Second

const statusUsage = `usage: masterjob status [--store URL | --server URL [--token TOKEN]] [--json] [LOCK...]

Shows every lock the store knows, or the named ones: its master (the holder
of an unexpired lease) with its host and pid, the fencing token of the
current or last lease, the time left on the lease as measured by the store
(TTL), whether the lock is disabled and why, and who changed its control
last and when. --json prints the same as a JSON array.
` + targetHelp

const disableUsage = `usage: masterjob disable --lock NAME --reason TEXT [--store URL | --server URL [--token TOKEN]]

Disables lock NAME cluster-wide: its master stops the command within one
heartbeat and releases the lease, and no instance becomes master until the
lock is enabled. Disabling a disabled lock changes nothing and is no error.
A lock may be disabled before any instance used it. The change is recorded
in the store's history.
` + targetHelp

const enableUsage = `usage: masterjob enable --lock NAME [--store URL | --server URL [--token TOKEN]]

Enables lock NAME again: one of the instances running 'masterjob run' for it
becomes master and starts the command. Enabling an enabled lock changes
nothing and is no error. The change is recorded in the store's history.
` + targetHelp

type statusFlags struct {
	fs     *flag.FlagSet
	target targetFlags
	json   bool
}

func newStatusFlags() *statusFlags {
	f := &statusFlags{fs: newFlagSet("status")}
	f.target.register(f.fs)
	f.fs.BoolVar(&f.json, "json", false, "print a JSON array instead of a table")
	return f
}

var statusCommand = &command{
	name:     "status",
	synopsis: "show the master, token, lease and control of every lock",
	usage:    statusUsage,
	flags:    func() *flag.FlagSet { return newStatusFlags().fs },
	run:      statusMain,
}

func statusMain(e *cmdEnv, c *command, args []string) int {
	f := newStatusFlags()
	if ok, code := parse(e, c, f.fs, args); !ok {
		return code
	}
	names := f.fs.Args()
	for _, n := range names {
		if err := store.ValidateLockName(n); err != nil {
			return reportUsage(e, c, err)
		}
	}
	tg, err := f.target.resolve(e, f.fs)
	if err != nil {
		return reportUsage(e, c, err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()
	var states []store.LockState
	if tg.client != nil {
		defer tg.client.close()
		states, err = tg.client.locks(ctx, names)
	} else {
		states, err = readLocks(ctx, tg.store, names)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob status: %v\n", err)
		return exitCode(err)
	}
	if f.json {
		err = writeStatusJSON(e.stdout, states)
	} else {
		err = writeStatusTable(e.stdout, states)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob status: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// readLocks reads the state of the named locks, or of every lock, from the
// store at u.
func readLocks(ctx context.Context, u storeurl.URL, names []string) ([]store.LockState, error) {
	st, err := u.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	states, err := st.Locks(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("read locks from %s: %w", u, err)
	}
	return states, nil
}

// lockJSON is one lock in `status --json`.
type lockJSON struct {
	Lock string `json:"lockName"`
	// Master is the holder of an unexpired lease, empty when there is none.
	Master string `json:"master"`
	// Holder and HolderInfo describe the holder of the current or last
	// lease (possibly expired).
	Holder     string          `json:"holder,omitempty"`
	HolderInfo json.RawMessage `json:"holderInfo,omitempty"`
	Token      int64           `json:"token"`
	AcquiredAt *time.Time      `json:"acquiredAt,omitempty"`
	RenewedAt  *time.Time      `json:"renewedAt,omitempty"`
	ExpiresAt  *time.Time      `json:"expiresAt,omitempty"`
	// TTLMillis is the time left on the lease, by the store's clock;
	// zero or negative when expired or free.
	TTLMillis int64      `json:"ttlMs"`
	Revoked   bool       `json:"revoked"`
	Disabled  bool       `json:"disabled"`
	Reason    string     `json:"reason,omitempty"`
	ChangedBy string     `json:"changedBy,omitempty"`
	ChangedAt *time.Time `json:"changedAt,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func writeStatusJSON(w io.Writer, states []store.LockState) error {
	out := make([]lockJSON, 0, len(states))
	for _, s := range states {
		l := lockJSON{
			Lock: s.Lock, Holder: s.Holder, Token: s.Token,
			AcquiredAt: optTime(s.AcquiredAt), RenewedAt: optTime(s.RenewedAt), ExpiresAt: optTime(s.ExpiresAt),
			TTLMillis: s.TTL.Milliseconds(), Revoked: s.Revoked,
			Disabled: s.Disabled, Reason: s.Reason, ChangedBy: s.ChangedBy, ChangedAt: optTime(s.ChangedAt),
		}
		if s.Held() {
			l.Master = s.Holder
		}
		if s.HolderInfo != "" {
			if json.Valid([]byte(s.HolderInfo)) {
				l.HolderInfo = json.RawMessage(s.HolderInfo)
			} else {
				l.HolderInfo, _ = json.Marshal(s.HolderInfo)
			}
		}
		out = append(out, l)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeStatusTable(w io.Writer, states []store.LockState) error {
	if len(states) == 0 {
		_, err := fmt.Fprintln(w, "no locks")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tMASTER\tHOST\tPID\tTOKEN\tTTL\tDISABLED\tCHANGED-BY\tCHANGED-AT\tREASON")
	for _, s := range states {
		master, host, pid, ttl := "-", "-", "-", "-"
		switch {
		case s.Held():
			master = quoteIfNeeded(s.Holder)
			if s.Revoked {
				master += " (revoked)"
			}
			host, pid = holderHostPID(s.HolderInfo)
			ttl = s.TTL.Round(time.Millisecond).String()
		case s.Holder != "":
			ttl = "expired"
		}
		disabled, reason := "no", "-"
		if s.Disabled {
			// The last column may hold spaces; only unprintable text is quoted.
			disabled, reason = "yes", quoteUnprintable(s.Reason)
		}
		changedBy, changedAt := "-", "-"
		if s.ChangedBy != "" {
			changedBy = quoteIfNeeded(s.ChangedBy)
		}
		if !s.ChangedAt.IsZero() {
			changedAt = s.ChangedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n",
			quoteIfNeeded(s.Lock), master, host, pid, s.Token, ttl, disabled, changedBy, changedAt, reason)
	}
	return tw.Flush()
}

// holderHostPID returns the host and pid a holder's JSON description
// (masterjob.InstanceInfo) gives, "-" for what it lacks. A description that
// is not JSON is shown as the host.
func holderHostPID(info string) (host, pid string) {
	host, pid = "-", "-"
	if info == "" {
		return host, pid
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(info), &m); err != nil {
		return quoteIfNeeded(info), pid
	}
	if v, ok := m["host"]; ok && fmt.Sprint(v) != "" {
		host = quoteIfNeeded(fmt.Sprint(v))
	}
	if v, ok := m["pid"].(float64); ok && v > 0 {
		pid = strconv.FormatInt(int64(v), 10)
	}
	return host, pid
}

// quoteUnprintable quotes s when it holds characters that are not printable
// (control characters would garble the terminal).
func quoteUnprintable(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

// quoteIfNeeded quotes s when it holds white space or non-printable
// characters, which would break the table.
func quoteIfNeeded(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || !strconv.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

type controlFlags struct {
	fs           *flag.FlagSet
	lock, reason string
	target       targetFlags
}

func newControlFlags(name string, withReason bool) *controlFlags {
	f := &controlFlags{fs: newFlagSet(name)}
	f.fs.StringVar(&f.lock, "lock", "", "the lock `NAME` (required)")
	if withReason {
		f.fs.StringVar(&f.reason, "reason", "", "why the lock is disabled, shown by status (required)")
	}
	f.target.register(f.fs)
	return f
}

var disableCommand = &command{
	name:     "disable",
	synopsis: "disable a lock cluster-wide: its master stops, nobody takes over",
	usage:    disableUsage,
	flags:    func() *flag.FlagSet { return newControlFlags("disable", true).fs },
	run:      func(e *cmdEnv, c *command, args []string) int { return controlMain(e, c, args, true) },
}

var enableCommand = &command{
	name:     "enable",
	synopsis: "enable a disabled lock: one instance becomes master",
	usage:    enableUsage,
	flags:    func() *flag.FlagSet { return newControlFlags("enable", false).fs },
	run:      func(e *cmdEnv, c *command, args []string) int { return controlMain(e, c, args, false) },
}

func controlMain(e *cmdEnv, c *command, args []string, disable bool) int {
	f := newControlFlags(c.name, disable)
	if ok, code := parse(e, c, f.fs, args); !ok {
		return code
	}
	if f.fs.NArg() > 0 {
		return reportUsage(e, c, usageError("unexpected argument %q", f.fs.Arg(0)))
	}
	if !flagSet(f.fs, "lock") {
		return reportUsage(e, c, usageError("missing --lock NAME"))
	}
	if err := store.ValidateLockName(f.lock); err != nil {
		return reportUsage(e, c, fmt.Errorf("--lock: %w", err))
	}
	if disable && strings.TrimSpace(f.reason) == "" {
		return reportUsage(e, c, usageError("missing --reason TEXT"))
	}
	if err := checkReason(f.reason); err != nil {
		return reportUsage(e, c, err)
	}
	tg, err := f.target.resolve(e, f.fs)
	if err != nil {
		return reportUsage(e, c, err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()

	var res controlResult
	if tg.client != nil {
		defer tg.client.close()
		var r controlapi.ControlResult
		r, err = tg.client.control(ctx, disable, f.lock, f.reason)
		res = controlResult{changed: r.Changed, state: lockStateOf(r.Lock), warning: r.Warning}
	} else {
		res, err = controlStore(ctx, tg.store, disable, f.lock, f.reason)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob %s: lock %q: %v\n", c.name, f.lock, err)
		return exitCode(err)
	}
	// What the store or the server says is escaped as status escapes it:
	// it must not reach the terminal raw.
	s := res.state
	switch {
	case disable && res.changed:
		fmt.Fprintf(e.stdout, "disabled lock %q: %s\n", f.lock, quoteUnprintable(s.Reason))
		if s.Held() {
			fmt.Fprintf(e.stdout, "its master %s stops within one heartbeat\n", quoteIfNeeded(s.Holder))
		}
	case disable:
		fmt.Fprintf(e.stdout, "lock %q already disabled: %s (by %s)\n", f.lock, quoteUnprintable(s.Reason), quoteIfNeeded(s.ChangedBy))
	case res.changed:
		fmt.Fprintf(e.stdout, "enabled lock %q\n", f.lock)
	default:
		fmt.Fprintf(e.stdout, "lock %q already enabled\n", f.lock)
	}
	if res.warning != "" {
		fmt.Fprintf(e.stderr, "masterjob %s: warning: %s\n", c.name, quoteUnprintable(res.warning))
	}
	return ExitOK
}

// checkReason applies the control API's rule for reasons to --reason: at
// most controlapi.MaxReasonLen bytes, no control characters but tab and
// line breaks. Its errors wrap errUsage.
func checkReason(reason string) error {
	if len(reason) > controlapi.MaxReasonLen {
		return usageError("--reason: %d bytes long, longer than %d", len(reason), controlapi.MaxReasonLen)
	}
	for _, r := range reason {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return usageError("--reason: contains the control character %U", r)
		}
	}
	return nil
}

// controlResult is the outcome of disable or enable.
type controlResult struct {
	changed bool
	state   store.LockState // after the change
	warning string          // the change was made, but ...
}

// controlStore disables or enables lock in the store at u, and records the
// change in the store's history when it keeps one.
func controlStore(ctx context.Context, u storeurl.URL, disable bool, lock, reason string) (controlResult, error) {
	st, err := u.Open(ctx)
	if err != nil {
		return controlResult{}, err
	}
	defer st.Close()
	by := controlledBy()
	var (
		change store.ControlChange
		kind   store.EventKind
	)
	if disable {
		kind = store.EventDisabled
		change, err = st.Disable(ctx, lock, reason, by)
	} else {
		kind = store.EventEnabled
		change, err = st.Enable(ctx, lock, by)
	}
	if err != nil {
		return controlResult{}, err
	}
	res := controlResult{changed: change.Changed, state: change.State}
	if h, ok := st.(store.History); ok && change.Changed {
		ev := store.Event{Lock: lock, Kind: kind, Instance: by, Reason: reason}
		if change.State.Held() {
			ev.Token = change.State.Token // the lease the change concerns
		}
		if err := h.AppendEvents(ctx, []store.Event{ev}); err != nil {
			res.warning = fmt.Sprintf("the change was made but could not be recorded in the history: %v", err)
		}
	}
	return res, nil
}

// controlledBy names the caller of Disable and Enable, for audit.
func controlledBy() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return "cli@" + host
}
