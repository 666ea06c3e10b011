//go:build linux

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
)

// instanceArgs is what the driver passes to an instance process.
type instanceArgs struct {
	sock     string
	index    int
	gen      int
	runID    string
	storeURL string
	dsn      string // PostgreSQL: the DSN through the instance's proxy
	locks    int
	timing   Timing
	// slowStop is the fraction of jobs slow to stop, slowMax the longest
	// such stop; seed seeds each job's draw (with slot, generation, token).
	slowStop    float64
	slowMax     time.Duration
	seed        uint64
	directChild bool // runner mode: no sh -c around the child
}

func (a instanceArgs) argv() []string {
	return []string{
		"--sock", a.sock,
		"--index", strconv.Itoa(a.index),
		"--gen", strconv.Itoa(a.gen),
		"--run", a.runID,
		"--store", a.storeURL,
		"--dsn", a.dsn,
		"--locks", strconv.Itoa(a.locks),
		"--heartbeat", a.timing.Heartbeat.String(),
		"--tolerance", a.timing.Tolerance.String(),
		"--check", a.timing.Check.String(),
		"--init-delay", a.timing.InitDelay.String(),
		"--write-every", a.timing.WriteEvery.String(),
		"--shutdown-timeout", a.timing.ShutdownTimeout.String(),
		"--slow-stop", strconv.FormatFloat(a.slowStop, 'g', -1, 64),
		"--slow-max", a.slowMax.String(),
		"--seed", strconv.FormatUint(a.seed, 10),
		"--direct-child=" + strconv.FormatBool(a.directChild),
	}
}

func parseInstanceArgs(args []string) (instanceArgs, error) {
	var a instanceArgs
	fs := flag.NewFlagSet("masterjob-chaos instance", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.sock, "sock", "", "driver socket")
	fs.IntVar(&a.index, "index", 0, "instance slot")
	fs.IntVar(&a.gen, "gen", 0, "restart generation")
	fs.StringVar(&a.runID, "run", "", "run id")
	fs.StringVar(&a.storeURL, "store", "", "store URL")
	fs.StringVar(&a.dsn, "dsn", "", "PostgreSQL DSN through the proxy")
	fs.IntVar(&a.locks, "locks", 1, "lock names")
	fs.DurationVar(&a.timing.Heartbeat, "heartbeat", 0, "")
	fs.DurationVar(&a.timing.Tolerance, "tolerance", 0, "")
	fs.DurationVar(&a.timing.Check, "check", 0, "")
	fs.DurationVar(&a.timing.InitDelay, "init-delay", 0, "")
	fs.DurationVar(&a.timing.WriteEvery, "write-every", 20*time.Millisecond, "")
	fs.DurationVar(&a.timing.ShutdownTimeout, "shutdown-timeout", 0, "")
	fs.Float64Var(&a.slowStop, "slow-stop", 0, "")
	fs.DurationVar(&a.slowMax, "slow-max", 0, "")
	fs.Uint64Var(&a.seed, "seed", 0, "")
	fs.BoolVar(&a.directChild, "direct-child", false, "")
	if err := fs.Parse(args); err != nil {
		return a, err
	}
	if a.sock == "" || a.runID == "" || a.storeURL == "" {
		return a, errors.New("instance: --sock, --run and --store are required")
	}
	return a, nil
}

// lockName returns the k-th lock name of a run.
func lockName(k int) string { return "chaos-lock-" + strconv.Itoa(k) }

// RunInstance is the instance process: it runs a masterjob.Executor for the
// run's locks, reports every mastership and writes to the driver's fenced
// sink over the driver's socket, and applies the driver's control messages.
// It returns when the driver asks it to shut down (or goes away) and Run
// has returned. It is called by Main for the "instance" subcommand.
func RunInstance(args []string, _, stderr io.Writer) error {
	a, err := parseInstanceArgs(args)
	if err != nil {
		return err
	}
	conn, err := net.Dial("unix", a.sock)
	if err != nil {
		return fmt.Errorf("instance: dial driver: %w", err)
	}
	defer conn.Close()
	in := &instance{args: a, conn: conn, enc: json.NewEncoder(conn)}
	in.reach.in = in
	return in.run(stderr)
}

type instance struct {
	args instanceArgs
	conn net.Conn

	mu  sync.Mutex // serialises whole messages on conn
	enc *json.Encoder

	offset atomic.Int64 // the instance's wall-clock offset, ns
	fs     *faultStore  // SQLite only
	reach  reach        // whether its own store calls succeed
}

// send writes one message synchronously: once it returns, the message is in
// the kernel's socket buffer and reaches the driver even if this process is
// killed right after.
func (in *instance) send(m Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	_ = in.enc.Encode(m)
}

// wall is this instance's view of wall time, which the clock fault jumps.
// Nothing in the executor reads it: it only stamps this instance's records
// and logs.
func (in *instance) wall() time.Time {
	return time.Now().Add(time.Duration(in.offset.Load()))
}

