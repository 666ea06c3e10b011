//go:build linux

package chaos

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/masterjob/masterjob/cli"
	"github.com/masterjob/masterjob/internal/racereport"
	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store"
)

// EnvInstance marks a process started by the driver as an instance; a test
// binary's TestMain uses it to run the instance instead of the tests.
const EnvInstance = "MASTERJOB_CHAOS_INSTANCE"

// envRun tags every instance process with its run, so that the driver can
// find any that survived (leaked) at the end.
const envRun = "MASTERJOB_CHAOS_RUN"

// envSlot tags every process of one instance generation ("<slot>.<gen>"),
// including the children and grandchildren of a runner, so that the driver
// can find those that outlive it.
const envSlot = "MASTERJOB_CHAOS_SLOT"

// driver runs one chaos run.
type driver struct {
	cfg   Config
	spec  storeSpec
	runID string
	ns    string
	dir   string

	ln   net.Listener
	sink *Sink
	st   store.Store // the driver's own handle: controls and final checks
	pg   *pgx.Conn   // PostgreSQL: for pg_terminate_backend and store-side losses; guarded by storeMu
	// storeMu serializes the driver's store-side faults: a store-side
	// loss, PostgreSQL's pg_terminate_backend (on pg) and an engine's
	// store-restart. A restart of the whole server under a loss's call
	// ends it with the server's EOF, and whether the loss was applied is
	// then unknown (once in 1,000 faults on etcd, a harness-error).
	storeMu sync.Mutex
	logMu   sync.Mutex // serializes the lines written to cfg.Log
	lossDB  *sql.DB    // SQLite: the driver's own connection, for store-side losses
	proxies []*Proxy
	slots   []*slot
	readers sync.WaitGroup // the goroutines reading instance connections
	// children counts the runner children's connections (runner mode).
	children sync.WaitGroup
	// bg counts the driver's own checks still running (orphan scans).
	bg sync.WaitGroup

	mu   sync.Mutex // guards the fields below
	tl   Timeline
	open map[mkey]*Mastership
	// failing is when each process's store calls began failing, for a
	// period not yet closed (msgFailing): a process killed before a call
	// succeeded again never sends its msgUnreachable, and its period ends
	// at its death.
	failing  map[pkey]int64
	events   *json.Encoder
	eventsF  *os.File
	faults   []FaultRecord
	stopping bool // the run is shutting instances down: exits are expected
}

// pkey identifies an instance's process: its slot and generation.
type pkey struct{ index, gen int }

// mkey identifies a mastership: one token of one lock in one process.
type mkey struct {
	index, gen int
	lock       string
	token      int64
}

// slot is one instance position; a killed instance is restarted in the
// same slot with the next generation.
type slot struct {
	index int

	mu         sync.Mutex // guards the fields below
	gen        int
	pid        int
	conn       net.Conn
	enc        *json.Encoder
	ready      chan struct{}          // closed by the current generation's hello
	exited     chan struct{}          // closed when the current generation was reaped
	connDone   chan struct{}          // closed when the driver read the current generation's last message
	expected   bool                   // its exit was asked for (SIGKILL, SIGTERM or shutdown)
	terminated bool                   // it was sent SIGTERM: it must exit cleanly
	killedAt   int64                  // Mono of a SIGKILL in progress; 0 otherwise
	seq        int64                  // last control message number
	acks       map[int64]chan Message // control messages waiting for their ack
}

