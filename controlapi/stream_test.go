package controlapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// sseEvent is one event read from a stream.
type sseEvent struct {
	ID, Event, Data string
	At              time.Time // when it was read
}

// sseClient reads a stream in a goroutine.
type sseClient struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent
	pings  chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why the stream ended, once done is closed
}

// openStream opens GET url as a stream; hdr holds header name, value
// pairs. It fails the test unless the answer is 200.
func openStream(t testing.TB, url string, hdr ...string) *sseClient {
	t.Helper()
	c, status, body := tryStream(t, url, hdr...)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	return c
}

func tryStream(t testing.TB, url string, hdr ...string) (*sseClient, int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode, string(b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	c := &sseClient{t: t, resp: resp, events: make(chan sseEvent, 100000), pings: make(chan struct{}, 1000), cancel: cancel, done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c, http.StatusOK, ""
}

func (c *sseClient) read() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.resp.Body, 64<<10)
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			c.err = err
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.Data != "" || ev.Event != "" {
				ev.At = time.Now()
				c.events <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			select {
			case c.pings <- struct{}{}:
			default:
			}
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "id":
				ev.ID = v
			case "event":
				ev.Event = v
			case "data":
				ev.Data += v
			}
		}
	}
}

func (c *sseClient) close() {
	c.cancel()
	<-c.done
	c.resp.Body.Close()
}

// next returns the next event, failing the test after d.
func (c *sseClient) next(d time.Duration) sseEvent {
	c.t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(d):
		c.t.Fatalf("no event within %v", d)
		return sseEvent{}
	}
}

// nextOf returns the next event of type typ ("" for history entries),
// skipping the others.
func (c *sseClient) nextOf(typ string, d time.Duration) sseEvent {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev := c.next(time.Until(deadline))
		if ev.Event == typ {
			return ev
		}
	}
}

// none checks that no event arrives within d.
func (c *sseClient) none(d time.Duration) {
	c.t.Helper()
	select {
	case ev := <-c.events:
		c.t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func entryOf(t testing.TB, ev sseEvent) controlapi.Event {
	t.Helper()
	var e controlapi.Event
	if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
		t.Fatalf("event %+v: %v", ev, err)
	}
	if strconv.FormatInt(e.ID, 10) != ev.ID {
		t.Errorf("event id %q, entry id %d", ev.ID, e.ID)
	}
	return e
}

func memberOf(t testing.TB, ev sseEvent) controlapi.MemberEvent {
	t.Helper()
	var m controlapi.MemberEvent
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		t.Fatalf("event %+v: %v", ev, err)
	}
	return m
}

// ready reads the first event of a stream and returns the id it starts
// after.
func (c *sseClient) ready() int64 {
	c.t.Helper()
	ev := c.next(5 * time.Second)
	if ev.Event != "ready" {
		c.t.Fatalf("first event %+v, want ready", ev)
	}
	id, err := strconv.ParseInt(ev.ID, 10, 64)
	if err != nil {
		c.t.Fatalf("ready id %q", ev.ID)
	}
	return id
}

