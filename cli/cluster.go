package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// lockFilterFlags are the filters of status: --match, --state, --instance.
type lockFilterFlags struct {
	match, state, instance string
}

func (f *lockFilterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.match, "match", "", "only the locks whose name contains `TEXT`, ignoring case")
	fs.StringVar(&f.state, "state", "", "only the locks in `STATE`: master, nomaster, disabled or nostandby")
	fs.StringVar(&f.instance, "instance", "", "only the locks instance `ID` is master of")
}

// resolve checks the filters. Its errors wrap errUsage.
func (f *lockFilterFlags) resolve() (controlapi.LockFilter, error) {
	lf := controlapi.LockFilter{Match: f.match, State: controlapi.LockState(f.state), Instance: f.instance}
	switch lf.State {
	case "", controlapi.StateMaster, controlapi.StateNoMaster, controlapi.StateDisabled, controlapi.StateNoStandby:
	default:
		return lf, usageError("--state %q: want master, nomaster, disabled or nostandby", f.state)
	}
	return lf, nil
}

// lockList reads the named locks, or every lock, that pass filter, with
// the summary of every lock.
func (c *apiClient) lockList(ctx context.Context, names []string, filter controlapi.LockFilter) (controlapi.LockList, error) {
	q := url.Values{}
	for _, n := range names {
		q.Add("lockName", n)
	}
	if filter.Match != "" {
		q.Set("match", filter.Match)
	}
	if filter.State != "" {
		q.Set("state", string(filter.State))
	}
	if filter.Instance != "" {
		q.Set("instance", filter.Instance)
	}
	var list controlapi.LockList
	if err := c.call(ctx, http.MethodGet, controlapi.BasePath, q, nil, &list); err != nil {
		return controlapi.LockList{}, err
	}
	if len(list.Summary.Masters) == 0 && len(list.Locks) > 0 && filter == (controlapi.LockFilter{}) {
		list.Summary = controlapi.Summarize(list.Locks) // a server without summaries
	}
	return list, nil
}

// instances reads the member list, of lock only when it is not "".
func (c *apiClient) instances(ctx context.Context, lock string) ([]controlapi.Instance, error) {
	q := url.Values{}
	if lock != "" {
		q.Set("lockName", lock)
	}
	var list controlapi.InstanceList
	if err := c.call(ctx, http.MethodGet, controlapi.InstancesPath, q, nil, &list); err != nil {
		return nil, err
	}
	return list.Instances, nil
}

// handoff asks for a hand-off.
func (c *apiClient) handoff(ctx context.Context, req controlapi.HandoffRequest) (controlapi.HandoffResult, error) {
	var res controlapi.HandoffResult
	err := c.call(ctx, http.MethodPost, controlapi.BasePath+"/handoff", nil, req, &res)
	return res, err
}

const instancesUsage = `usage: masterjob instances [--lock NAME] [--store URL | --server URL [--token TOKEN]] [--json]

Lists the live instances (members): those that announced themselves in the
store and whose record has not expired. Each instance announces itself in
the round trips it makes anyway, and its record expires by itself some time
after it stops (twice the longest check interval plus lease); a graceful
shutdown removes it at once. For each: its id, host, pid, version, HTTP
address (with 'run --http'), start time, how many masterships it held and
how many locks it takes part in when it last announced itself, its weight
for balancing, when the store last saw it, and the time left before its
record expires (TTL). --lock keeps the instances taking part in lock NAME.
--json prints a JSON array in the control API's shape (GET /api/instances).
A store that keeps no member list is an error (exit 1).
` + targetHelp

type instancesFlags struct {
	fs     *flag.FlagSet
	lock   string
	json   bool
	target targetFlags
}

func newInstancesFlags() *instancesFlags {
	f := &instancesFlags{fs: newFlagSet("instances")}
	f.fs.StringVar(&f.lock, "lock", "", "only the instances taking part in lock `NAME`")
	f.fs.BoolVar(&f.json, "json", false, "print a JSON array instead of a table")
	f.target.register(f.fs)
	return f
}

