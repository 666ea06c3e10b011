package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/internal/childproc"
	"github.com/masterjob/masterjob/internal/cpuprio"
	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// On-exit policies of run.
const (
	onExitRelease = "release"
	onExitRestart = "restart"
)

// defaultRestartDelay is the default of --restart-delay.
const defaultRestartDelay = time.Second

// Backoff of the attempts to open the store at start.
const (
	openBackoffMin = 100 * time.Millisecond
	openBackoffMax = 10 * time.Second
	// openTimeout bounds one attempt to open the store.
	openTimeout = 30 * time.Second
)

// auditCloseTimeout bounds the recording of the last transitions in the
// history at exit.
const auditCloseTimeout = 5 * time.Second

// auditDelay is how long the history's record of a transition waits
// (audit.WithDelay): a hand-off's entries are appended once the successor's
// command has started, not while it starts, when their commits and the
// notifications they send would compete with it for the store and the
// CPU. A control change made through this runner's control API still comes
// after the transitions before it (audit.Recorder.Ordered); the runner's
// exit appends what waits at once. 25 ms hands off as fast as 100 ms did
// (docs/benchmarks.md, twenty-first look) and keeps the window in which a
// crash loses an entry, or another process's entry overtakes it, small.
const auditDelay = 25 * time.Millisecond

const runUsage = `usage: masterjob run --lock NAME [flags] -- COMMAND [ARGS...]

Takes part in the election of the master of lock NAME and, while this
instance is master, runs COMMAND as its child (in its own process group,
with stdout and stderr passed through and stdin from /dev/null).

The command's environment is the runner's, with:
  MASTERJOB_LOCK        the lock NAME
  MASTERJOB_TOKEN       the fencing token of this mastership
  MASTERJOB_INSTANCE    this instance's id
  MASTERJOB_RUNNER_PID  the pid of this runner (on Linux not the command's
                        parent, a supervisor is): kill -9 it to simulate
                        a crash of this instance
and without the runner's secrets: MASTERJOB_STORE (its URL may carry a
database password) and MASTERJOB_HTTP_TOKEN are removed. --keep-env NAME
passes one of them on (repeat the flag for both).

When this instance stops being master (the lease could not be renewed in
time, an operator disabled the lock), the command and every process it
started get SIGTERM and, if still running, SIGKILL half the safety margin
before the lease could expire in the store; at once if the lease has
expired or the store says it is another's, even while the command was
already stopping for another reason. Only when all are gone is the lease
released. On Linux a supervisor process between the runner and the command
(the same binary) keeps every process the command started, including those
that call setsid or double-fork, and kills them all if the runner dies,
even by SIGKILL; then it releases the dead runner's lease, so that another
instance takes over at once instead of after the lease's expiry. It also
reaps them, so no zombie piles up when the runner is PID 1 in a container. While this instance follows, one supervisor waits
beside the runner, started ahead of time, so that the command starts at
once when this instance becomes master.

SIGINT or SIGTERM to the runner stops it gracefully: the child gets SIGTERM
as above, the lease is released so that another instance takes over at once,
and the runner exits with status 0. A second signal kills the child at once.

When the command exits by itself:
  --on-exit release (default, like 'consul lock'): the runner releases the
      lease and exits with the command's exit code (128+N if killed by
      signal N, 127 if it could not be started).
  --on-exit restart: the command is started again after --restart-delay,
      as long as this instance is master.

The store is --store, else $MASTERJOB_STORE, else sqlite:masterjob.db. While
the store cannot be reached the runner logs the error and keeps retrying.

Timing settings come, per setting, later winning, from: defaults, the
"masterJobExecutor" section of the JSON config file (--config, else
$MASTERJOB_CONFIG), the environment, and the flags below.

Every mastership transition (acquired, released, lost, demoted) is recorded
in the store's history ('masterjob history').

With --http ADDR the runner also serves, on ADDR:
  /api/mastercontrols  the control API over the same store (see 'masterjob
                       help serve'); disable and enable act on every lock
  /                    the dashboard
  /metrics             Prometheus metrics: masterjob_is_master{lock},
                       transitions, renewal latency and failures, lease
                       TTL, store errors; the store's view of every lock
                       (masterjob_lock_*); Go runtime and process metrics
  /healthz             liveness: 200 while the process serves
  /readyz              readiness: 200 while the executor runs, its store
                       answers and no command runs past its lease
The address it listens on is logged as http_addr (with port 0, the port
picked). Until the store is open, /readyz and the API answer 503.

` + httpSecurityHelp

