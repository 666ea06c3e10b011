//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
)

// Modes of the round-trip scenario.
const (
	ModeHeld     = "held"     // the measured instance holds every lock
	ModeFollowed = "followed" // another instance holds them; the measured one follows
)

// RoundTripResult is the store traffic of one instance over a window.
type RoundTripResult struct {
	Store  string        `json:"store"`
	Mode   string        `json:"mode"`
	Locks  int           `json:"locks"`
	Timing string        `json:"timing"`
	Window time.Duration `json:"window"`
	// RoundTrips counts the instance's round trips in the window: on
	// PostgreSQL, the Syncs and simple Queries its connections sent (counted
	// by CountingProxy, the LISTEN connection included); on SQLite, its
	// store calls; on etcd, the requests the server counted (its /metrics:
	// unary calls, keepalives, watches), less, in followed mode, the
	// holder's, measured alone just before.
	RoundTrips int64 `json:"roundTrips"`
	// Calls counts the instance's store calls (both backends).
	Calls Calls `json:"calls"`
	// Messages counts the client protocol messages by type (PostgreSQL), or
	// the requests by gRPC method (etcd).
	Messages map[string]int64 `json:"messages,omitempty"`
	BytesIn  int64            `json:"bytesIn,omitempty"`
	BytesOut int64            `json:"bytesOut,omitempty"`
	// Renew and Check are the latencies of the successful batched calls in
	// the window.
	Renew Summary `json:"renew"`
	Check Summary `json:"check"`
	// Failures counts the renewals and checks that failed in the window,
	// and FirstError is the first failure's message.
	Failures   int    `json:"failures"`
	FirstError string `json:"firstError,omitempty"`
	// Ended counts the masterships that ended in the window (demoted or
	// lost), with the first one's reason; Held is how many locks the
	// instance held at the end.
	Ended       int    `json:"ended"`
	EndedReason string `json:"endedReason,omitempty"`
	Held        int    `json:"held"`
	// Host is how busy the machine was during the window.
	Host HostLoad `json:"host"`
}

// PerSecond is RoundTrips per second.
func (r RoundTripResult) PerSecond() float64 { return float64(r.RoundTrips) / r.Window.Seconds() }

// latencies records batched call latencies reported by the executor.
type latencies struct {
	masterjob.NopObserver
	mu       sync.Mutex
	on       bool
	renews   []time.Duration
	checks   []time.Duration
	nChecks  int
	errs     int
	firstErr string
	ended    int
	reason   string
}

func (l *latencies) Transition(t masterjob.Transition) {
	if t.Kind != masterjob.Demoted && t.Kind != masterjob.Lost {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.on {
		l.ended++
		if l.reason == "" {
			l.reason = fmt.Sprintf("%s: %v", t.Kind, t.Reason)
		}
	}
}

func (l *latencies) failed(err error) {
	if l.on {
		l.errs++
		if l.firstErr == "" {
			l.firstErr = err.Error()
		}
	}
}

func (l *latencies) Renewal(took time.Duration, _ int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed(err)
		return
	}
	if l.on {
		l.renews = append(l.renews, took)
	}
}

func (l *latencies) Check(took time.Duration, _ int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed(err)
		return
	}
	l.nChecks++
	if l.on {
		l.checks = append(l.checks, took)
	}
}

func (l *latencies) set(on bool) {
	l.mu.Lock()
	l.on = on
	l.mu.Unlock()
}

func (l *latencies) checksDone() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nChecks
}

// instance is one library executor running in this process.
type instance struct {
	ex     *masterjob.Executor
	st     store.Store
	cancel context.CancelFunc
	done   chan error
}

func startInstance(st store.Store, timing Timing, locks []string, obs masterjob.Observer) (*instance, error) {
	opts := []masterjob.Option{
		masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInitDelay(timing.InitDelay),
		masterjob.WithHeartbeatInterval(timing.Heartbeat),
		masterjob.WithTolerance(timing.Tolerance),
		masterjob.WithCheckMasterInterval(timing.Check),
		masterjob.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	if obs != nil {
		opts = append(opts, masterjob.WithObserver(obs))
	}
	ex, err := masterjob.New(st, opts...)
	if err != nil {
		return nil, err
	}
	job := masterjob.JobFunc(func(ctx context.Context, _ masterjob.Lease) error {
		<-ctx.Done()
		return nil
	})
	for _, l := range locks {
		if err := ex.StartMaster(l, job); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{ex: ex, st: st, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- ex.Run(ctx) }()
	return in, nil
}

func (in *instance) stop() error {
	in.cancel()
	err := <-in.done
	_ = in.st.Close()
	return err
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) || ctx.Err() != nil {
			return false
		}
		sleep(ctx, 20*time.Millisecond)
	}
	return true
}