// streamServer serves h on a real listener.
func streamServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// TestStreamDelivers: a stream delivers control changes, mastership
// transitions and member joins and leaves (by Leave and by expiry) as they
// happen, each history entry with its id, lock, instance, token and store
// time.
func TestStreamDelivers(t *testing.T) {
	ms := memstore.New()
	h := newHandler(t, ms, controlapi.WithToken("tok"), controlapi.WithPollInterval(20*time.Millisecond))
	srv := streamServer(t, h)
	s := openStream(t, srv.URL+"/api/mastercontrols/events")
	start := s.ready()
	if start != 0 {
		t.Errorf("empty history: ready id %d", start)
	}

	// A member joins.
	m := announce(t, ms, store.Member{ID: "web-1", Info: infoJSON("web-1", 7, "web-1:8080"), Locks: []string{"JOB"}}, 300*time.Millisecond)
	got := memberOf(t, s.nextOf("member", 2*time.Second))
	if got.Kind != "joined" || got.Instance != "web-1" || got.Host != "web-1" || got.Address != "web-1:8080" || got.LockCount != 1 || got.At.IsZero() {
		t.Errorf("joined: %+v", got)
	}
	// A control change over the API.
	acquire(t, m, store.Holder{ID: "web-1"}, "JOB", time.Minute)
	t0 := time.Now()
	status, body := post(t, srv, "/api/mastercontrols/disable", `{"lockName":"JOB","reason":"maint"}`)
	if status != 200 {
		t.Fatalf("disable: %d %s", status, body)
	}
	ev := s.next(2 * time.Second)
	e := entryOf(t, ev)
	t.Logf("disable delivered %v after the request", ev.At.Sub(t0))
	if e.Kind != "disabled" || e.LockName != "JOB" || e.Instance != "http" || e.Token != 1 || e.Reason != "maint" || e.At.IsZero() || e.ID <= start {
		t.Errorf("disabled: %+v", e)
	}
	// A mastership transition recorded by an executor's audit recorder.
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "JOB", Kind: store.EventReleased, Instance: "web-1", Token: 1}}); err != nil {
		t.Fatal(err)
	}
	if e2 := entryOf(t, s.next(2*time.Second)); e2.Kind != "released" || e2.ID != e.ID+1 || e2.Instance != "web-1" || e2.Token != 1 {
		t.Errorf("released: %+v", e2)
	}
	// The member's record expires (nobody renews it): it left.
	got = memberOf(t, s.nextOf("member", 2*time.Second))
	if got.Kind != "left" || got.Instance != "web-1" {
		t.Errorf("left: %+v", got)
	}
	// Another joins and leaves at shutdown.
	m2 := announce(t, ms, store.Member{ID: "web-2", Locks: []string{"JOB"}}, time.Minute)
	if got := memberOf(t, s.nextOf("member", 2*time.Second)); got.Kind != "joined" || got.Instance != "web-2" {
		t.Errorf("joined: %+v", got)
	}
	if err := m2.Leave(context.Background(), "web-2"); err != nil {
		t.Fatal(err)
	}
	if got := memberOf(t, s.nextOf("member", 2*time.Second)); got.Kind != "left" || got.Instance != "web-2" {
		t.Errorf("left: %+v", got)
	}

	// One lock only.
	f := openStream(t, srv.URL+"/api/mastercontrols/events?lockName=OTHER")
	f.ready()
	post(t, srv, "/api/mastercontrols/enable", `{"lockName":"JOB"}`)
	post(t, srv, "/api/mastercontrols/disable", `{"lockName":"OTHER","reason":"x"}`)
	if e := entryOf(t, f.nextOf("", 2*time.Second)); e.LockName != "OTHER" {
		t.Errorf("stream of OTHER got %+v", e)
	}
	if e := entryOf(t, s.next(2*time.Second)); e.LockName != "JOB" || e.Kind != "enabled" {
		t.Errorf("stream of every lock got %+v", e)
	}
	if e := entryOf(t, s.next(2*time.Second)); e.LockName != "OTHER" {
		t.Errorf("stream of every lock got %+v", e)
	}
}

// noPush is a memstore without its Notifier: the stream polls.
type noPush struct {
	store.Store
	store.History
	store.Membership
}

// TestStreamPolls: on a store that does not push, the stream reads the
// history and the member list on its own schedule.
func TestStreamPolls(t *testing.T) {
	ms := memstore.New()
	st := noPush{ms, ms, ms}
	if _, ok := store.Store(st).(store.Notifier); ok {
		t.Fatal("noPush pushes")
	}
	srv := streamServer(t, newHandler(t, st, controlapi.WithPollInterval(50*time.Millisecond)))
	s := openStream(t, srv.URL+"/api/mastercontrols/events")
	s.ready()
	t0 := time.Now()
	if _, err := ms.Disable(context.Background(), "JOB", "r", "t"); err != nil {
		t.Fatal(err)
	}
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "JOB", Kind: store.EventDisabled, Instance: "t"}}); err != nil {
		t.Fatal(err)
	}
	if e := entryOf(t, s.next(2*time.Second)); e.Kind != "disabled" {
		t.Errorf("got %+v", e)
	}
	t.Logf("delivered %v after the append, polling every 50ms", time.Since(t0))
	announce(t, ms, store.Member{ID: "web-1", Locks: []string{"JOB"}}, time.Minute)
	if m := memberOf(t, s.nextOf("member", 2*time.Second)); m.Kind != "joined" {
		t.Errorf("got %+v", m)
	}
}