// runFlags are the flags of run.
type runFlags struct {
	fs *flag.FlagSet

	lock, store, config string
	initDelay           durationValue
	checkInterval       durationValue
	heartbeatInterval   durationValue
	tolerance           durationValue
	safetyMargin        durationValue
	shutdownTimeout     durationValue
	maxRetries          intValue
	onExit              choiceValue
	restartDelay        durationValue
	logFormat           choiceValue
	logLevel            choiceValue
	keepEnv             listValue
	http                httpFlags
	balance             bool
	weight              weightValue
}

func newRunFlags() *runFlags {
	f := &runFlags{
		fs:           newFlagSet("run"),
		onExit:       choiceValue{onExitRelease, []string{onExitRelease, onExitRestart}},
		restartDelay: durationValue{d: defaultRestartDelay},
		logFormat:    choiceValue{"text", []string{"text", "json"}},
		logLevel:     choiceValue{"info", []string{"debug", "info", "warn", "error"}},
	}
	fs := f.fs
	fs.StringVar(&f.lock, "lock", "", "the lock `NAME` (required)")
	fs.StringVar(&f.store, "store", "", "the store `URL` (default $"+EnvStore+", else "+storeurl.DefaultURL+")")
	fs.StringVar(&f.config, "config", "", "JSON config `FILE` whose \"masterJobExecutor\" section is read (default $"+masterjob.EnvConfigFile+")")
	fs.Var(&f.initDelay, "init-delay", "`duration` to wait before the first election (file initDelay, env "+masterjob.EnvInitDelay+"; default 1s)")
	fs.Var(&f.checkInterval, "check-master-interval", "longest `duration` a follower waits between checks (file checkMasterInterval, env "+masterjob.EnvCheckMasterInterval+"; default 30s)")
	fs.Var(&f.heartbeatInterval, "heartbeat-interval", "`duration` between lease renewals (file heartbeatInterval, env "+masterjob.EnvHeartbeatInterval+"; default 8s)")
	fs.Var(&f.tolerance, "tolerance", "lease `duration`, by the store's clock (file masterJobTolerance, env "+masterjob.EnvTolerance+"; default 3 x heartbeat interval)")
	fs.Var(&f.safetyMargin, "safety-margin", "`duration` before its lease could expire at which the master stops the command (file safetyMargin; default tolerance / 4)")
	fs.Var(&f.shutdownTimeout, "shutdown-timeout", "longest `duration` to wait for the command to stop at shutdown (file shutdownTimeout; default tolerance)")
	fs.Var(&f.maxRetries, "max-heartbeat-retry-count", "`number` of renewal retries before the master demotes itself (file maxHeartbeatRetryCount, env "+masterjob.EnvMaxHeartbeatRetryCount+"; default 3)")
	fs.Var(&f.onExit, "on-exit", "what to do when the command exits by itself: `release|restart`")
	fs.Var(&f.restartDelay, "restart-delay", "`duration` to wait before restarting the command (--on-exit restart)")
	fs.Var(&f.logFormat, "log-format", "log format on stderr: `text|json`")
	fs.Var(&f.logLevel, "log-level", "least level logged: `debug|info|warn|error`")
	fs.Var(&f.keepEnv, "keep-env", "pass the runner's secret environment variable `NAME` ("+
		strings.Join(secretEnv, " or ")+") on to the command; repeatable")
	f.http.register(fs, false)
	fs.BoolVar(&f.balance, "balance", true, "spread the masterships of the locks over the instances that take part in the same locks (stores with a member list); --balance=false takes every free lock at once")
	fs.Var(&f.weight, "weight", "this instance's share of the masterships relative to the others, for balancing (`number` > 0; default 1)")
	return f
}

