//go:build linux

package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/masterjob/masterjob/bench/internal/probe"
	"github.com/masterjob/masterjob/internal/sqlitelock"
	"github.com/masterjob/masterjob/store"
)

// Series is one measured quantity of a scenario.
type Series struct {
	Name    string          `json:"name"`
	Samples []time.Duration `json:"samples"`
	Summary Summary         `json:"summary"`
}

// Result is the outcome of one process scenario on one store.
type Result struct {
	Store    string        `json:"store"`
	Scenario string        `json:"scenario"`
	Timing   string        `json:"timing"`
	Lease    time.Duration `json:"lease"`
	Trials   int           `json:"trials"`
	Series   []Series      `json:"series"`
	Notes    []string      `json:"notes,omitempty"`
	// Wills counts the crash failovers whose killed runner's log shows
	// its last will's release (masterjob's crash failover only).
	Wills int `json:"wills,omitempty"`
	// Steps break a traced hand-off down (Env.Trace).
	Steps []StepSeries `json:"steps,omitempty"`
	// Host is how busy the machine was meanwhile.
	Host HostLoad `json:"host"`
}

func (r *Result) add(name string, samples []time.Duration) {
	r.Series = append(r.Series, Series{Name: name, Samples: samples, Summary: Summarize(samples)})
}

// Get returns the series called name, or nil.
func (r *Result) Get(name string) *Series {
	for i := range r.Series {
		if r.Series[i].Name == name {
			return &r.Series[i]
		}
	}
	return nil
}

// Env is what every scenario needs.
type Env struct {
	Bin     Binaries
	Backend *Backend
	// Dir holds the scenario's files (runner logs, SQLite databases).
	Dir string
	// Logf reports progress; nil is quiet.
	Logf func(format string, args ...any)
	// Trace makes the runners write trace marks ($MASTERJOB_TRACE), and
	// the handoff scenario break each hand-off down into its steps.
	Trace bool
}

func (e *Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

// session is a running cluster on a fresh store, with a library handle on
// the same store and the start of the current master's child.
type session struct {
	env    *Env
	c      *Cluster
	st     store.Store
	fresh  *Fresh
	timing Timing
	lock   string
	cur    Start
}

// startSession makes a fresh store and starts n runners on it; it returns
// once the first child runs and the other runners have had time for their
// first check.
func (e *Env) startSession(ctx context.Context, name string, timing Timing, n int) (*session, error) {
	f, err := e.Backend.Fresh(name)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.Dir, name+"-"+randomHex(3))
	lock := "BENCH-" + name
	bin := e.Bin
	if e.Backend.Kind == EtcdElection {
		// etcd's own election, started as masterjob's runners are.
		bin.Masterjob = bin.Election
	}
	c, err := NewCluster(bin, f.URL, lock, timing, dir)
	if err != nil {
		_ = f.Drop()
		return nil, err
	}
	if e.Trace {
		c.traceFile = filepath.Join(dir, "trace.log")
	}
	s := &session{env: e, c: c, fresh: f, timing: timing, lock: lock}
	fail := func(err error) (*session, error) {
		s.close()
		return nil, err
	}
	if _, err := c.StartRunner(); err != nil {
		return fail(err)
	}
	first, err := c.NextStart(timing.InitDelay + 30*time.Second)
	if err != nil {
		return fail(fmt.Errorf("%s: first master: %w (logs in %s)", name, err, dir))
	}
	s.setCur(first)
	for range n - 1 {
		if _, err := c.StartRunner(); err != nil {
			return fail(err)
		}
	}
	if s.st, err = f.Open(ctx, ""); err != nil {
		return fail(err)
	}
	sleep(ctx, timing.InitDelay+500*time.Millisecond)
	if extra := c.PendingStarts(); len(extra) > 0 {
		return fail(fmt.Errorf("%s: %d more children started beside the master (logs in %s)", name, len(extra), dir))
	}
	return s, ctx.Err()
}

func (s *session) close() {
	if err := s.c.Close(); err != nil {
		s.env.logf("warning: %v", err)
	}
	if s.st != nil {
		_ = s.st.Close()
	}
	if err := s.fresh.Drop(); err != nil {
		s.env.logf("warning: %v", err)
	}
}