// leaseOnly is a memstore that pushes lease changes only, as a backend
// that does not push the changes of its history.
type leaseOnly struct {
	noPush
	ms *memstore.Store
}

func (l leaseOnly) Subscribe(ctx context.Context) (<-chan store.Change, error) {
	in, err := l.ms.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan store.Change)
	go func() {
		defer close(out)
		for c := range in {
			if c.Kind == store.ChangeLease {
				out <- c
			}
		}
	}()
	return out, nil
}

// TestStreamLeasePushesOnly: a store that pushes lease changes but not
// those of its history is read on the poll interval, not on the safety
// net's ten times longer one.
func TestStreamLeasePushesOnly(t *testing.T) {
	ms := memstore.New()
	st := leaseOnly{noPush{ms, ms, ms}, ms}
	srv := streamServer(t, newHandler(t, st, controlapi.WithPollInterval(100*time.Millisecond)))
	s := openStream(t, srv.URL+"/api/mastercontrols/events")
	s.ready()
	time.Sleep(150 * time.Millisecond)                        // subscribed
	acquire(t, ms, store.Holder{ID: "a"}, "JOB", time.Minute) // a lease change is pushed
	t0 := time.Now()
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "JOB", Kind: store.EventAcquired, Instance: "a"}}); err != nil {
		t.Fatal(err)
	}
	s.next(2 * time.Second)
	if took := time.Since(t0); took > 500*time.Millisecond {
		t.Errorf("delivered %v after the append, polling every 100ms", took)
	}
}

// TestStreamResume: a client that reconnects with Last-Event-ID gets
// exactly the entries it missed, in order, then the live ones: from the
// stream's recent entries while another client keeps the stream's reader
// running, and from the store's history once nobody was connected.
func TestStreamResume(t *testing.T) {
	ms := memstore.New()
	ctx := context.Background()
	srv := streamServer(t, newHandler(t, ms, controlapi.WithPollInterval(20*time.Millisecond)))
	url := srv.URL + "/api/mastercontrols/events"
	appendEv := func(lock, reason string) {
		t.Helper()
		if err := ms.AppendEvents(ctx, []store.Event{{Lock: lock, Kind: store.EventAcquired, Instance: "i", Reason: reason}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		appendEv("A", fmt.Sprint("old ", i))
	}
	check := func(c *sseClient, want ...string) int64 {
		t.Helper()
		var last int64
		for _, w := range want {
			e := entryOf(t, c.next(2*time.Second))
			if e.Reason != w || e.ID <= last {
				t.Fatalf("got %+v after id %d, want %q", e, last, w)
			}
			last = e.ID
		}
		return last
	}

	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("another client connected: %v", keep), func(t *testing.T) {
			var keeper *sseClient
			if keep {
				keeper = openStream(t, url)
				keeper.ready()
			}
			a := openStream(t, url)
			a.ready()
			appendEv("A", "one")
			appendEv("B", "two")
			last := check(a, "one", "two")
			a.close()
			if !keep {
				time.Sleep(100 * time.Millisecond) // the reader stops with the last client
			}
			appendEv("A", "three")
			appendEv("B", "four")
			appendEv("A", "five")
			b := openStream(t, url, "Last-Event-ID", strconv.FormatInt(last, 10))
			if id := b.ready(); id != last {
				t.Errorf("resumed stream ready with id %d, want %d", id, last)
			}
			check(b, "three", "four", "five")
			appendEv("B", "six")
			check(b, "six")
			b.none(100 * time.Millisecond)
			// One lock only, resumed from the same point.
			c := openStream(t, url+"?lockName=A", "Last-Event-ID", strconv.FormatInt(last, 10))
			c.ready()
			check(c, "three", "five")
			c.none(100 * time.Millisecond)
			if keeper != nil {
				check(keeper, "one", "two", "three", "four", "five", "six")
			}
		})
	}
	// From the start of the history.
	z := openStream(t, url, "Last-Event-ID", "0")
	z.ready()
	check(z, "old 0", "old 1", "old 2", "old 3", "old 4", "one", "two", "three", "four", "five", "six")
}