func (in *instance) wallString() string { return in.wall().Format(time.RFC3339Nano) }

func (in *instance) run(stderr io.Writer) error {
	a := in.args
	// A release times out after min(heartbeat, safety margin); the
	// instances run with the default margin, a quarter of the lease.
	stderr = &logReach{w: stderr, r: &in.reach, window: min(a.timing.Heartbeat, a.timing.Tolerance/4), releasesOnly: true}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(groups []string, at slog.Attr) slog.Attr {
			if len(groups) == 0 && at.Key == slog.TimeKey {
				return slog.Time(slog.TimeKey, in.wall())
			}
			return at
		},
	}))
	spec, err := parseStoreURL(a.storeURL)
	if err != nil {
		return err
	}
	ns := namespace(a.runID)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	openCtx, openCancel := context.WithTimeout(ctx, 10*time.Second)
	raw, err := openStore(openCtx, spec, ns, a.dsn)
	openCancel()
	if err != nil {
		return fmt.Errorf("instance %d: open store: %w", a.index, err)
	}
	var st store.Store = raw
	if spec.kind == kindSQLite {
		in.fs = newFaultStore(raw, func() (store.Store, error) {
			return openStore(context.Background(), spec, ns, "")
		})
		st = in.fs
	}
	defer st.Close()

	// SIGTERM shuts the instance down gracefully, as it would any
	// application: Run's context ends, jobs stop, leases are released.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()

	id := fmt.Sprintf("i%d-g%d-%d", a.index, a.gen, os.Getpid())
	opts := []masterjob.Option{}
	if a.timing.ShutdownTimeout > 0 {
		opts = append(opts, masterjob.WithShutdownTimeout(a.timing.ShutdownTimeout))
	}
	ex, err := masterjob.New(st, append(opts,
		masterjob.WithLookupEnv(func(string) (string, bool) { return "", false }),
		masterjob.WithInitDelay(a.timing.InitDelay),
		masterjob.WithHeartbeatInterval(a.timing.Heartbeat),
		masterjob.WithTolerance(a.timing.Tolerance),
		masterjob.WithCheckMasterInterval(a.timing.Check),
		masterjob.WithInstanceID(id),
		masterjob.WithLogger(logger),
		masterjob.WithObserver(observer{in}),
	)...)
	if err != nil {
		return err
	}
	for k := range a.locks {
		if err := ex.StartMaster(lockName(k), masterjob.JobFunc(in.job)); err != nil {
			return err
		}
	}
	go in.control(cancel)
	go in.watchPauses(ctx)
	in.send(Message{Type: msgHello, Index: a.index, Gen: a.gen, PID: os.Getpid(), ID: id, T: Mono()})
	runErr := ex.Run(ctx)
	in.reach.flush()
	bye := Message{Type: msgBye, T: Mono()}
	if runErr != nil {
		bye.Err = runErr.Error()
	}
	in.send(bye)
	return runErr
}

// Stop policies of a slow job: what may end its stop early.
const (
	// policyDeadline: masterjob.StopDeadline only, the time by which the
	// job must have stopped.
	policyDeadline = "deadline"
	// policyReason: StopDeadline, and at once when masterjob.StopReason
	// reports a loss (ErrLeaseLost, ErrLeaseExpired), as the CLI does.
	policyReason = "deadline+reason"
	// policySigterm: a runner's child that ignores SIGTERM for its plan;
	// the runner kills it (runner mode).
	policySigterm = "ignores SIGTERM"
)

// What ended a job (Message.How).
const (
	howPrompt   = "prompt"       // it stopped as soon as it was told
	howDone     = "cleanup done" // its planned stop time passed
	howDeadline = "stop deadline"
	howReason   = "stop reason reported a loss"
)

// stopSlack is how long before StopDeadline a slow job returns: its polling
// interval and then some.
const stopSlack = 10 * time.Millisecond

// stopPlan draws how long the job of (slot, generation, token) takes to
// stop once told, and its policy: reproducible from the run's seed.
func stopPlan(a instanceArgs, token int64) (time.Duration, string) {
	rng := rand.New(rand.NewPCG(a.seed^uint64(a.index)<<40^uint64(a.gen)<<20, uint64(token)))
	policy := policyDeadline
	if rng.IntN(2) == 0 {
		policy = policyReason
	}
	if a.slowMax <= 0 || rng.Float64() >= a.slowStop {
		return 0, policy
	}
	return time.Duration(rng.Int64N(int64(a.slowMax))), policy
}

