package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// defaultHistoryLimit is the default of history --limit.
const defaultHistoryLimit = 20

// historyTimeFormat is RFC 3339 with milliseconds, for the history table.
const historyTimeFormat = "2006-01-02T15:04:05.000Z07:00"

const historyUsage = `usage: masterjob history [--lock NAME] [--limit N] [--store URL | --server URL [--token TOKEN]] [--json]

Prints the most recent entries of the audit history the store keeps, newest
first: control changes (disabled, enabled: who, why, from which address)
and mastership transitions (acquired, released, lost, demoted: which
instance, which fencing token, why). --json prints the same as a JSON array.
It creates nothing, and opens a SQLite store read-only, as status does.
` + targetHelp

type historyFlags struct {
	fs     *flag.FlagSet
	lock   string
	limit  intValue
	json   bool
	target targetFlags
}

func newHistoryFlags() *historyFlags {
	f := &historyFlags{fs: newFlagSet("history"), limit: intValue{n: defaultHistoryLimit}}
	f.fs.StringVar(&f.lock, "lock", "", "only the entries of lock `NAME`")
	f.fs.Var(&f.limit, "limit", fmt.Sprintf("print at most `N` entries, 1 to %d (default %d)", store.MaxEventsLimit, defaultHistoryLimit))
	f.fs.BoolVar(&f.json, "json", false, "print a JSON array instead of a table")
	f.target.register(f.fs)
	return f
}

var historyCommand = &command{
	name:     "history",
	synopsis: "show recent control changes and mastership transitions",
	usage:    historyUsage,
	flags:    func() *flag.FlagSet { return newHistoryFlags().fs },
	run:      historyMain,
}

// errNoHistory: the store keeps no history.
var errNoHistory = errors.New("this store keeps no history")

func historyMain(e *cmdEnv, c *command, args []string) int {
	f := newHistoryFlags()
	if ok, code := parse(e, c, f.fs, args); !ok {
		return code
	}
	if f.fs.NArg() > 0 {
		return reportUsage(e, c, unexpectedArg(f.fs))
	}
	if flagSet(f.fs, "lock") {
		if err := store.ValidateLockName(f.lock); err != nil {
			return reportUsage(e, c, fmt.Errorf("--lock: %w", err))
		}
	}
	if f.limit.n < 1 || f.limit.n > store.MaxEventsLimit {
		return reportUsage(e, c, usageError("--limit: want 1 to %d, got %d", store.MaxEventsLimit, f.limit.n))
	}
	tg, err := f.target.resolve(e, f.fs)
	if err != nil {
		return reportUsage(e, c, err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()
	var events []controlapi.Event
	if tg.client != nil {
		defer tg.client.close()
		events, err = tg.client.events(ctx, f.lock, f.limit.n)
	} else {
		events, err = readEvents(ctx, tg.store, f.lock, f.limit.n)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob history: %v\n", err)
		return exitCode(err)
	}
	if f.json {
		err = writeHistoryJSON(e.stdout, events)
	} else {
		err = writeHistoryTable(e.stdout, events)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob history: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// readEvents reads the newest limit entries of the history of the store at
// u, of lock only when it is not "".
func readEvents(ctx context.Context, u storeurl.URL, lock string, limit int) ([]controlapi.Event, error) {
	st, err := openForReading(ctx, u)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	h, ok := st.(store.History)
	if !ok {
		return nil, fmt.Errorf("%s: %w", u, errNoHistory)
	}
	events, err := h.Events(ctx, store.EventFilter{Lock: lock, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("read the history from %s: %w", u, err)
	}
	out := make([]controlapi.Event, len(events))
	for i, ev := range events {
		out[i] = controlapi.EventOf(ev)
	}
	return out, nil
}

// writeHistoryJSON prints events as the control API does.
func writeHistoryJSON(w io.Writer, events []controlapi.Event) error {
	if events == nil {
		events = []controlapi.Event{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(events)
}

func writeHistoryTable(w io.Writer, events []controlapi.Event) error {
	if len(events) == 0 {
		_, err := fmt.Fprintln(w, "no history")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tLOCK\tEVENT\tBY\tTOKEN\tREMOTE\tREASON")
	for _, ev := range events {
		token, remote := "-", "-"
		if ev.Token != 0 {
			token = strconv.FormatInt(ev.Token, 10)
		}
		if ev.Remote != "" {
			remote = quoteIfNeeded(ev.Remote)
		}
		by, reason := "-", "-"
		if ev.Instance != "" {
			by = quoteIfNeeded(ev.Instance)
		}
		if ev.Reason != "" {
			reason = quoteUnprintable(ev.Reason)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.At.UTC().Format(historyTimeFormat),
			quoteIfNeeded(ev.LockName), quoteIfNeeded(ev.Kind), by, token, remote, reason)
	}
	return tw.Flush()
}