// TestStreamSlowClient: a client that stops reading while the history
// grows fast is dropped once its buffer is full; meanwhile a client that
// reads gets every entry promptly and an executor on the same store keeps
// its mastership with renewals as fast as before.
func TestStreamSlowClient(t *testing.T) {
	ms := memstore.New(memstore.WithHistoryLimit(100000))
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))
	h, err := controlapi.New(ms, controlapi.WithLogger(log), controlapi.WithStreamBuffer(4096), controlapi.WithMaxStreams(2))
	if err != nil {
		t.Fatal(err)
	}
	srv := streamServer(t, h)
	url := srv.URL + "/api/mastercontrols/events"

	// An executor with short timings on the same store.
	renewals := &renewalLog{}
	e, err := masterjob.New(ms.Reopen(),
		masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInstanceID("exec"), masterjob.WithInitDelay(0),
		masterjob.WithHeartbeatInterval(50*time.Millisecond), masterjob.WithTolerance(400*time.Millisecond),
		masterjob.WithCheckMasterInterval(200*time.Millisecond), masterjob.WithLogger(quiet()), masterjob.WithObserver(renewals))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartMaster("JOB", masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error { <-ctx.Done(); return nil })); err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	runs.Go(func() { _ = e.Run(runCtx) })
	defer func() { stopRun(); runs.Wait() }()
	waitUntil(t, "the executor to be master", func() bool { return len(e.Masters()) == 1 })
	time.Sleep(200 * time.Millisecond)
	before := renewals.max()

	// The slow client: a raw connection with a small receive buffer that
	// sends the request and never reads.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /api/mastercontrols/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
	fast := openStream(t, url)
	fast.ready()

	// The flood: 16,000 entries of 1 KiB, in batches of 500, each
	// appended once the reading client has the one before (a client that
	// keeps up).
	const n, batch = 16000, 500
	reason := strings.Repeat("x", 1024)
	t0 := time.Now()
	var got int
	var lastAt time.Time
	var slowest time.Duration
	for i := 0; i < n; i += batch {
		evs := make([]store.Event, batch)
		for j := range evs {
			evs[j] = store.Event{Lock: "FLOOD", Kind: store.EventAcquired, Instance: "flood", Token: int64(i + j + 1), Reason: reason}
		}
		appendedAt := time.Now()
		if err := ms.AppendEvents(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
		for got < i+batch {
			ev := fast.next(10 * time.Second)
			if ev.Event == "member" {
				continue
			}
			if ev.Event != "" {
				t.Fatalf("the reading client got %+v after %d entries", ev, got)
			}
			e := entryOf(t, ev)
			got++
			if e.Token != int64(got) {
				t.Fatalf("entry %d has token %d: out of order or missing", got, e.Token)
			}
			lastAt = ev.At
		}
		slowest = max(slowest, lastAt.Sub(appendedAt))
	}
	t.Logf("%d entries of 1 KiB in %v; the reading client had each batch of %d at most %v after its append", n, lastAt.Sub(t0), batch, slowest)
	if slowest > time.Second {
		t.Errorf("a batch reached the reading client %v after its append", slowest)
	}

	// The slow client was dropped: its stream's slot is free (the limit is
	// two streams), and the log says so. (Its connection is closed, but
	// the kernel still holds what the server had written, which reaches a
	// client that does not read only slowly: not a thing to wait for.)
	// Freed at once, not after the 10s write deadline of a blocked write.
	freed := time.Now()
	for {
		c, status, _ := tryStream(t, url)
		if c != nil {
			c.close()
		}
		if status == http.StatusOK {
			break
		}
		if time.Since(freed) > 3*time.Second {
			t.Fatal("the slow client's stream still holds its slot 3s after the flood")
		}
		time.Sleep(10 * time.Millisecond)
	}
	logMu.Lock()
	dropped := strings.Contains(logs.String(), "event stream dropped")
	logMu.Unlock()
	if !dropped {
		t.Error("no log of the dropped stream")
	}
	if len(e.Masters()) != 1 || renewals.failures() > 0 {
		t.Errorf("the executor lost its mastership or failed renewals during the flood: masters %v, failures %d", e.Masters(), renewals.failures())
	}
	during := renewals.max()
	t.Logf("longest renewal: %v before the flood, %v overall", before, during)
	if during > 100*time.Millisecond {
		t.Errorf("a renewal took %v during the flood", during)
	}
	// The reading client is still served.
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "AFTER", Kind: store.EventDisabled}}); err != nil {
		t.Fatal(err)
	}
	if e := entryOf(t, fast.nextOf("", 2*time.Second)); e.LockName != "AFTER" {
		t.Errorf("after the flood: %+v", e)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// renewalLog records how long renewals take.
type renewalLog struct {
	masterjob.NopObserver
	mu      sync.Mutex
	longest time.Duration
	failed  int
}

func (r *renewalLog) Renewal(took time.Duration, _ int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.longest = max(r.longest, took)
	if err != nil {
		r.failed++
	}
}

func (r *renewalLog) max() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.longest
}