// settle waits one heartbeat plus a random part of another, so that the
// next fault falls at a random phase of the master's heartbeat.
func (s *session) settle(ctx context.Context) {
	hb := s.timing.Heartbeat
	if hb <= 0 {
		hb = time.Second
	}
	sleep(ctx, hb+rand.N(hb))
}

// settledMaster waits for the cluster to settle and returns the master's
// runner, the target of the next trial's fault. A child that started
// meanwhile means that the mastership moved with no fault: that fails the
// scenario rather than timing the next trial from the wrong master.
func (s *session) settledMaster(ctx context.Context) (*Runner, error) {
	s.settle(ctx)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if moved := s.c.PendingStarts(); len(moved) > 0 {
		return nil, fmt.Errorf("child %d (token %d) started while the cluster settled after child %d (token %d): the mastership moved with no fault (logs in %s)",
			moved[0].Pid, moved[0].Token, s.cur.Pid, s.cur.Token, s.c.dir)
	}
	return s.master()
}

// master returns the runner of the current master's child.
func (s *session) master() (*Runner, error) {
	r := s.c.Runner(s.cur.PPid)
	if r == nil || r.Exited() {
		return nil, fmt.Errorf("the runner (pid %d) of the master's child %d is gone", s.cur.PPid, s.cur.Pid)
	}
	return r, nil
}

// takeOver waits for the next child and checks that it is a new mastership
// (a greater token) that started after the old child had exited, unless
// overlapOK (the old child was frozen by SIGSTOP: fencing is what protects
// that case). It returns the new start and the time the old child exited
// (see exitBefore).
func (s *session) takeOver(timeout time.Duration, overlapOK bool) (Start, time.Duration, error) {
	next, err := s.c.NextStart(timeout)
	if err != nil {
		return Start{}, 0, fmt.Errorf("%w (logs in %s)%s", err, s.c.dir, s.c.LogTails(30))
	}
	if overlapOK {
		return next, 0, nil
	}
	gone, err := s.cur.exit.Wait(5 * time.Second)
	if err != nil {
		return next, 0, fmt.Errorf("the old child %d still runs 5s after child %d started", s.cur.Pid, next.Pid)
	}
	if next.Token <= s.cur.Token {
		return next, gone, fmt.Errorf("new child has token %d, not above the old %d", next.Token, s.cur.Token)
	}
	gone, err = exitBefore(s.cur.Event, next.Event, gone)
	return next, gone, err
}

// exitBefore checks that the old child exited before the next one started,
// given the time its exit watch saw the exit (gone), and returns the exit
// time. The watch's goroutine may wake late on a busy host; the next child
// looked at the old one right after its first instruction, and found
// exited, the old one exited before that look (PrevMono, microseconds
// after the start), which then bounds its exit time.
func exitBefore(old, next probe.Event, gone time.Duration) (time.Duration, error) {
	if gone <= next.Mono {
		return gone, nil
	}
	if next.PrevPid != old.Pid || next.PrevAlive {
		return gone, fmt.Errorf("overlap: child %d (token %d) started %v before the old child %d (token %d) exited (seen running by the new child: %v)",
			next.Pid, next.Token, gone-next.Mono, old.Pid, old.Token, next.PrevPid == old.Pid && next.PrevAlive)
	}
	return min(gone, next.PrevMono), nil
}

// frozenInWrite reports whether, on SQLite, no child started within
// wait while the stopped runner m holds the database's write lock (which
// blocks every other instance's writes). A start seen meanwhile stays
// pending for takeOver.
func (s *session) frozenInWrite(m *Runner, wait time.Duration) bool {
	if s.env.Backend.Kind != SQLite {
		return false
	}
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if len(s.c.starts) > 0 {
			return false
		}
	}
	h, ok := sqlitelock.Writer(s.fresh.Path)
	return ok && h.PID == m.Pid && h.Frozen()
}

// advance makes next the current master's child.
func (s *session) advance(next Start) {
	s.cur.exit.Close()
	s.setCur(next)
}

// setCur makes st the master's child, and names it to the children that
// start next.
func (s *session) setCur(st Start) {
	s.cur = st
	if err := s.c.SetMaster(st.Pid); err != nil {
		// The next child then cannot vouch that this one had exited:
		// a late exit watch reads as an overlap (takeOver).
		fmt.Fprintf(os.Stderr, "bench: name the master's child %d: %v\n", st.Pid, err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