// options returns the executor options set by flags, each labelled with its
// flag so that validation errors name it.
func (f *runFlags) options() []masterjob.Option {
	var opts []masterjob.Option
	if f.config != "" {
		opts = append(opts, masterjob.Labeled("flag --config", masterjob.WithConfigFile(f.config)))
	}
	durations := []struct {
		name string
		v    *durationValue
		opt  func(time.Duration) masterjob.Option
	}{
		{"init-delay", &f.initDelay, masterjob.WithInitDelay},
		{"check-master-interval", &f.checkInterval, masterjob.WithCheckMasterInterval},
		{"heartbeat-interval", &f.heartbeatInterval, masterjob.WithHeartbeatInterval},
		{"tolerance", &f.tolerance, masterjob.WithTolerance},
		{"safety-margin", &f.safetyMargin, masterjob.WithSafetyMargin},
		{"shutdown-timeout", &f.shutdownTimeout, masterjob.WithShutdownTimeout},
	}
	for _, d := range durations {
		if d.v.set {
			opts = append(opts, masterjob.Labeled("flag --"+d.name, d.opt(d.v.d)))
		}
	}
	if f.maxRetries.set {
		opts = append(opts, masterjob.Labeled("flag --max-heartbeat-retry-count",
			masterjob.WithMaxHeartbeatRetryCount(f.maxRetries.n)))
	}
	if !f.balance || f.weight.set {
		opts = append(opts, masterjob.WithBalance(masterjob.BalanceConfig{Off: !f.balance, Weight: f.weight.w}))
	}
	return opts
}

// secretEnv names the runner's environment variables that may carry a
// secret, removed from the command's environment unless --keep-env names
// them. A new secret setting read from the environment belongs here.
var secretEnv = []string{EnvStore, EnvHTTPToken}

// listValue is a repeatable string flag.
type listValue []string

func (v *listValue) String() string { return strings.Join(*v, ",") }

func (v *listValue) Set(s string) error {
	*v = append(*v, s)
	return nil
}

var runCommand = &command{
	name:     "run",
	synopsis: "run a command while this instance is master of a lock",
	usage:    runUsage,
	flags:    func() *flag.FlagSet { return newRunFlags().fs },
	run:      runMain,
}

func runMain(e *cmdEnv, c *command, args []string) int {
	f := newRunFlags()
	if ok, code := parse(e, c, f.fs, args); !ok {
		return code
	}
	r, err := newRunner(e, f)
	if err != nil {
		if errors.Is(err, errUsage) || errors.Is(err, masterjob.ErrInvalidConfig) {
			return reportUsage(e, c, err)
		}
		fmt.Fprintf(e.stderr, "masterjob run: %v\n", err)
		return ExitFailure
	}
	return r.run()
}

// runner is one `masterjob run`.
type runner struct {
	e            *cmdEnv
	lock         string
	path         string   // the command, resolved in $PATH
	args         []string // its arguments
	dropEnv      []string // the secrets removed from its environment
	store        storeurl.URL
	opts         []masterjob.Option
	cfg          masterjob.Config
	onExit       string
	restartDelay time.Duration
	log          *slog.Logger
	logFormat    string      // text or json, for the last will's log too
	http         *httpConfig // nil without --http

	cancelRun context.CancelCauseFunc
	killNow   chan struct{} // closed by a second signal
	killOnce  sync.Once

	mu           sync.Mutex
	child        *childproc.Process // the running child, if any
	st           store.Store        // the store, once open
	starting     sync.Mutex         // held while a command starts
	ex           *masterjob.Executor
	standby      *childproc.Standby // a supervisor ready to start the next child
	closing      bool               // no more standbys
	standbys     sync.WaitGroup     // preparations in flight
	standbyTimer *time.Timer        // a preparation deferred after a stop (standbyAfterStop)
	exitCode     *int               // the command's exit code, with --on-exit release
}

// Causes of the end of a run, for the logs.
var (
	errCommandExited = errors.New("the command exited")
	errSignal        = errors.New("received signal")
)