// RoundTrips measures the store traffic of one instance that holds (mode
// ModeHeld) or follows (ModeFollowed) n locks, over window, with timing.
func (e *Env) RoundTrips(ctx context.Context, mode string, n int, timing Timing, window time.Duration) (*RoundTripResult, error) {
	f, err := e.Backend.Fresh(fmt.Sprintf("rt-%s-%d", mode, n))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := f.Drop(); err != nil {
			e.logf("warning: %v", err)
		}
	}()
	locks := make([]string, n)
	for i := range locks {
		locks[i] = fmt.Sprintf("BENCH-%05d", i)
	}
	res := &RoundTripResult{Store: e.Backend.Kind, Mode: mode, Locks: n, Timing: timing.String(), Window: window}

	// The holder, for ModeFollowed: direct, not counted.
	var holder *instance
	if mode == ModeFollowed {
		st, err := f.Open(ctx, "")
		if err != nil {
			return nil, err
		}
		if holder, err = startInstance(st, timing, locks, nil); err != nil {
			_ = st.Close()
			return nil, err
		}
		defer holder.stop()
		if !waitFor(ctx, 2*time.Minute, func() bool { return len(holder.ex.Masters()) == n }) {
			return nil, fmt.Errorf("round trips: the holder did not take %d locks", n)
		}
	}

	// On etcd the server's own counters count the requests: in followed
	// mode, the holder's, measured alone first, are taken off.
	var holderRate map[string]float64
	if e.Backend.Kind == Etcd && holder != nil {
		sleep(ctx, timing.Heartbeat)
		r0, err := etcdRequests(ctx, e.Backend.dir)
		if err != nil {
			return nil, err
		}
		sleep(ctx, window/2)
		r1, err := etcdRequests(ctx, e.Backend.dir)
		if err != nil {
			return nil, err
		}
		holderRate = map[string]float64{}
		for k, v := range r1 {
			holderRate[k] = (v - r0[k]) / (window / 2).Seconds()
		}
	}

	// The measured instance.
	var proxy *CountingProxy
	dsn := ""
	if e.Backend.Kind == Postgres {
		u, err := url.Parse(e.Backend.DSN())
		if err != nil {
			return nil, err
		}
		host := u.Host
		if u.Port() == "" {
			host += ":5432"
		}
		if proxy, err = NewCountingProxy(host); err != nil {
			return nil, err
		}
		defer proxy.Close()
		u.Host = proxy.Addr()
		dsn = u.String()
	}
	raw, err := f.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	counter, st := NewCountingStore(raw)
	obs := &latencies{}
	in, err := startInstance(st, timing, locks, obs)
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	defer in.stop()
	switch mode {
	case ModeHeld:
		if !waitFor(ctx, 2*time.Minute, func() bool { return len(in.ex.Masters()) == n }) {
			return nil, fmt.Errorf("round trips: the instance did not take %d locks", n)
		}
	default:
		if !waitFor(ctx, time.Minute, func() bool { return obs.checksDone() > 0 }) {
			return nil, fmt.Errorf("round trips: no check within a minute")
		}
		if got := len(in.ex.Masters()); got != 0 {
			return nil, fmt.Errorf("round trips: the follower took %d of the held locks", got)
		}
	}
	// Let the start-up traffic (the first acquisition, LISTEN) pass.
	sleep(ctx, timing.Heartbeat)

	var p0 Counts
	if proxy != nil {
		p0 = proxy.Counts()
	}
	var e0 map[string]float64
	if e.Backend.Kind == Etcd {
		if e0, err = etcdRequests(ctx, e.Backend.dir); err != nil {
			return nil, err
		}
	}
	c0 := counter.Calls()
	host := markHost()
	obs.set(true)
	e.logf("  %s round trips, %s %d locks: measuring for %v", e.Backend.Kind, mode, n, window)
	sleep(ctx, window)
	obs.set(false)
	res.Host = host.since()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.Calls = counter.Calls().Sub(c0)
	res.RoundTrips = res.Calls.Total()
	if proxy != nil {
		d := proxy.Counts().Sub(p0)
		res.RoundTrips = d.RoundTrips()
		res.Messages = map[string]int64{}
		for k, v := range d.Messages {
			res.Messages[string(rune(k))] = v
		}
		res.BytesIn, res.BytesOut = d.BytesIn, d.BytesOut
	}
	if e0 != nil {
		e1, err := etcdRequests(ctx, e.Backend.dir)
		if err != nil {
			return nil, err
		}
		res.Messages = map[string]int64{}
		var total float64
		for k, v := range e1 {
			d := v - e0[k] - holderRate[k]*window.Seconds()
			if n := int64(d + 0.5); n > 0 {
				res.Messages[k] = n
				total += d
			}
		}
		res.RoundTrips = int64(total + 0.5)
	}
	obs.mu.Lock()
	res.Renew = Summarize(obs.renews)
	res.Check = Summarize(obs.checks)
	res.Failures, res.FirstError = obs.errs, obs.firstErr
	res.Ended, res.EndedReason = obs.ended, obs.reason
	obs.mu.Unlock()
	res.Held = len(in.ex.Masters())
	return res, nil
}