var instancesCommand = &command{
	name:     "instances",
	synopsis: "list the live instances, their masterships and locks",
	usage:    instancesUsage,
	flags:    func() *flag.FlagSet { return newInstancesFlags().fs },
	run:      instancesMain,
}

// errNoMembers: the store keeps no member list.
var errNoMembers = errors.New("this store keeps no member list: instances do not announce themselves in it")

func instancesMain(e *cmdEnv, c *command, args []string) int {
	f := newInstancesFlags()
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
	tg, err := f.target.resolve(e, f.fs)
	if err != nil {
		return reportUsage(e, c, err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, controlTimeout)
	defer cancel()
	var list []controlapi.Instance
	if tg.client != nil {
		defer tg.client.close()
		list, err = tg.client.instances(ctx, f.lock)
	} else {
		list, err = readInstances(ctx, tg.store, f.lock)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob instances: %v\n", err)
		return exitCode(err)
	}
	if f.json {
		if list == nil {
			list = []controlapi.Instance{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(list)
	} else {
		err = writeInstancesTable(e.stdout, list)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob instances: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// readInstances reads the member list of the store at u.
func readInstances(ctx context.Context, u storeurl.URL, lock string) ([]controlapi.Instance, error) {
	st, err := openForReading(ctx, u)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	ms, ok := st.(store.Membership)
	if !ok {
		return nil, fmt.Errorf("%s: %w", u, errNoMembers)
	}
	members, err := ms.Members(ctx, store.MemberFilter{Lock: lock})
	if err != nil {
		return nil, fmt.Errorf("read the member list from %s: %w", u, err)
	}
	out := make([]controlapi.Instance, len(members))
	for i, m := range members {
		out[i] = controlapi.InstanceOf(m)
	}
	return out, nil
}

func writeInstancesTable(w io.Writer, list []controlapi.Instance) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no instances")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tPID\tVERSION\tADDRESS\tSTARTED\tMASTERS\tLOCKS\tWEIGHT\tLAST-SEEN\tTTL")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return quoteIfNeeded(s)
	}
	for _, in := range list {
		host := in.Host
		if host == "" {
			host = in.Info
		}
		pid, started, seen := "-", "-", "-"
		if in.PID > 0 {
			pid = strconv.Itoa(in.PID)
		}
		if !in.Started.IsZero() {
			started = in.Started.UTC().Format(time.RFC3339)
		}
		if !in.LastSeen.IsZero() {
			seen = in.LastSeen.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n",
			quoteIfNeeded(in.ID), dash(host), pid, dash(in.Version), dash(in.Address), started,
			in.Masters, in.LockCount, strconv.FormatFloat(in.Weight, 'g', -1, 64), seen,
			(time.Duration(in.TTLMs) * time.Millisecond).String())
	}
	return tw.Flush()
}

const handoffUsage = `usage: masterjob handoff --lock NAME [--to ID] [--reason TEXT] [--store URL | --server URL [--token TOKEN]]

Moves the mastership of lock NAME to another instance without disabling
it: its master stops the command, then releases the lease, and does not
take it back soon unless no other instance takes part. With --to, the lease
is reserved for instance ID for a short while (the heartbeat interval, at
most 5s), then anyone may take it; ID must be a live instance taking part in
the lock (see 'masterjob instances --lock NAME'). Without --to, another
live instance must take part in the lock. The request is recorded in the
store's history. A lock that is unknown, disabled or without a master, an
ID that is not a live instance taking part in it, or a store that cannot
hand off is an error (exit 1).
` + targetHelp

type handoffFlags struct {
	fs               *flag.FlagSet
	lock, to, reason string
	target           targetFlags
}

func newHandoffFlags() *handoffFlags {
	f := &handoffFlags{fs: newFlagSet("handoff")}
	f.fs.StringVar(&f.lock, "lock", "", "the lock `NAME` (required)")
	f.fs.StringVar(&f.to, "to", "", "the instance `ID` to hand the lock to (default: any other)")
	f.fs.StringVar(&f.reason, "reason", "", "why, recorded in the history")
	f.target.register(f.fs)
	return f
}

var handoffCommand = &command{
	name:     "handoff",
	synopsis: "move a lock's mastership to another instance without disabling it",
	usage:    handoffUsage,
	flags:    func() *flag.FlagSet { return newHandoffFlags().fs },
	run:      handoffMain,
}

func handoffMain(e *cmdEnv, c *command, args []string) int {
	f := newHandoffFlags()
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
	if flagSet(f.fs, "to") && strings.TrimSpace(f.to) == "" {
		return reportUsage(e, c, usageError("--to: empty instance id; leave the flag out to hand the lock to any other instance"))
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
	req := controlapi.HandoffRequest{LockName: f.lock, To: f.to, Reason: f.reason}
	var res controlapi.HandoffResult
	if tg.client != nil {
		defer tg.client.close()
		res, err = tg.client.handoff(ctx, req)
	} else {
		res, err = handoffStore(ctx, tg.store, req)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "masterjob handoff: lock %q: %v\n", f.lock, err)
		return exitCode(err)
	}
	to := "any other instance"
	if res.To != "" {
		to = quoteIfNeeded(res.To)
	}
	fmt.Fprintf(e.stdout, "asked %s to hand lock %q over to %s: it stops the command, then releases the lock\n",
		quoteIfNeeded(res.From), f.lock, to)
	if res.Warning != "" {
		fmt.Fprintf(e.stderr, "masterjob handoff: warning: %s\n", res.Warning)
	}
	return ExitOK
}

// handoffStore asks for a hand-off in the store at u, recorded in its
// history.
func handoffStore(ctx context.Context, u storeurl.URL, req controlapi.HandoffRequest) (controlapi.HandoffResult, error) {
	st, err := u.Open(ctx)
	if err != nil {
		return controlapi.HandoffResult{}, err
	}
	defer st.Close()
	return controlapi.Handoff(ctx, st, req, controlledBy(), "")
}

const watchUsage = `usage: masterjob watch [--lock NAME] [--json] [--store URL | --server URL [--token TOKEN]]

Prints, as they happen, the entries appended to the store's history
(control changes; mastership transitions: acquired, released, takeover,
lost, demoted; hand-off requests) and the instances joining and leaving,
until interrupted. Through a server it reads the event stream of its
control API (GET /api/mastercontrols/events) and, when the stream breaks,
reconnects and resumes after the last entry printed; joins and leaves that
happened meanwhile are not replayed. --lock prints only the entries of
lock NAME (joins and leaves still show). --json prints one JSON object per
line: {"type": "history", "event": {...}}, {"type": "member", "member":
{...}} or {"type": "gap", "message": "..."} (entries were missed).
` + targetHelp

type watchFlags struct {
	fs     *flag.FlagSet
	lock   string
	json   bool
	target targetFlags
}

func newWatchFlags() *watchFlags {
	f := &watchFlags{fs: newFlagSet("watch")}
	f.fs.StringVar(&f.lock, "lock", "", "only the history entries of lock `NAME`")
	f.fs.BoolVar(&f.json, "json", false, "print one JSON object per line")
	f.target.register(f.fs)
	return f
}

var watchCommand = &command{
	name:     "watch",
	synopsis: "print mastership changes, control changes and joins as they happen",
	usage:    watchUsage,
	flags:    func() *flag.FlagSet { return newWatchFlags().fs },
	run:      watchMain,
}

func watchMain(e *cmdEnv, c *command, args []string) int {
	f := newWatchFlags()
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
	tg, err := f.target.resolve(e, f.fs)
	if err != nil {
		return reportUsage(e, c, err)
	}
	where := "the store " + tg.store.String()
	if tg.client != nil {
		where = "the server " + tg.client.String()
	}
	p := &watchPrinter{w: e.stdout, json: f.json, ready: func(resumed bool, after string) {
		if resumed {
			fmt.Fprintf(e.stderr, "masterjob watch: reconnected to %s, resuming after history entry %s\n", where, after)
			return
		}
		fmt.Fprintf(e.stderr, "masterjob watch: watching %s (interrupt to stop)\n", where)
	}}
	if tg.client != nil {
		defer tg.client.close()
		err = tg.client.watch(e.ctx, f.lock, p, e.stderr)
	} else {
		err = watchStore(e.ctx, tg.store, f.lock, p)
	}
	if err != nil && e.ctx.Err() == nil {
		fmt.Fprintf(e.stderr, "masterjob watch: %v\n", err)
		return exitCode(err)
	}
	return ExitOK
}

// sseEvent is one event of a Server-Sent Events stream.
type sseEvent struct {
	id, typ, data string
	hasID         bool
}

// readSSE reads the events of an SSE stream from r and passes each to fn,
// until r ends or fn fails.
func readSSE(r io.Reader, fn func(sseEvent) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch {
		case line == "":
			if ev.data != "" || ev.typ != "" {
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "id":
				ev.id, ev.hasID = v, true
			case "event":
				ev.typ = v
			case "data":
				if ev.data != "" {
					ev.data += "\n"
				}
				ev.data += v
			}
		}
	}
}

// watchPrinter prints the events of a stream.
type watchPrinter struct {
	w    io.Writer
	json bool
	last string // id of the last history entry printed
	// resumed is set once a stream began: the next one resumes.
	resumed bool
	// ready is called when a stream begins.
	ready func(resumed bool, after string)
}

// print prints one event.
func (p *watchPrinter) print(ev sseEvent) error {
	if ev.hasID {
		p.last = ev.id
	}
	var err error
	switch ev.typ {
	case "ready":
		if p.ready != nil {
			p.ready(p.resumed, p.last)
		}
		p.resumed = true
		return nil
	case "", "message":
		var e controlapi.Event
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			return fmt.Errorf("an entry of the stream is not the expected JSON: %w", err)
		}
		if p.json {
			err = writeJSONLine(p.w, struct {
				Type  string           `json:"type"`
				Event controlapi.Event `json:"event"`
			}{"history", e})
		} else {
			token, remote, by, reason := "-", "-", "-", "-"
			if e.Token != 0 {
				token = strconv.FormatInt(e.Token, 10)
			}
			if e.Remote != "" {
				remote = quoteIfNeeded(e.Remote)
			}
			if e.Instance != "" {
				by = quoteIfNeeded(e.Instance)
			}
			if e.Reason != "" {
				reason = quoteUnprintable(e.Reason)
			}
			_, err = fmt.Fprintf(p.w, "%s  %s  %s  %s  token %s  from %s  %s\n", e.At.UTC().Format(historyTimeFormat),
				quoteIfNeeded(e.LockName), quoteIfNeeded(e.Kind), by, token, remote, reason)
		}
	case "member":
		var m controlapi.MemberEvent
		if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
			return fmt.Errorf("a member event of the stream is not the expected JSON: %w", err)
		}
		if p.json {
			err = writeJSONLine(p.w, struct {
				Type   string                 `json:"type"`
				Member controlapi.MemberEvent `json:"member"`
			}{"member", m})
		} else {
			at, host := "-", "-"
			if !m.At.IsZero() {
				at = m.At.UTC().Format(historyTimeFormat)
			}
			if m.Host != "" {
				host = quoteIfNeeded(m.Host)
			}
			_, err = fmt.Fprintf(p.w, "%s  -  %s  %s  host %s  %d locks\n", at, quoteIfNeeded(m.Kind), quoteIfNeeded(m.Instance), host, m.LockCount)
		}
	case "gap":
		var g struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal([]byte(ev.data), &g)
		if p.json {
			err = writeJSONLine(p.w, struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			}{"gap", g.Message})
		} else {
			_, err = fmt.Fprintf(p.w, "(gap: %s)\n", quoteUnprintable(g.Message))
		}
	}
	return err
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// watch prints the server's event stream until ctx is done, reconnecting
// with capped, jittered backoff when it breaks and resuming after the last
// entry printed. A refusal other than 503 (bad input, a wrong token, a
// server without the stream) ends it.
func (c *apiClient) watch(ctx context.Context, lock string, p *watchPrinter, stderr io.Writer) error {
	fails := 0
	for {
		connected, err := c.stream(ctx, lock, p)
		if ctx.Err() != nil {
			return nil
		}
		var ae *apiError
		if errors.As(err, &ae) && ae.status != http.StatusServiceUnavailable {
			return err
		}
		if connected {
			fails = 0
		}
		fails++
		wait := backoff.Delay(fails, 200*time.Millisecond, 10*time.Second)
		fmt.Fprintf(stderr, "masterjob watch: stream interrupted (%v); reconnecting in %v\n", err, wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// stream reads the event stream once; connected reports that the server
// accepted it.
func (c *apiClient) stream(ctx context.Context, lock string, p *watchPrinter) (connected bool, err error) {
	u := *c.base
	u.Path += controlapi.BasePath + "/events"
	if lock != "" {
		u.RawQuery = url.Values{"lockName": {lock}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("request to %s: %w", c, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", "masterjob/"+version())
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if p.last != "" {
		req.Header.Set("Last-Event-ID", p.last)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("server %s: %w", c, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return false, c.errorOf(resp, data)
	}
	err = readSSE(resp.Body, p.print)
	if errors.Is(err, io.EOF) {
		err = errors.New("the server ended the stream")
	}
	return true, err
}

// watchStore prints the events of the store at u until ctx is done: the
// control API's event stream, served in this process.
func watchStore(ctx context.Context, u storeurl.URL, lock string, p *watchPrinter) error {
	st, err := openForReading(ctx, u)
	if err != nil {
		return err
	}
	defer st.Close()
	h, err := controlapi.New(st, controlapi.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	target := controlapi.BasePath + "/events"
	if lock != "" {
		target += "?" + url.Values{"lockName": {lock}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost"+target, nil)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, pw: pw}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, req)
		_ = pw.Close()
	}()
	err = readSSE(pr, p.print)
	_ = pr.CloseWithError(errors.New("the reader stopped"))
	<-done
	if w.status != 0 && w.status != http.StatusOK {
		var je controlapi.Error
		if json.Unmarshal([]byte(w.body.String()), &je) == nil && je.Error != "" {
			return fmt.Errorf("%s: %s", u, je.Error)
		}
		return fmt.Errorf("%s: status %d", u, w.status)
	}
	if errors.Is(err, io.EOF) && ctx.Err() == nil {
		return errors.New("the stream ended")
	}
	return nil
}

// pipeResponse is an http.ResponseWriter that passes a streamed body to a
// pipe, and keeps the body of an answer other than 200.
type pipeResponse struct {
	header http.Header
	status int
	pw     *io.PipeWriter
	body   strings.Builder
}

func (r *pipeResponse) Header() http.Header { return r.header }

func (r *pipeResponse) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *pipeResponse) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.status != http.StatusOK {
		return r.body.Write(b)
	}
	return r.pw.Write(b)
}

// Flush is what http.ResponseController needs: the pipe does not buffer.
func (r *pipeResponse) Flush() {}

// weightValue is the flag.Value of run --weight: a positive number.
type weightValue struct {
	w   float64
	set bool
}

func (v *weightValue) String() string {
	if v == nil || !v.set {
		return ""
	}
	return strconv.FormatFloat(v.w, 'g', -1, 64)
}

func (v *weightValue) Set(s string) error {
	w, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(w > 0) || math.IsInf(w, 0) {
		return fmt.Errorf("want a positive number such as 1 or 2.5, got %q", s)
	}
	v.w, v.set = w, true
	return nil
}