// newRunner validates the flags and the configuration. Its errors wrap
// errUsage or masterjob.ErrInvalidConfig for bad input.
func newRunner(e *cmdEnv, f *runFlags) (*runner, error) {
	if !flagSet(f.fs, "lock") {
		hint := ""
		if f.fs.NArg() > 1 && f.fs.Arg(1) == "--" { // run NAME -- COMMAND
			hint = lockHint(f.fs)
		}
		return nil, usageError("missing --lock NAME%s", hint)
	}
	if err := store.ValidateLockName(f.lock); err != nil {
		return nil, usageError("--lock: %w", err)
	}
	if f.fs.NArg() == 0 {
		return nil, usageError("missing command after --")
	}
	if f.restartDelay.d < 0 {
		return nil, usageError("--restart-delay: must not be negative, got %v", f.restartDelay.d)
	}
	for _, name := range f.keepEnv {
		if !slices.Contains(secretEnv, name) {
			return nil, usageError("--keep-env %q: only %s are removed from the command's environment",
				name, strings.Join(secretEnv, " and "))
		}
	}
	dropEnv := slices.DeleteFunc(slices.Clone(secretEnv), func(n string) bool { return slices.Contains(f.keepEnv, n) })
	hc, err := f.http.resolve(e, f.fs, false)
	if err != nil {
		return nil, err
	}
	u, err := storeurl.Parse(storeURL(e, f.store, storeurl.DefaultURL))
	if err != nil {
		return nil, usageError("--store: %w", err)
	}
	opts := append([]masterjob.Option{masterjob.WithLookupEnv(e.lookupEnv)}, f.options()...)
	cfg, err := masterjob.LoadConfig(opts...)
	if err != nil {
		return nil, err
	}
	path, err := exec.LookPath(f.fs.Arg(0))
	if err != nil {
		return nil, usageError("command %q: %w", f.fs.Arg(0), unwrapExecError(err))
	}
	return &runner{
		e:            e,
		lock:         f.lock,
		path:         path,
		args:         f.fs.Args()[1:],
		dropEnv:      dropEnv,
		store:        u,
		opts:         opts,
		cfg:          cfg,
		onExit:       f.onExit.value,
		restartDelay: f.restartDelay.d,
		log:          newLogger(e.stderr, f.logFormat.value, f.logLevel.value),
		logFormat:    f.logFormat.value,
		http:         hc,
		killNow:      make(chan struct{}),
	}, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func unwrapExecError(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// InstallDefaultLogger makes the commands that log (run, serve, and a
// supervisor's last will) install their logger as slog's default
// (slog.SetDefault), so that what libraries log to slog.Default() or with
// the log package (the Redis store's warning about a server that keeps
// nothing on disk, say) comes out in the same format, at the same level,
// to the same place: a runner with --log-format json writes only JSON.
// The masterjob command sets it before Main. It is off by default, for
// programs and tests that run Main more than once in one process.
var InstallDefaultLogger bool

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by the flag
	o := &slog.HandlerOptions{Level: lv, ReplaceAttr: durationsAsText}
	var h slog.Handler = slog.NewTextHandler(w, o)
	if format == "json" {
		h = slog.NewJSONHandler(w, o)
	}
	l := slog.New(throttleLog(h)) // cli/http.go
	if InstallDefaultLogger {
		slog.SetDefault(l)
	}
	return l
}

// durationsAsText logs a time.Duration as a Go duration string ("1.5s"):
// the JSON handler would write nanoseconds.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// run runs the election until a signal, a cancellation of Main's context or,
// with --on-exit release, the exit of the command; it returns the exit code.
func (r *runner) run() int {
	// As PID 1 (a container's init), reap the orphans reparented to the
	// runner; its only children are the supervisors of its command.
	childproc.StartReaper()
	defer flushLog(r.log)
	ctx, cancel := context.WithCancelCause(r.e.ctx)
	defer cancel(nil)
	r.cancelRun = cancel

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	// From here a signal stops the runner gracefully; before, it ends the
	// process as the default action does, with nothing started yet.
	trace.Mark("signals.caught", r.lock)
	quit := make(chan struct{})
	base := r.log // for what is not about this lock: the control API, the probes
	log := r.log.With("lock", r.lock)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchSignals(log, sigs, quit)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchSuspend(log, quit)
	}()
	defer func() {
		signal.Stop(sigs)
		close(quit)
		wg.Wait()
	}()

	// The listener comes first: a taken port fails at once, and the probes
	// answer while the store cannot be reached.
	var hs *runHTTP
	if r.http != nil {
		var err error
		if hs, err = startRunHTTP(ctx, r.http, r.lock, base); err != nil {
			log.Error("cannot serve HTTP", "err", err)
			return ExitFailure
		}
		defer hs.srv.shutdown()
	}

	st, err := openStore(ctx, r.store, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the store could be opened", "reason", context.Cause(ctx))
			return ExitOK
		}
		log.Error("cannot open the store", "store", r.store.String(), "err", err)
		return ExitFailure
	}
	// On early returns the store closes before the listener, which serves
	// startingHandler (no store) until the end of the setup below.
	defer st.Close()
	r.mu.Lock()
	r.st = st // for a suspension (suspend.go)
	r.mu.Unlock()

	// Observers: the metrics, and the audit history of the transitions.
	var observers []masterjob.Observer
	if hs != nil {
		observers = append(observers, hs.obs)
	}
	closeAudit := func() {}
	var rec *audit.Recorder
	if h, ok := st.(store.History); ok {
		rec = audit.NewRecorder(h, log, audit.WithDelay(auditDelay))
		observers = append(observers, rec)
		closeAudit = func() {
			actx, cancel := context.WithTimeout(context.Background(), auditCloseTimeout)
			defer cancel()
			_ = rec.Close(actx) // logs what it could not record
		}
		defer closeAudit() // on early returns; Close again is a no-op
	}

	host, _ := os.Hostname()
	info := masterjob.InstanceInfo{Host: host, PID: os.Getpid(), Version: version()}
	if hs != nil {
		info.Address = advertisedAddr(hs.srv.addr, host)
	}
	opts := append(slices.Clip(r.opts),
		masterjob.WithLogger(r.log),
		masterjob.WithInstanceInfo(info),
		masterjob.WithObserver(masterjob.Observers(observers...)),
	)
	ex, err := masterjob.New(st, opts...)
	if err != nil {
		log.Error("cannot create the executor", "err", err)
		if errors.Is(err, masterjob.ErrInvalidConfig) {
			return ExitUsage
		}
		return ExitFailure
	}
	r.log = r.log.With("lock", r.lock, "instance", ex.InstanceID())
	r.mu.Lock()
	r.ex = ex // for a suspension (suspend.go)
	r.mu.Unlock()
	if err := ex.StartMaster(r.lock, masterjob.JobFunc(r.job)); err != nil {
		r.log.Error("cannot register the lock", "err", err)
		return ExitFailure
	}
	if hs != nil {
		// The control API gets a store handle of its own: its requests
		// never hold the connections the renewals and checks need.
		apiSt, err := openStore(ctx, r.store, log)
		if err != nil {
			if ctx.Err() != nil {
				log.Info("stopped before the store could be opened", "reason", context.Cause(ctx))
				return ExitOK
			}
			log.Error("cannot open the store for the control API", "store", r.store.String(), "err", err)
			return ExitFailure
		}
		defer apiSt.Close() // after the listener's shutdown below
		var apiOpts []controlapi.Option
		if ah, ok := apiSt.(store.History); ok && rec != nil {
			// The control changes made here go in the history after the
			// transitions that came before them.
			apiOpts = append(apiOpts, controlapi.WithHistory(rec.Ordered(ah)))
		}
		if err := hs.serve(apiSt, ex, base, apiOpts...); err != nil {
			r.log.Error("cannot serve the control API", "err", err)
			return ExitFailure
		}
	}
	r.log.Info("following lock", "store", r.store.String(), "command", r.path,
		"heartbeat_interval", r.cfg.HeartbeatInterval, "tolerance", r.cfg.Tolerance,
		"check_master_interval", r.cfg.CheckMasterInterval, "on_exit", r.onExit)

	r.prepareStandby()
	runErr := ex.Run(ctx)
	trace.Mark("run.returned", r.lock)
	r.killLeftover()
	r.closeStandby()
	// Then, in this order: the listener (its requests use the store), the
	// audit history (its last entries are the releases of the shutdown),
	// the store (deferred).
	if hs != nil {
		hs.srv.shutdown()
	}
	closeAudit()

	code := ExitOK
	if runErr != nil {
		r.log.Error("executor stopped with an error", "err", runErr)
		code = ExitFailure
	}
	r.mu.Lock()
	if r.exitCode != nil {
		code = *r.exitCode
	}
	r.mu.Unlock()
	r.log.Info("stopped", "reason", context.Cause(ctx), "exit_code", code)
	trace.Mark("runner.exit", r.lock)
	return code
}

