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

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// controlTimeout bounds status, disable and enable, store connection included.
const controlTimeout = 30 * time.Second

const statusUsage = `usage: masterjob status [--store URL] [--json] [LOCK...]

Shows every lock the store knows, or the named ones: its master (the holder
of an unexpired lease) and what the master said of itself, the fencing token
of the current or last lease, the time left on the lease as measured by the
store, and whether the lock is disabled and why.
`

const disableUsage = `usage: masterjob disable --lock NAME --reason TEXT [--store URL]

Disables lock NAME cluster-wide: its master stops the command within one
heartbeat and releases the lease, and no instance becomes master until the
lock is enabled. Disabling a disabled lock changes nothing and is no error.
`

const enableUsage = `usage: masterjob enable --lock NAME [--store URL]

Enables lock NAME again: one of the instances running 'masterjob run' for it
becomes master and starts the command. Enabling an enabled lock changes
nothing and is no error.
`

type statusFlags struct {
	fs    *flag.FlagSet
	store string
	json  bool
}

func newStatusFlags() *statusFlags {
	f := &statusFlags{fs: newFlagSet("status")}
	f.fs.StringVar(&f.store, "store", "", "the store `URL` (default $"+EnvStore+", else "+storeurl.DefaultURL+")")
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
	u, err := storeurl.Parse(storeURL(e, f.store, storeurl.DefaultURL))
	if err != nil {
		return reportUsage(e, c, fmt.Errorf("--store: %w", err))
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()
	st, err := u.Open(ctx)
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob status: %v\n", err)
		return ExitFailure
	}
	defer st.Close()
	states, err := st.Locks(ctx, names...)
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob status: read locks from %s: %v\n", u, err)
		return ExitFailure
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
	fmt.Fprintln(tw, "LOCK\tMASTER\tHOLDER INFO\tTOKEN\tTTL\tDISABLED\tREASON")
	for _, s := range states {
		master, info, ttl := "-", "-", "-"
		switch {
		case s.Held():
			master = s.Holder
			if s.Revoked {
				master += " (revoked)"
			}
			info = describeHolder(s.HolderInfo)
			ttl = s.TTL.Round(time.Millisecond).String()
		case s.Holder != "":
			info = describeHolder(s.HolderInfo)
			ttl = "expired"
		}
		disabled, reason := "no", ""
		if s.Disabled {
			// The last column may hold spaces; only unprintable text is quoted.
			disabled = "yes"
			reason = quoteUnprintable(s.Reason)
			if s.ChangedBy != "" {
				reason += " (by " + quoteUnprintable(s.ChangedBy) + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n",
			quoteIfNeeded(s.Lock), master, info, s.Token, ttl, disabled, reason)
	}
	return tw.Flush()
}

// describeHolder turns a holder's JSON description into "host=h pid=1 ...";
// any other text is shown as it is.
func describeHolder(info string) string {
	if info == "" {
		return "-"
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(info), &m); err != nil || len(m) == 0 {
		return quoteIfNeeded(info)
	}
	var parts []string
	for _, k := range []string{"host", "pid", "address", "version"} {
		if v, ok := m[k]; ok {
			parts = append(parts, k+"="+quoteIfNeeded(fmt.Sprint(v)))
			delete(m, k)
		}
	}
	for k, v := range m {
		parts = append(parts, k+"="+quoteIfNeeded(fmt.Sprint(v)))
	}
	return strings.Join(parts, " ")
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
	fs                  *flag.FlagSet
	lock, reason, store string
}

func newControlFlags(name string, withReason bool) *controlFlags {
	f := &controlFlags{fs: newFlagSet(name)}
	f.fs.StringVar(&f.lock, "lock", "", "the lock `NAME` (required)")
	if withReason {
		f.fs.StringVar(&f.reason, "reason", "", "why the lock is disabled, shown by status (required)")
	}
	f.fs.StringVar(&f.store, "store", "", "the store `URL` (default $"+EnvStore+", else "+storeurl.DefaultURL+")")
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
	u, err := storeurl.Parse(storeURL(e, f.store, storeurl.DefaultURL))
	if err != nil {
		return reportUsage(e, c, fmt.Errorf("--store: %w", err))
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()
	st, err := u.Open(ctx)
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob %s: %v\n", c.name, err)
		return ExitFailure
	}
	defer st.Close()

	var change store.ControlChange
	if disable {
		change, err = st.Disable(ctx, f.lock, f.reason, controlledBy())
	} else {
		change, err = st.Enable(ctx, f.lock, controlledBy())
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob %s: lock %q: %v\n", c.name, f.lock, err)
		return ExitFailure
	}
	s := change.State
	switch {
	case disable && change.Changed:
		fmt.Fprintf(e.stdout, "disabled lock %q: %s\n", f.lock, s.Reason)
		if s.Held() {
			fmt.Fprintf(e.stdout, "its master %s stops within one heartbeat\n", s.Holder)
		}
	case disable:
		fmt.Fprintf(e.stdout, "lock %q already disabled: %s (by %s)\n", f.lock, s.Reason, s.ChangedBy)
	case change.Changed:
		fmt.Fprintf(e.stdout, "enabled lock %q\n", f.lock)
	default:
		fmt.Fprintf(e.stdout, "lock %q already enabled\n", f.lock)
	}
	return ExitOK
}

// controlledBy names the caller of Disable and Enable, for audit.
func controlledBy() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return "cli@" + host
}