// FaultRecord is one injected fault, as logged.
type FaultRecord struct {
	N      int    `json:"n"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	Detail string `json:"detail,omitempty"`
	Err    string `json:"err,omitempty"`
	// Variant says what a combo did ("disable+store-loss", ...), or which
	// variant of its kind the fault was (variantKillSuccessor).
	Variant string `json:"variant,omitempty"`
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// logf writes a progress line. Faults run in goroutines of their own, and
// cfg.Log need not be safe for concurrent use (the tests' is a buffer).
func (d *driver) logf(format string, args ...any) {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	fmt.Fprintf(d.cfg.Log, "chaos %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// record appends an entry to the run's event log (events.jsonl).
func (d *driver) record(kind string, v any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.events != nil {
		_ = d.events.Encode(map[string]any{"t": Mono(), "kind": kind, "v": v})
	}
}

func (d *driver) problem(kind, lock, format string, args ...any) {
	v := Violation{Kind: kind, Lock: lock, At: Mono(), Detail: fmt.Sprintf(format, args...)}
	d.mu.Lock()
	d.tl.Problems = append(d.tl.Problems, v)
	d.mu.Unlock()
	d.record("violation", v)
	d.logf("VIOLATION %s %s", kind, v.Detail)
}

func (d *driver) down(w Window) {
	d.mu.Lock()
	d.tl.Down = append(d.tl.Down, w)
	d.mu.Unlock()
	d.record("down", w)
}

// setup creates the work directory, the socket, the sink, the driver's
// store handle and, for PostgreSQL, one proxy per instance.
func (d *driver) setup(ctx context.Context) error {
	var err error
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "masterjob-chaos-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	if d.eventsF, err = os.Create(filepath.Join(d.dir, "events.jsonl")); err != nil {
		return err
	}
	d.events = json.NewEncoder(d.eventsF)
	// Unix socket paths are short (108 bytes): keep the socket in /tmp.
	sock := filepath.Join(os.TempDir(), "mjchaos-"+d.runID+".sock")
	if d.ln, err = net.Listen("unix", sock); err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if d.st, err = openStore(octx, d.spec, d.ns, ""); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	if d.spec.kind == kindSQLite {
		if d.lossDB, err = openLossDB(d.spec.path); err != nil {
			return fmt.Errorf("open a second connection to %s: %w", d.spec.path, err)
		}
	}
	if d.spec.kind == kindPostgres {
		if d.pg, err = pgx.Connect(octx, d.spec.dsn); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	if d.spec.proxied() {
		for range d.cfg.Instances {
			p, err := NewProxy(d.spec.upstream())
			if err != nil {
				return err
			}
			d.proxies = append(d.proxies, p)
		}
	}
	for i := range d.cfg.Instances {
		d.slots = append(d.slots, &slot{index: i})
	}
	go d.accept()
	return nil
}

// cleanup releases everything setup made, kills any instance left and
// drops the run's tables or schema.
func (d *driver) cleanup(removeDir bool) {
	for _, s := range d.slots {
		s.mu.Lock()
		pid, exited := s.pid, s.exited
		s.expected = true
		s.mu.Unlock()
		if exited == nil {
			continue
		}
		select {
		case <-exited:
		default:
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
	}
	if d.ln != nil {
		_ = d.ln.Close()
		_ = os.Remove(d.ln.Addr().String())
	}
	for _, s := range d.slots {
		s.mu.Lock()
		if s.conn != nil {
			_ = s.conn.Close()
		}
		s.mu.Unlock()
	}
	d.readers.Wait()
	for _, p := range d.proxies {
		_ = p.Close()
	}
	if d.st != nil {
		_ = d.st.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if d.pg != nil {
		_ = d.pg.Close(ctx)
	}
	if d.lossDB != nil {
		_ = d.lossDB.Close()
	}
	if err := dropNamespace(ctx, d.spec, d.ns); err != nil {
		d.logf("could not drop %s: %v", d.ns, err)
	}
	if d.eventsF != nil {
		d.mu.Lock()
		_ = d.eventsF.Close()
		d.events = nil
		d.mu.Unlock()
	}
	if removeDir && d.dir != "" {
		_ = os.RemoveAll(d.dir)
	}
}

// accept serves instance connections.
func (d *driver) accept() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.readers.Add(1)
		go d.serve(c)
	}
}

// serve reads one instance's messages, or (runner mode) one child's.
func (d *driver) serve(c net.Conn) {
	defer d.readers.Done()
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var s *slot
	gen, child := 0, false
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			d.problem(VHarness, "", "bad message from an instance: %v", err)
			continue
		}
		if s == nil {
			if (m.Type != msgHello && m.Type != msgChild) || m.Index < 0 || m.Index >= len(d.slots) {
				d.problem(VHarness, "", "first message from an instance was %q", m.Type)
				return
			}
			s, gen = d.slots[m.Index], m.Gen
			if m.Type == msgChild {
				// A runner's child: its masterships end with its stop, or
				// with this connection, which the kernel closes when the
				// process dies.
				child = true
				d.children.Add(1)
				defer d.children.Done()
				defer d.childEnded(s.index, gen, m.Lock, m.Token, m.PID)
				d.record("child", m)
				continue
			}
			s.mu.Lock()
			if s.gen != gen {
				s.mu.Unlock()
				d.problem(VHarness, "", "hello from instance %d gen %d, expected gen %d", m.Index, m.Gen, s.gen)
				return
			}
			s.conn, s.enc = c, json.NewEncoder(c)
			close(s.ready)
			defer close(s.connDone)
			s.mu.Unlock()
			// A runner's id comes later, from its log (msgIdentity).
			d.mu.Lock()
			d.tl.Lives = append(d.tl.Lives, Life{ID: m.ID, Index: s.index, Gen: gen, Hello: m.T})
			d.mu.Unlock()
			d.record("ready", m)
			continue
		}
		d.onMessage(s, gen, child, m)
	}
}

// childEnded ends the mastership of a runner's child when its connection
// closes: the child is dead (it exited after its stop, the runner killed
// it, or it died with the runner).
func (d *driver) childEnded(index, gen int, lock string, token int64, pid int) {
	now := Mono()
	d.mu.Lock()
	defer d.mu.Unlock()
	k := mkey{index, gen, lock, token}
	if ms := d.open[k]; ms != nil {
		ms.Stop = now
		if ms.How == "" {
			ms.How, ms.Reason = "died", "killed"
		}
		d.tl.Masterships = append(d.tl.Masterships, *ms)
		delete(d.open, k)
	}
	if d.events != nil {
		_ = d.events.Encode(map[string]any{"t": now, "kind": "child-ended", "v": map[string]any{"idx": index, "gen": gen, "lock": lock, "token": token, "pid": pid}})
	}
}

// runningLocks returns the locks with a job running now.
func (d *driver) runningLocks() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]bool{}
	for k := range d.open {
		out[k.lock] = true
	}
	return out
}

// stoppedAt returns when the job of mastership k stopped, or at if it is
// not known. The executor reports Released once its release returned, but
// chooses the successor when the job stopped: that is when a reservation
// is decided. It must be called with d.mu held.
func (d *driver) stoppedAt(k mkey, at int64) int64 {
	for i := len(d.tl.Masterships) - 1; i >= 0; i-- {
		ms := &d.tl.Masterships[i]
		if ms.Index == k.index && ms.Gen == k.gen && ms.Lock == k.lock && ms.Token == k.token {
			if ms.Stop > 0 && ms.Stop < at {
				return ms.Stop
			}
			break
		}
	}
	return at
}

// runningMasterships returns the masterships whose job runs and has not
// been told to stop.
func (d *driver) runningMasterships() []Mastership {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Mastership
	for _, ms := range d.open {
		if ms.Cancelled == 0 {
			out = append(out, *ms)
		}
	}
	slices.SortFunc(out, func(a, b Mastership) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

func (d *driver) onMessage(s *slot, gen int, child bool, m Message) {
	switch m.Type {
	case msgWrite:
		if !d.sink.Write(m.Lock, m.Token, s.index, gen, m.T) {
			m.Index, m.Gen = s.index, gen
			d.record("sink-rejected", m)
		}
		return // the sink keeps its own log (sink.jsonl)
	case msgStart:
		d.mu.Lock()
		d.open[mkey{s.index, gen, m.Lock, m.Token}] = &Mastership{Index: s.index, Gen: gen, Lock: m.Lock, Token: m.Token, Start: m.T,
			Plan: m.Plan, Policy: m.Policy, Child: child}
		d.mu.Unlock()
	case msgStopping:
		d.mu.Lock()
		if ms := d.open[mkey{s.index, gen, m.Lock, m.Token}]; ms != nil && ms.Cancelled == 0 {
			ms.Cancelled = m.T
		}
		d.mu.Unlock()
	case msgStop:
		d.mu.Lock()
		k := mkey{s.index, gen, m.Lock, m.Token}
		if ms := d.open[k]; ms != nil {
			ms.Reason, ms.How = m.Reason, m.How
			if !child { // a child's mastership ends when the process is dead (childEnded)
				ms.Stop = m.T
				d.tl.Masterships = append(d.tl.Masterships, *ms)
				delete(d.open, k)
			}
		}
		d.mu.Unlock()
	case msgTransition:
		if m.Kind == "acquired" {
			d.mu.Lock()
			d.tl.Acquisitions = append(d.tl.Acquisitions, Demotion{Index: s.index, Gen: gen, Lock: m.Lock, Token: m.Token,
				Kind: m.Kind, At: m.T})
			if m.PrevToken != 0 {
				d.tl.Takeovers = append(d.tl.Takeovers, Takeover{Lock: m.Lock, Token: m.Token, PrevHolder: m.PrevHolder,
					PrevToken: m.PrevToken, At: m.T})
			}
			d.mu.Unlock()
		}
		if m.Kind == "released" && m.Successor != "" {
			d.mu.Lock()
			d.tl.Reservations = append(d.tl.Reservations, Reservation{Index: s.index, Gen: gen, Lock: m.Lock, Token: m.Token,
				Successor: m.Successor, At: d.stoppedAt(mkey{s.index, gen, m.Lock, m.Token}, m.T)})
			d.mu.Unlock()
		}
		if m.Kind == "lost" || m.Kind == "demoted" {
			d.mu.Lock()
			d.tl.Demotions = append(d.tl.Demotions, Demotion{Index: s.index, Gen: gen, Lock: m.Lock, Token: m.Token,
				Kind: m.Kind, Reason: m.Reason, At: m.T})
			d.mu.Unlock()
		}
	case msgRunnerStop:
		d.mu.Lock()
		d.tl.RunnerStops = append(d.tl.RunnerStops, RunnerStop{Index: s.index, Gen: gen, Lock: m.Lock, T: m.T})
		d.mu.Unlock()
		m.Index, m.Gen = s.index, gen
		d.record("runner-stop", m)
		return
	case msgCheck:
		d.mu.Lock()
		d.tl.life(s.index, gen, func(l *Life) { l.LastCheck = m.T })
		d.mu.Unlock()
		return // too many for the event log
	case msgRenewal:
		d.mu.Lock()
		d.tl.Renewals = append(d.tl.Renewals, Renewal{Index: s.index, Gen: gen, Began: m.T - m.Latency, Ended: m.T, OK: m.Err == ""})
		d.mu.Unlock()
		return // too many for the event log
	case msgAck:
		s.mu.Lock()
		ch := s.acks[m.Seq]
		delete(s.acks, m.Seq)
		s.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	case msgFailing:
		d.mu.Lock()
		if d.failing == nil {
			d.failing = map[pkey]int64{}
		}
		d.failing[pkey{s.index, gen}] = m.From
		d.mu.Unlock()
	case msgUnreachable:
		d.mu.Lock()
		delete(d.failing, pkey{s.index, gen})
		d.tl.Unreachable = append(d.tl.Unreachable, Window{Index: s.index, From: m.From, To: m.T, Cause: "store-calls-failed"})
		d.mu.Unlock()
	case msgResumed:
		d.mu.Lock()
		d.tl.Resumed = append(d.tl.Resumed, Window{Index: s.index, From: m.From, To: m.T, Cause: "resumed"})
		d.mu.Unlock()
	case msgIdentity:
		d.mu.Lock()
		d.tl.life(s.index, gen, func(l *Life) { l.ID = m.ID })
		d.mu.Unlock()
	case msgBye:
		if m.Err != "" {
			d.problem(VCrash, "", "instance %d gen %d: Run returned %s", s.index, gen, m.Err)
		}
		d.mu.Lock()
		d.tl.life(s.index, gen, func(l *Life) { l.Bye = m.T })
		d.mu.Unlock()
	}
	m.Index, m.Gen = s.index, gen
	d.record(m.Type, m)
}

// control sends a control message to slot s and waits for its ack (the
// instance's Mono when it took effect).
func (d *driver) control(s *slot, m Message) (Message, error) {
	s.mu.Lock()
	if s.enc == nil {
		s.mu.Unlock()
		return Message{}, errors.New("instance not connected")
	}
	connDone := s.connDone
	s.seq++
	m.Seq = s.seq
	ch := make(chan Message, 1)
	s.acks[m.Seq] = ch
	err := s.enc.Encode(m)
	s.mu.Unlock()
	if err != nil {
		select {
		case <-connDone: // it exited (and the driver closed its end)
			return Message{}, fmt.Errorf("instance %d: %s: %w", s.index, m.Type, errExited)
		default:
		}
		return Message{}, err
	}
	acked := func(a Message) (Message, error) {
		if a.Err != "" {
			return a, errors.New(a.Err)
		}
		return a, nil
	}
	select {
	case a := <-ch:
		return acked(a)
	case <-connDone:
		select {
		case a := <-ch: // the ack came before the connection closed
			return acked(a)
		default:
		}
		return Message{}, fmt.Errorf("instance %d: %s: %w", s.index, m.Type, errExited)
	case <-time.After(10 * time.Second):
		return Message{}, fmt.Errorf("instance %d: no ack for %s", s.index, m.Type)
	}
}

// endFailing ends at the death of process (index, gen) a period of
// failing store calls it began and never closed: it was unreachable until
// then. The caller holds d.mu.
func (d *driver) endFailing(index, gen int, died int64) {
	if from, ok := d.failing[pkey{index, gen}]; ok {
		delete(d.failing, pkey{index, gen})
		d.tl.Unreachable = append(d.tl.Unreachable, Window{Index: index, From: from, To: died, Cause: "store-calls-failed"})
	}
}

// errExited: the instance exited before it acknowledged a control message.
var errExited = errors.New("instance exited")

// appName tags the PostgreSQL backends of slot i.
func (d *driver) appName(i int) string { return fmt.Sprintf("mjchaos-%s-i%d", d.runID, i) }

// start starts the next generation of slot s and returns once the process
// runs (not once it is ready). The process is started, and waited for, by
// a goroutine locked to its OS thread for the child's whole life, so that
// Pdeathsig (SIGKILL when the driver dies) fires only when the driver does.
func (d *driver) start(s *slot) error {
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.ready, s.exited, s.connDone = make(chan struct{}), make(chan struct{}), make(chan struct{})
	s.expected, s.terminated, s.conn, s.enc, s.acks = false, false, nil, nil, map[int64]chan Message{}
	exited := s.exited
	s.mu.Unlock()

	a := instanceArgs{
		sock: d.ln.Addr().String(), index: s.index, gen: gen, runID: d.runID,
		storeURL: d.cfg.StoreURL, locks: d.cfg.Locks, timing: d.cfg.Timing,
		slowStop: d.cfg.SlowStop, slowMax: d.cfg.SlowStopMax, seed: d.cfg.Seed,
		directChild: d.cfg.DirectChild,
	}
	switch {
	case d.spec.engine != nil:
		a.dsn = d.proxies[s.index].Addr()
	case d.spec.kind == kindPostgres:
		a.dsn = d.spec.viaProxy(d.proxies[s.index].Addr(), d.appName(s.index))
	}
	sub := "instance"
	if d.cfg.Runner {
		sub = "runner"
	}
	logPath := filepath.Join(d.dir, fmt.Sprintf("instance-%d-gen%d.log", s.index, gen))
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	argv := append(append(slices.Clone(d.cfg.Command[1:]), sub), a.argv()...)
	cmd := exec.Command(d.cfg.Command[0], argv...)
	cmd.Env = append(os.Environ(), EnvInstance+"=1", envRun+"="+d.runID, fmt.Sprintf("%s=%d.%d", envSlot, s.index, gen),
		// A race-enabled binary sleeps 1s at exit by default: a runner's
		// child would seem to outlive its stop by that much. Its reports
		// go where the run looks for them (checkRaceReports).
		"GORACE="+racereport.GORACE(d.raceLogPath(), "atexit_sleep_ms=0"))
	if d.cfg.Runner {
		cmd.Env = append(cmd.Env, envWills+"="+d.willsPath())
	}
	if os.Getenv(trace.EnvFile) == "" {
		// The loop's, the runner's and the supervisors' trace marks, of
		// every process on one clock (events.jsonl's): what a process
		// asked the store and when the answer came, which its log does
		// not say.
		cmd.Env = append(cmd.Env, trace.EnvFile+"="+d.tracePath())
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies after the child
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			close(exited)
			return
		}
		s.mu.Lock()
		s.pid = cmd.Process.Pid
		s.mu.Unlock()
		started <- nil
		werr := cmd.Wait()
		d.reaped(s, gen, werr, logPath)
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start instance %d: %w", s.index, err)
	}
	d.record("started", map[string]any{"idx": s.index, "gen": gen, "pid": cmd.Process.Pid})
	return nil
}

// reaped records the end of an instance process: the masterships it left
// open end now, and an exit nobody asked for is a crash.
func (d *driver) reaped(s *slot, gen int, werr error, logPath string) {
	now := Mono()
	s.mu.Lock()
	expected, terminated, killedAt, ready, connDone := s.expected, s.terminated, s.killedAt, s.ready, s.connDone
	s.mu.Unlock()
	// Read what the process sent before it died first: its stop messages
	// decide which masterships it ended itself.
	select {
	case <-ready:
		select {
		case <-connDone:
		case <-time.After(5 * time.Second):
			d.problem(VHarness, "", "instance %d gen %d: socket still open 5s after exit", s.index, gen)
		}
	default:
	}
	d.mu.Lock()
	stopping := d.stopping
	for k, ms := range d.open {
		if k.index != s.index || k.gen != gen || ms.Child {
			// A runner's child ends with its own connection: if it
			// outlives its runner, it is still running.
			continue
		}
		ms.Stop = now
		if killedAt > 0 {
			ms.Reason = "killed"
		} else {
			ms.Open = true
		}
		d.tl.Masterships = append(d.tl.Masterships, *ms)
		delete(d.open, k)
		if killedAt == 0 {
			d.tl.Problems = append(d.tl.Problems, Violation{Kind: VLeak, Lock: k.lock, At: now,
				Detail: fmt.Sprintf("instance %d gen %d exited with the job of token %d still running (no stop reported)", s.index, gen, k.token)})
		}
	}
	d.endFailing(s.index, gen, now)
	d.tl.life(s.index, gen, func(l *Life) { l.Gone, l.KilledAt = now, killedAt })
	d.mu.Unlock()
	d.record("exited", map[string]any{"idx": s.index, "gen": gen, "err": fmt.Sprint(werr), "expected": expected})
	if d.cfg.Runner {
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			d.checkOrphans(s.index, gen, now)
		}()
	}
	if killedAt > 0 {
		return
	}
	if !expected || ((stopping || terminated) && werr != nil) {
		d.problem(VCrash, "", "instance %d gen %d exited unexpectedly (%v); log %s: %s", s.index, gen, werr, logPath, tail(logPath, 800))
	}
}

// orphanGrace is how long the processes a runner started may outlive it:
// they must die with it (within 100 ms, issue 7 item 5), and a scan of
// /proc takes a few milliseconds on a busy host.
const orphanGrace = 500 * time.Millisecond

// checkOrphans looks, orphanGrace after runner index/gen died, for a
// process it started (the child, or what the child started) still alive:
// it would run beside the next master. Each is a violation, and is killed
// so that the run goes on cleanly.
//
// The runner's last will is no such process: its command's supervisor,
// which lives on as the will once the command is gone to release the
// lease. Its bound is the lease, counted from its own start: it may
// outlive the runner by the lease and twice orphanGrace (the command's
// kill before it, the program's start), and no more.
func (d *driver) checkOrphans(index, gen int, died int64) {
	time.Sleep(orphanGrace - dur(Mono()-died))
	tag := fmt.Sprintf("%d.%d", index, gen)
	var wills []proc
	for _, p := range findProcesses(envSlot, tag) {
		if isWill(p) {
			wills = append(wills, p)
			continue
		}
		d.problem(VOrphan, "", "process %d (%s) started by runner %d gen %d still alive %v after the runner died; killing it",
			p.pid, p.cmd, index, gen, dur(Mono()-died).Round(time.Millisecond))
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	if len(wills) == 0 {
		return
	}
	time.Sleep(d.cfg.Timing.Tolerance + 2*orphanGrace - dur(Mono()-died))
	for _, p := range findProcesses(envSlot, tag) {
		if isWill(p) {
			d.problem(VWillLingered, "", "last will %d of runner %d gen %d still running %v after the runner died; killing it",
				p.pid, index, gen, dur(Mono()-died).Round(time.Millisecond))
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
}

// willsPath is the file where runners' last wills record that they ran.
func (d *driver) willsPath() string { return filepath.Join(d.dir, "wills.jsonl") }

// raceLogPath is the prefix of the race detector's reports of the run's
// processes (GORACE's log_path: one file per process, named by its pid).
func (d *driver) raceLogPath() string { return filepath.Join(d.dir, "race-report") }

// checkRaceReports records a VRace for each report that a process of the
// run wrote (none unless the binary is built with -race).
func (d *driver) checkRaceReports() {
	for _, r := range racereport.Read(d.raceLogPath()) {
		d.problem(VRace, "", "the race detector reported in pid %s (%s): %s", r.PID, r.Path, r.Summary())
	}
}

// tracePath is the file the instances append their trace marks to
// (internal/trace): "<CLOCK_MONOTONIC ns> <pid> <event> <lock>" per line.
func (d *driver) tracePath() string { return filepath.Join(d.dir, "trace.log") }

// isWill reports whether p runs a runner's last will.
func isWill(p proc) bool {
	return strings.HasSuffix(p.cmd, " "+cli.LastWillArg)
}

// tail returns the end of a file, for reports.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-n)
	b := make([]byte, st.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}

// waitReady waits for slot s's current generation to say hello.
func (d *driver) waitReady(ctx context.Context, s *slot, timeout time.Duration) (int64, error) {
	s.mu.Lock()
	ready, exited := s.ready, s.exited
	s.mu.Unlock()
	select {
	case <-ready:
		return Mono(), nil
	case <-exited:
		return 0, fmt.Errorf("instance %d exited before it was ready", s.index)
	case <-time.After(timeout):
		return 0, fmt.Errorf("instance %d not ready after %v", s.index, timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// kill SIGKILLs slot s and waits until it is reaped.
func (d *driver) kill(s *slot) (int64, error) {
	s.mu.Lock()
	pid, exited := s.pid, s.exited
	s.expected = true
	s.killedAt = Mono()
	at := s.killedAt
	s.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return at, err
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		return at, fmt.Errorf("instance %d (pid %d) not reaped 10s after SIGKILL", s.index, pid)
	}
	s.mu.Lock()
	s.killedAt = 0
	s.mu.Unlock()
	return at, nil
}