func (r *renewalLog) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// TestStreamOutlivesServerTimeouts: a server with short read and write
// timeouts keeps a stream open past them: the stream sets its own
// deadlines, and heartbeats keep it busy.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	ms := memstore.New()
	srv := httptest.NewUnstartedServer(newHandler(t, ms, controlapi.WithHeartbeat(50*time.Millisecond)))
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close) // after the stream's cleanup
	s := openStream(t, srv.URL+"/api/mastercontrols/events")
	s.ready()
	time.Sleep(800 * time.Millisecond)
	if err := ms.AppendEvents(context.Background(), []store.Event{{Lock: "JOB", Kind: store.EventDisabled}}); err != nil {
		t.Fatal(err)
	}
	if e := entryOf(t, s.next(2*time.Second)); e.LockName != "JOB" {
		t.Errorf("got %+v", e)
	}
	if len(s.pings) < 5 {
		t.Errorf("%d heartbeats in 800ms at one per 50ms", len(s.pings))
	}
	select {
	case <-s.done:
		t.Fatalf("the stream ended: %v", s.err)
	default:
	}
}

// TestStreamEndsAtShutdown: http.Server.Shutdown does not wait for open
// streams: they end when it begins.
func TestStreamEndsAtShutdown(t *testing.T) {
	ms := memstore.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: newHandler(t, ms)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	s := openStream(t, "http://"+ln.Addr().String()+"/api/mastercontrols/events")
	s.ready()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := hs.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %v", err, time.Since(t0))
	}
	if took := time.Since(t0); took > time.Second {
		t.Errorf("Shutdown took %v with a stream open", took)
	}
	<-served
	select {
	case <-s.done:
	case <-time.After(2 * time.Second):
		t.Error("the client's stream is still open")
	}
}

// TestStreamRefusals: the token rule of reads, the bound on open streams,
// a bad Last-Event-ID, a store with nothing to stream.
func TestStreamRefusals(t *testing.T) {
	ms := memstore.New()
	srv := streamServer(t, newHandler(t, ms, controlapi.WithToken("tok"), controlapi.WithTokenForReads(), controlapi.WithMaxStreams(1)))
	url := srv.URL + "/api/mastercontrols/events"
	if _, status, _ := tryStream(t, url); status != http.StatusUnauthorized {
		t.Errorf("without the token: %d", status)
	}
	s := openStream(t, url, "Authorization", "Bearer tok")
	s.ready()
	if _, status, body := tryStream(t, url, "Authorization", "Bearer tok"); status != http.StatusServiceUnavailable {
		t.Errorf("a second stream with a limit of one: %d %s", status, body)
	}
	s.close()
	waitUntil(t, "the slot to free", func() bool {
		c, status, _ := tryStream(t, url, "Authorization", "Bearer tok")
		if c != nil {
			c.close()
		}
		return status == http.StatusOK
	})
	if _, status, _ := tryStream(t, url, "Authorization", "Bearer tok", "Last-Event-ID", "x"); status != http.StatusBadRequest {
		t.Errorf("bad Last-Event-ID: %d", status)
	}
	if _, status, _ := tryStream(t, url+"?lockName=", "Authorization", "Bearer tok"); status != http.StatusBadRequest {
		t.Errorf("bad lockName: %d", status)
	}
	plain := streamServer(t, newHandler(t, withoutPush{ms}))
	if _, status, _ := tryStream(t, plain.URL+"/api/mastercontrols/events"); status != http.StatusNotImplemented {
		t.Errorf("a store with neither history nor members: %d", status)
	}
}