// runHTTP is the HTTP side of a run: the listener and the metrics.
type runHTTP struct {
	hc  *httpConfig
	srv *httpServer
	reg *prometheus.Registry
	obs *prom.Observer // the executor's observer for the metrics
}

// startRunHTTP creates the metrics of lock and listens on hc.addr, serving
// the metrics and the probes (not ready) until serve.
func startRunHTTP(ctx context.Context, hc *httpConfig, lock string, log *slog.Logger) (*runHTTP, error) {
	reg := newRegistry()
	obs, err := prom.NewObserver(reg, prom.WithLocks(lock))
	if err != nil {
		return nil, fmt.Errorf("create the metrics: %w", err)
	}
	srv, err := listenHTTP(ctx, hc, startingHandler(reg, log), log)
	if err != nil {
		return nil, err
	}
	hc.warnInsecure(log)
	return &runHTTP{hc: hc, srv: srv, reg: reg, obs: obs}, nil
}

// serve serves everything: the control API over st, a store handle of its
// own (with the token of h.hc, if any), the dashboard, the metrics and the
// probes, ready while ex is.
func (h *runHTTP) serve(st store.Store, ex *masterjob.Executor, log *slog.Logger, opts ...controlapi.Option) error {
	api, err := controlapi.New(st, append(controlAPIOptions(h.hc, log), opts...)...)
	if err != nil {
		return err
	}
	if err := registerStoreMetrics(h.reg, st); err != nil {
		return err
	}
	h.srv.setHandler(httpserver.New(httpserver.Config{
		Logger:       log,
		API:          api,
		Gatherer:     h.reg,
		Ready:        func(context.Context) error { return ex.Ready() },
		ReadyOptions: []health.Option{health.WithLogger(log)},
	}))
	return nil
}