// job is every lock's job: it reports its mastership and writes to the
// fenced sink every WriteEvery until its context ends; then, if it is slow
// to stop, it goes on writing for the time its plan says, bounded by what
// the executor tells it (StopDeadline, StopReason).
func (in *instance) job(ctx context.Context, lease masterjob.Lease) error {
	plan, policy := stopPlan(in.args, lease.Token)
	in.send(Message{Type: msgStart, Lock: lease.Lock, Token: lease.Token, T: Mono(), Wall: in.wallString(),
		Plan: int64(plan), Policy: policy})
	tick := time.NewTicker(in.args.timing.WriteEvery)
	defer tick.Stop()
	for {
		in.send(Message{Type: msgWrite, Lock: lease.Lock, Token: lease.Token, T: Mono()})
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	in.send(Message{Type: msgStopping, Lock: lease.Lock, Token: lease.Token, T: Mono(), Reason: reasonOf(ctx)})
	how := howPrompt
	if plan > 0 {
		how = in.slowStop(ctx, lease, plan, policy)
	}
	in.send(Message{Type: msgStop, Lock: lease.Lock, Token: lease.Token, T: Mono(), Wall: in.wallString(), Reason: reasonOf(ctx), How: how})
	return nil
}

func reasonOf(ctx context.Context) string {
	if r := masterjob.StopReason(ctx); r != nil {
		return r.Error()
	}
	return ""
}

// slowStop goes on writing, as a job with cleanup to do, until plan has
// passed or the executor says it must stop: StopDeadline (minus
// stopSlack), or with policyReason a StopReason that reports a loss.
func (in *instance) slowStop(ctx context.Context, lease masterjob.Lease, plan time.Duration, policy string) string {
	end := time.Now().Add(plan)
	poll := time.NewTicker(pauseTick)
	defer poll.Stop()
	var nextWrite time.Time
	for {
		now := time.Now()
		if dl, ok := masterjob.StopDeadline(ctx); ok && !now.Before(dl.Add(-stopSlack)) {
			return howDeadline
		}
		if policy == policyReason {
			if r := masterjob.StopReason(ctx); errors.Is(r, masterjob.ErrLeaseLost) || errors.Is(r, masterjob.ErrLeaseExpired) {
				return howReason
			}
		}
		if !now.Before(end) {
			return howDone
		}
		if !now.Before(nextWrite) {
			in.send(Message{Type: msgWrite, Lock: lease.Lock, Token: lease.Token, T: Mono()})
			nextWrite = now.Add(in.args.timing.WriteEvery)
		}
		<-poll.C
	}
}

// pauseTick is how often watchPauses looks at the clock; a gap of more
// than pauseGap between two looks is reported as a pause.
const (
	pauseTick = 5 * time.Millisecond
	pauseGap  = 100 * time.Millisecond
)

// watchPauses reports when the process runs again after a pause (a SIGSTOP
// or a long descheduling): the driver compares it with the time it sent
// SIGCONT, which tells how long the process took to run again, apart from
// how long the executor then took to stop its jobs.
func (in *instance) watchPauses(ctx context.Context) {
	t := time.NewTicker(pauseTick)
	defer t.Stop()
	last := Mono()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := Mono()
		if now-last > int64(pauseGap) {
			in.send(Message{Type: msgResumed, From: last, T: now})
		}
		last = now
	}
}

// control applies the driver's messages until the connection ends; a lost
// driver shuts the instance down.
func (in *instance) control(shutdown context.CancelFunc) {
	defer shutdown()
	sc := bufio.NewScanner(in.conn)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		switch m.Type {
		case msgShutdown:
			shutdown()
		case msgOutage:
			if in.fs != nil {
				in.fs.setOutage(m.Mode, time.Duration(m.Latency))
			}
		case msgReopen:
			if in.fs != nil {
				if err := in.fs.reopenStore(); err != nil {
					m.Err = err.Error()
				}
			}
		case msgClock:
			in.offset.Store(m.Offset)
		}
		in.send(Message{Type: msgAck, Kind: m.Type, Seq: m.Seq, Err: m.Err, T: Mono(), Wall: in.wallString()})
	}
}

// observer forwards the executor's transitions and renewals to the driver.
type observer struct{ in *instance }

func (o observer) Transition(t masterjob.Transition) {
	reason := ""
	if t.Reason != nil {
		reason = t.Reason.Error()
	}
	m := Message{Type: msgTransition, Lock: t.Lock, Token: t.Token, Kind: string(t.Kind), Reason: reason,
		Successor: t.Successor, T: Mono()}
	if t.Takeover {
		m.PrevHolder, m.PrevToken = t.PrevHolder, t.PrevToken
	}
	o.in.send(m)
}
func (o observer) Renewal(d time.Duration, _ int, err error) {
	m := Message{Type: msgRenewal, Latency: int64(d), T: Mono()}
	o.in.reach.result(m.T-int64(d), err != nil)
	if err != nil {
		m.Err = err.Error()
	}
	o.in.send(m)
}
func (o observer) Check(d time.Duration, _ int, err error) {
	now := Mono()
	o.in.reach.result(now-int64(d), err != nil)
	o.in.send(Message{Type: msgCheck, T: now})
}
func (observer) LeaseTTL(string, time.Duration) {}
