package cli

import (
	"context"
	"encoding/json"
	"errors"
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

const statusUsage = `usage: masterjob status [--match TEXT] [--state STATE] [--instance ID] [--store URL | --server URL [--token TOKEN]] [--json] [LOCK...]

Shows every lock the store knows, or the named ones: its master (the holder
of an unexpired lease) with its host and pid, the fencing token of the
current or last lease, the time left on the lease as measured by the store
(TTL), how many live instances other than the master take part in it
(STANDBYS: those that could take over; "-" on a store that keeps no member
list), whether the lock is disabled and why, and who changed its control
last and when. Below the table, how many masterships each instance holds.
--json prints a JSON array of locks in the control API's shape (the
README's "Operating it" and 'go doc controlapi.Lock').

--match, --state and --instance keep the locks whose name contains TEXT
(ignoring case), that are in STATE (master, nomaster, disabled, nostandby)
or whose master is instance ID; the masterships below the table count every
lock.

A lock the store has no record of (no instance has been its master and it
was never disabled) is unknown: status says so on stderr instead of showing
a row (--json marks it "unknown": true), and exits with status 1 when every
lock named is unknown. Status creates and changes nothing: on a SQLite,
PostgreSQL or MySQL store nothing has used yet (no file, no tables:
another prefix, schema or path than the runners'), it fails and says so.
A SQLite store is opened read-only, so status reads a file its user
cannot write.
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
	filter lockFilterFlags
}

func newStatusFlags() *statusFlags {
	f := &statusFlags{fs: newFlagSet("status")}
	f.target.register(f.fs)
	f.fs.BoolVar(&f.json, "json", false, "print a JSON array instead of a table")
	f.filter.register(f.fs)
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
	filter, err := f.filter.resolve()
	if err != nil {
		return reportUsage(e, c, err)
	}
	tg, err := f.target.resolve(e, f.fs)
	if err != nil {
		return reportUsage(e, c, err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()
	var list controlapi.LockList
	if tg.client != nil {
		defer tg.client.close()
		list, err = tg.client.lockList(ctx, names, filter)
	} else {
		list, err = readLockList(ctx, tg.store, names, filter)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob status: %v\n", err)
		return exitCode(err)
	}
	locks := list.Locks
	if f.json {
		err = writeStatusJSON(e.stdout, locks)
	} else {
		err = writeStatusTable(e.stdout, locks)
		if err == nil && len(list.Summary.Masters) > 0 {
			err = writeMasterships(e.stdout, list.Summary.Masters)
		}
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob status: %v\n", err)
		return ExitFailure
	}
	unknown := 0
	for _, l := range locks {
		if l.Unknown {
			unknown++
			fmt.Fprintf(e.stderr, "masterjob status: unknown lock %s: no instance has been its master and it was never disabled\n", quoteIfNeeded(l.LockName))
		}
	}
	if len(names) > 0 && len(locks) > 0 && unknown == len(locks) {
		return ExitFailure
	}
	return ExitOK
}

// readLockList reads the named locks, or every lock, from the store at u,
// with their standbys on a store that keeps a member list, and keeps
// those that pass filter, as the control API's list does (without a
// page).
func readLockList(ctx context.Context, u storeurl.URL, names []string, filter controlapi.LockFilter) (controlapi.LockList, error) {
	st, err := openForReading(ctx, u)
	if err != nil {
		return controlapi.LockList{}, err
	}
	defer st.Close()
	states, err := st.Locks(ctx, names...)
	if err != nil {
		return controlapi.LockList{}, fmt.Errorf("read locks from %s: %w", u, err)
	}
	all := make([]controlapi.Lock, len(states))
	for i, s := range states {
		all[i] = controlapi.LockOf(s)
	}
	if ms, ok := st.(store.Membership); ok {
		members, err := ms.Members(ctx, store.MemberFilter{WithLocks: true})
		if err != nil {
			return controlapi.LockList{}, fmt.Errorf("read the member list from %s: %w", u, err)
		}
		controlapi.SetStandbys(all, members)
	}
	list := controlapi.LockList{Summary: controlapi.Summarize(all), Locks: []controlapi.Lock{}}
	for _, l := range all {
		if filter.Matches(l) {
			list.Locks = append(list.Locks, l)
		}
	}
	list.Total = len(list.Locks)
	return list, nil
}

// writeMasterships prints how many masterships each instance holds.
func writeMasterships(w io.Writer, ms []controlapi.Masterships) error {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tHOST\tMASTERSHIPS")
	for _, m := range ms {
		host := "-"
		if m.Host != "" {
			host = quoteIfNeeded(m.Host)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", quoteIfNeeded(m.Instance), host, m.Count)
	}
	return tw.Flush()
}

// openForReading opens the store for a command that only reads: it never
// writes, so it creates no file, table or schema and migrates none (a
// status with a mistyped prefix would otherwise create a new set of
// tables and show "no locks"), and SQLite opens read-only, so that it
// works on a file its user cannot write.
func openForReading(ctx context.Context, u storeurl.URL) (store.Store, error) {
	if u.Scheme == storeurl.SchemeSQLite {
		u.ReadOnly = true
	}
	st, err := u.WithoutMigrate().Open(ctx)
	if errors.Is(err, store.ErrNotInitialized) {
		return nil, fmt.Errorf("%w (this command creates nothing: has a runner used this store? "+
			"Check the URL's prefix, schema or path)", err)
	}
	return st, err
}

// writeStatusJSON prints locks as a JSON array of controlapi.Lock: the
// shape of the control API's answers.
func writeStatusJSON(w io.Writer, locks []controlapi.Lock) error {
	if locks == nil {
		locks = []controlapi.Lock{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(locks)
}

// writeStatusTable prints the known locks as a table (unknown ones are
// reported apart).
func writeStatusTable(w io.Writer, locks []controlapi.Lock) error {
	known := make([]controlapi.Lock, 0, len(locks))
	for _, l := range locks {
		if !l.Unknown {
			known = append(known, l)
		}
	}
	if len(known) == 0 {
		if len(locks) > 0 {
			return nil // every lock asked for is unknown: said on stderr
		}
		_, err := fmt.Fprintln(w, "no locks")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tMASTER\tHOST\tPID\tTOKEN\tTTL\tSTANDBYS\tDISABLED\tCHANGED-BY\tCHANGED-AT\tREASON")
	for _, l := range known {
		master, host, pid, ttl := "-", "-", "-", "-"
		if l.Master != "" {
			master = quoteIfNeeded(l.Master)
			if l.Revoked {
				master += " (revoked)"
			}
			host, pid = holderHostPID(l)
			ttl = (time.Duration(l.ExpiresInMs) * time.Millisecond).String()
		}
		disabled, reason := "no", "-"
		if l.Disabled {
			// The last column may hold spaces; only unprintable text is quoted.
			disabled, reason = "yes", quoteUnprintable(l.Reason)
		}
		changedBy, changedAt := "-", "-"
		if l.ChangedBy != "" {
			changedBy = quoteIfNeeded(l.ChangedBy)
		}
		if !l.ChangedAt.IsZero() {
			changedAt = l.ChangedAt.UTC().Format(time.RFC3339)
		}
		standbys := "-"
		if l.Standbys != nil {
			standbys = strconv.Itoa(*l.Standbys)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			quoteIfNeeded(l.LockName), master, host, pid, l.Token, ttl, standbys, disabled, changedBy, changedAt, reason)
	}
	return tw.Flush()
}

// holderHostPID returns the host and pid of a lock's master, "-" for what
// its description lacks. A description that is not the usual JSON
// (holderInfo) is shown as the host.
func holderHostPID(l controlapi.Lock) (host, pid string) {
	host, pid = "-", "-"
	switch {
	case l.Holder != nil:
		if l.Holder.Host != "" {
			host = quoteIfNeeded(l.Holder.Host)
		}
		if l.Holder.PID > 0 {
			pid = strconv.Itoa(l.Holder.PID)
		}
	case l.HolderInfo != "":
		host = quoteIfNeeded(l.HolderInfo)
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
		return reportUsage(e, c, unexpectedArg(f.fs))
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