// watchSignals turns the first SIGINT/SIGTERM into a graceful stop and the
// second into an immediate SIGKILL of the child.
func (r *runner) watchSignals(log *slog.Logger, sigs <-chan os.Signal, quit <-chan struct{}) {
	select {
	case s := <-sigs:
		trace.Mark("signal.received", r.lock)
		log.Debug("signal received: stopping (the command gets SIGTERM, then the lease is released)", "signal", s.String())
		r.cancelRun(fmt.Errorf("%w %v", errSignal, s))
	case <-quit:
		return
	}
	select {
	case s := <-sigs:
		log.Warn("second signal received: killing the command", "signal", s.String())
		r.killOnce.Do(func() { close(r.killNow) })
	case <-quit:
	}
}

// openStore opens the store, retrying with capped, jittered backoff while it
// is unavailable (store.ErrUnavailable: unreachable, refusing connections,
// timing out), until ctx is done. Other errors (a bad table prefix, a
// missing directory, a failed migration) are returned: retrying would not
// help.
func openStore(ctx context.Context, u storeurl.URL, log *slog.Logger) (store.Store, error) {
	lastErr := ""
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, openTimeout)
		st, err := u.Open(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("store opened", "store", u.String(), "attempts", attempt)
			}
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		wait := backoff.Delay(attempt, openBackoffMin, openBackoffMax)
		// The whole error once; while it repeats, only at debug level.
		lvl := slog.LevelDebug
		if msg := err.Error(); msg != lastErr {
			lvl, lastErr = slog.LevelError, msg
		}
		log.Log(ctx, lvl, "cannot open the store; retrying", "store", u.String(), "err", err,
			"attempt", attempt, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// childSpec is the command without the lease's environment.
func (r *runner) childSpec() childproc.Spec {
	return childproc.Spec{
		Path:    r.path,
		Args:    r.args,
		DropEnv: r.dropEnv,
		Stdout:  r.e.stdout, // os.Stdout in the command: no copying
		Stderr:  r.e.stderr,
		// Given before the command starts: a runner killed the moment
		// after leaves it (lastwill.go).
		LastWill: r.lastWill(),
	}
}

// startChild starts the command for lease, from the standby supervisor if
// one is ready (the fork of the supervisor is then already done), and has
// the next standby prepared once this child is gone.
func (r *runner) startChild(lease masterjob.Lease) (*childproc.Process, error) {
	env := childproc.LeaseEnv(lease.Lock, lease.Token, lease.Instance)
	r.mu.Lock()
	sb := r.standby
	r.standby = nil
	r.mu.Unlock()
	if sb != nil {
		p, err := sb.Start(env)
		if err == nil {
			return p, nil
		}
		r.log.Debug("the standby supervisor failed; starting afresh", "err", err)
		sb.Close()
	}
	spec := r.childSpec()
	spec.Env = env
	return childproc.Start(spec)
}

// prepareStandby starts a standby supervisor in the background, unless one
// is ready or the runner is closing.
func (r *runner) prepareStandby() {
	r.mu.Lock()
	if r.standby != nil || r.closing {
		r.mu.Unlock()
		return
	}
	r.standbys.Add(1)
	r.mu.Unlock()
	trace.Mark("standby.prepare", r.lock)
	go func() {
		defer r.standbys.Done()
		sb, err := childproc.Prepare(r.childSpec())
		if err != nil {
			r.log.Debug("cannot prepare a standby supervisor; the next command starts afresh", "err", err)
			return
		}
		r.mu.Lock()
		if r.standby != nil || r.closing {
			r.mu.Unlock()
			sb.Close()
			return
		}
		r.standby = sb
		r.mu.Unlock()
	}()
}

// standbyAfterStop prepares the next standby supervisor after the command
// was stopped for reason. A shutdown needs none. After any other stop the
// lock goes to another instance at this very moment, and the standby (a
// process as big as this one, starting up) would take CPU from the
// successor's start on a small host: it is prepared a heartbeat later, or
// at once when this instance acquires again before that (startChild then
// starts afresh).
func (r *runner) standbyAfterStop(reason error) {
	if errors.Is(reason, masterjob.ErrShutdown) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return
	}
	if r.standbyTimer != nil {
		r.standbyTimer.Stop()
	}
	// prepareStandby does nothing once closeStandby has begun.
	r.standbyTimer = time.AfterFunc(r.cfg.HeartbeatInterval, r.prepareStandby)
}

