package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/internal/childproc"
	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// The last will of a runner. When a runner dies while its command runs (a
// SIGKILL, the OOM killer, a crash), its supervisor kills the command and
// everything it started, as it always has; then, once they are all gone,
// it runs this program again as the runner's last will, which releases the
// lease at once, fenced on the runner's instance and the lease's token. The
// next master starts within milliseconds instead of after the lease's
// expiry. This is safe because nothing of the dead mastership is left to
// act: the runner is dead (the supervisor has been reparented) and the
// command and its descendants have been reaped; a release whose token no
// longer matches (the lease had moved on) changes nothing. When the host,
// the network or the supervisor dies too, there is no will, and the lease
// expires as before.
//
// The will is this program with LastWillArg as its first argument (Main
// runs it: not a package's init, which may run before the init that
// registers the store's engine, as etcd's is in the masterjob command;
// this package's TestMain runs it in the test binary), in the command's
// environment (the runner's without its secrets: the store's settings,
// PG* variables, ETCDCTL_* and the like; the lease; the runner's pid)
// with the store's URL and the will's own settings added.
//
// A program other than the masterjob command that runs `run` through Main
// in its own process is re-executed by the supervisor with LastWillArg as
// its first argument: it must pass such arguments to Main.
const LastWillArg = "__masterjob-last-will"

// Environment of the last will, beside EnvStore, and childproc's lease
// variables and EnvRunnerPID, which the command's environment has.
const (
	envWillLogFormat = "MASTERJOB_WILL_LOG_FORMAT"
	envWillTimeout   = "MASTERJOB_WILL_TIMEOUT"
)

// defaultWillTimeout bounds the will's work when its environment does not:
// the runner gives it its lease's length (masterJobTolerance), after which
// the lease expires by itself anyway and the will has nothing left to win.
const defaultWillTimeout = 30 * time.Second

// willExitGrace is how long past its bound a will waits for a store call
// that overruns its context before it exits anyway.
const willExitGrace = 100 * time.Millisecond

// lastWill returns the will that the supervisor of a command runs if this
// runner dies: the entries it adds to the command's environment.
func (r *runner) lastWill() childproc.LastWill {
	return childproc.LastWill{Args: []string{LastWillArg}, Env: []string{
		EnvStore + "=" + r.store.Unredacted(),
		envWillLogFormat + "=" + r.logFormat,
		envWillTimeout + "=" + r.cfg.Tolerance.String(),
	}}
}

// runLastWill releases the lease that the environment names, if its
// instance still holds it, and removes the instance from the member list;
// it returns the exit code.
func runLastWill(ctx context.Context, lookupEnv func(string) (string, bool), stderr io.Writer) int {
	// Its standard error may be a pipe that only the dead runner read: a
	// log line must not end the will (SIGPIPE) before its work is done.
	signal.Ignore(syscall.SIGPIPE)
	get := func(k string) string { v, _ := lookupEnv(k); return v }
	format := get(envWillLogFormat)
	if format != "json" {
		format = "text"
	}
	lock, instance, runner := get(childproc.EnvLock), get(childproc.EnvInstance), get(childproc.EnvRunnerPID)
	log := newLogger(stderr, format, "info").With("lock", lock, "instance", instance, "runner_pid", runner)
	defer flushLog(log)
	token, err := strconv.ParseInt(get(childproc.EnvToken), 10, 64)
	if err != nil || lock == "" || instance == "" {
		log.Error("last will: incomplete (this mode is only for a supervisor's use)", "token", get(childproc.EnvToken))
		return ExitUsage
	}
	u, err := storeurl.Parse(get(EnvStore))
	if err != nil {
		log.Error("last will: bad store URL", "err", err)
		return ExitUsage
	}
	timeout, err := time.ParseDuration(get(envWillTimeout))
	if err != nil || timeout <= 0 {
		timeout = defaultWillTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A store call may overrun its context (SQLite waiting on a write lock
	// held by a frozen process ends at its next retry): the will ends at
	// its bound whatever it is waiting for.
	hard := time.AfterFunc(timeout+willExitGrace, func() {
		log.Error("the runner died; its last will ran out of time, so the lease expires by itself", "timeout", timeout)
		flushLog(log)
		os.Exit(ExitFailure)
	})
	defer hard.Stop()
	fail := func(what string, err error) int {
		log.Error("the runner died; cannot "+what+", so the lease expires by itself",
			"token", token, "store", u.String(), "err", err)
		return ExitFailure
	}
	trace.Mark("will.started", lock)
	// The runner created or upgraded the tables when it opened the store.
	// The will creates nothing: a store removed since (a schema dropped, a
	// file deleted) stays removed, and the will only fails to open it.
	st, err := u.WithoutMigrate().Open(ctx)
	if err != nil {
		return fail("open the store", err)
	}
	defer st.Close()
	trace.Mark("will.opened", lock)
	states, err := st.Locks(ctx, lock)
	if err != nil {
		return fail("read the lock", err)
	}
	if len(states) != 1 || states[0].Holder != instance || states[0].Token != token {
		log.Info("the runner died; its lease had already ended", "token", token)
	} else {
		if err := st.Release(ctx, instance, []store.LeaseRef{{Lock: lock, Token: token}}); err != nil {
			return fail("release the lease", err)
		}
		trace.Mark("will.released", lock)
		if h, ok := st.(store.History); ok {
			e := store.Event{Lock: lock, Kind: store.EventReleased, Instance: instance, Token: token,
				Reason: fmt.Sprintf("the runner (pid %s) died; its supervisor released the lease once the command had exited", runner)}
			if err := h.AppendEvents(ctx, []store.Event{e}); err != nil {
				log.Warn("cannot record the release in the history", "err", err)
			}
		}
		log.Info("the runner died; released its lease once its command and everything it started had exited", "token", token)
	}
	if m, ok := st.(store.Membership); ok {
		if err := m.Leave(ctx, instance); err != nil {
			log.Warn("cannot remove the dead runner from the member list; it expires by itself", "err", err)
		}
	}
	return ExitOK
}