// closeStandby discards the standby supervisor and stops preparing them.
func (r *runner) closeStandby() {
	r.mu.Lock()
	r.closing = true
	if r.standbyTimer != nil {
		r.standbyTimer.Stop()
	}
	sb := r.standby
	r.standby = nil
	r.mu.Unlock()
	r.standbys.Wait()
	if sb != nil {
		sb.Close()
	}
}

// job runs the command while this instance is master.
func (r *runner) job(ctx context.Context, lease masterjob.Lease) error {
	log := r.log.With("token", lease.Token)
	for {
		if ctx.Err() != nil {
			return nil
		}
		// A suspension (suspend.go) waits for a start in progress, so
		// that it stops the new command too.
		r.starting.Lock()
		p, err := r.startChild(lease)
		if err == nil {
			trace.Mark("child.forked", lease.Lock)
			r.setChild(p)
		}
		r.starting.Unlock()
		if err != nil {
			log.Error("cannot start the command", "err", err)
			if r.onExit == onExitRelease {
				r.finish(127)
				<-ctx.Done()
				return err
			}
		} else {
			plog := log.With("pid", p.Pid())
			plog.Info("command started")
			select {
			case <-p.Done():
				res := r.stop(p, r.killAt(ctx)) // stop what it left in its group
				r.setChild(nil)
				if r.onExit != onExitRelease {
					r.prepareStandby() // for the command's restart, at once
				}
				plog.Info("command exited", "exit_code", res.ExitCode, "result", res.String())
				if r.onExit == onExitRelease {
					r.finish(res.ExitCode)
					// Run's context is cancelled: wait for the executor to
					// cancel this job, so that it releases the lease and
					// does not acquire it again.
					<-ctx.Done()
					return nil
				}
			case <-ctx.Done():
				killAt := r.killAt(ctx)
				// The executor logs the stop and its reason; this line adds
				// only the kill time.
				trace.Mark("child.signalled", lease.Lock)
				plog.Debug("stopping the command", "reason", masterjob.StopReason(ctx),
					"kill_in", max(0, time.Until(killAt())).Round(time.Millisecond))
				res := r.stop(p, killAt)
				trace.Mark("child.reaped", lease.Lock)
				r.setChild(nil)
				r.standbyAfterStop(masterjob.StopReason(ctx))
				lvl := slog.LevelDebug
				if res.Signal == syscall.SIGKILL {
					lvl = slog.LevelWarn // it did not stop by itself in time
				}
				plog.Log(ctx, lvl, "command stopped", "exit_code", res.ExitCode, "result", res.String())
				return nil
			}
		}
		log.Info("restarting the command", "in", r.restartDelay)
		t := time.NewTimer(r.restartDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// killAt returns the kill time of the child once the job's context is
// cancelled (or, for what a child left behind, once it exited): the stop
// deadline of the mastership (masterjob.StopDeadline: the local estimate of
// the lease's expiry, which moves forward while renewals succeed, and back
// when the lease is lost while the job is stopping) minus killSlack, so
// that the child is dead before the lease can expire in the store; but no
// later than ShutdownTimeout from now (minus a smaller slack: that bound is
// about liveness, not safety), so that a child ignoring SIGTERM cannot hold
// a disabled lock for ever. When the lease has already expired or the store
// says it is another's (masterjob.StopReason is ErrLeaseExpired or
// ErrLeaseLost, even when the job was already stopping for a planned reason
// such as a shutdown), another master may run already: the kill time is
// now.
//
// The returned func is evaluated again and again while the child stops, so
// that a loss noticed meanwhile kills it at once.
func (r *runner) killAt(ctx context.Context) func() time.Time {
	slack := killSlack(r.cfg)
	latest := time.Now().Add(r.cfg.ShutdownTimeout - min(slack, r.cfg.ShutdownTimeout/4))
	return func() time.Time {
		if reason := masterjob.StopReason(ctx); errors.Is(reason, masterjob.ErrLeaseExpired) || errors.Is(reason, masterjob.ErrLeaseLost) {
			return time.Time{}
		}
		deadline, ok := masterjob.StopDeadline(ctx)
		if !ok {
			// Not an executor's context; should not happen. Stay within
			// the safety margin.
			return time.Now().Add(r.cfg.SafetyMargin - slack)
		}
		if at := deadline.Add(-slack); at.Before(latest) {
			return at
		}
		return latest
	}
}

// killSlack is how long before the local estimate of the lease's expiry the
// child is SIGKILLed: half the safety margin. The master demotes itself a
// safety margin before that estimate, so the child gets the first half of
// the margin to stop after SIGTERM, and the second half is left for the
// SIGKILL to land and the child to be reaped on a loaded host (a starved
// runner, a child in a page fault). The margin is the user's statement of
// how much delay the host may add: a fixed slack (250ms before) is either
// too short on a loaded host or wasteful with a large margin.
func killSlack(cfg masterjob.Config) time.Duration {
	return cfg.SafetyMargin / 2
}

// stop stops p by killAt, or at once after a second signal.
func (r *runner) stop(p *childproc.Process, killAt func() time.Time) childproc.Result {
	done := make(chan childproc.Result, 1)
	go func() { done <- p.StopBy(killAt) }()
	select {
	case res := <-done:
		return res
	case <-r.killNow:
		p.Kill()
		return <-done
	}
}

// finish records the command's exit code and ends the run (--on-exit release).
func (r *runner) finish(code int) {
	r.mu.Lock()
	if r.exitCode == nil {
		r.exitCode = &code
	}
	r.mu.Unlock()
	r.cancelRun(fmt.Errorf("%w (exit code %d)", errCommandExited, code))
}

func (r *runner) setChild(p *childproc.Process) {
	r.mu.Lock()
	r.child = p
	r.mu.Unlock()
}

// killLeftover kills a child still running when Run returned (only after a
// shutdown timeout): it must not outlive the runner.
func (r *runner) killLeftover() {
	r.mu.Lock()
	p := r.child
	r.mu.Unlock()
	if p != nil {
		r.log.Warn("killing the command still running at exit", "pid", p.Pid())
		p.Stop(time.Time{})
	}
}

// YieldForExit lowers this process's CPU priority by ten nice levels, for
// a program about to exit once Main has returned (every lease released,
// the store closed): the exit's teardown of a Go process takes
// milliseconds of CPU that a successor starting on the same host needs
// more. Never call it while the process still holds a lock that other
// instances wait for (SQLite's write lock, say).
func YieldForExit() { cpuprio.Lower() }
