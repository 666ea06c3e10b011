//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Engine lets a store kept in a module of its own (etcd) take part in
// chaos runs. The harness reaches it as it reaches PostgreSQL: each
// instance through a TCP Proxy of its own, which cuts and delays it. The
// program that runs the driver and its instances (a test binary of the
// engine's module) registers the engine with RegisterEngine in both.
type Engine struct {
	// Scheme is the URL scheme of the engine's store URLs ("etcd").
	Scheme string
	// Upstream returns the host:port the proxies forward to.
	Upstream func(storeURL string) (string, error)
	// Open opens the store of namespace ns (a run's own prefix or table
	// space), reaching the server through via (host:port of the
	// instance's proxy) when via is not empty.
	Open func(ctx context.Context, storeURL, ns, via string) (store.Store, error)
	// Drop removes namespace ns.
	Drop func(ctx context.Context, storeURL, ns string) error
	// Restart is the store-restart fault for instance index. all reports
	// that it took the store away from every instance (a restart of the
	// whole server) rather than from that one; detail describes it.
	Restart func(ctx context.Context, index int) (detail string, all bool, err error)
	// EndLease, when set, is the store-side loss fault (FaultLoss, and
	// the loss half of FaultCombo): it ends lock's current lease in
	// namespace ns behind its holder's back, as mode says (LossDelete:
	// remove the lock's record unless the lock is disabled; LossExpire:
	// make the lease expired for every reader, keeping the record), in
	// one atomic step, and returns the token and holder of the lease it
	// ended (0 and "" when none was held). Without it those kinds fail on
	// the engine: leave them out of Config.Kinds.
	EndLease func(ctx context.Context, storeURL, ns, lock, mode string) (token int64, holder string, err error)
	// RunnerURL, when set, lets the engine run in runner mode
	// (Config.Runner): it returns the store URL that `masterjob run
	// --store` accepts for namespace ns, reaching the server through via
	// (host:port of the instance's proxy). The program must then also
	// run the runners, their children and their last wills
	// (RunIfInstance), after the engine registered its URL schemes.
	RunnerURL func(storeURL, ns, via string) (string, error)
	// RunnerRestart says that Restart reaches a runner's connections too
	// (it restarts the whole server, say, rather than ending the
	// connections an instance's Open tagged): runner mode injects it only
	// then.
	RunnerRestart bool
}

// RunIfInstance runs this process as the driver started it and exits, when
// it is one of the driver's processes (EnvInstance is set, and its first
// argument names an instance, a runner, a runner's child or a runner's
// last will); otherwise it returns. A test binary that runs the driver
// calls it first thing in TestMain, or in an init that runs after the
// store's engine registered its URL schemes (a runner opens its store by
// URL).
func RunIfInstance() {
	if os.Getenv(EnvInstance) != "" && len(os.Args) > 1 && isSubcommand(os.Args[1]) {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// Slot returns the index of the instance this process is, when it is an
// instance process a driver started (EnvInstance): an engine's Open can tag
// the instance's server connections with it, so that its Restart finds
// them.
func Slot() (index int, ok bool) {
	index, _, ok = slotOf(os.Getenv(envSlot))
	return index, ok
}

// slotOf parses an envSlot value, "<slot>.<gen>".
func slotOf(v string) (index, gen int, ok bool) {
	i, g, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(i)
	if v == "" || err != nil || n < 0 {
		return 0, 0, false
	}
	gen, _ = strconv.Atoi(g)
	return n, gen, true
}

var (
	enginesMu sync.Mutex
	engines   = map[string]Engine{}
)

// RegisterEngine makes store URLs of e.Scheme usable by Run and Main.
func RegisterEngine(e Engine) {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	engines[e.Scheme] = e
}

// engineFor returns the engine of a store URL.
func engineFor(raw string) (Engine, bool) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return Engine{}, false
	}
	enginesMu.Lock()
	defer enginesMu.Unlock()
	e, ok := engines[strings.ToLower(scheme)]
	return e, ok
}

// proxied reports whether instances reach the store through proxies.
func (s storeSpec) proxied() bool { return s.kind == kindPostgres || s.engine != nil }

// faultRestartEngine is the store-restart fault of an engine.
func (d *driver) faultRestartEngine(ctx context.Context, r *FaultRecord, s *slot) {
	d.storeMu.Lock() // never under a store-side loss's call
	from := Mono()
	detail, all, err := d.spec.engine.Restart(ctx, s.index)
	to := Mono()
	d.storeMu.Unlock()
	if err != nil {
		r.Err = err.Error()
		return
	}
	r.Detail = detail
	if all {
		// No instance had a store meanwhile.
		for _, o := range d.slots {
			d.down(Window{Index: o.index, From: from, To: to, Cause: "store-restart"})
		}
	}
	w := Window{Index: s.index, From: from, To: to + int64(d.cfg.Timing.Check), Cause: "store-restart"}
	d.mu.Lock()
	d.tl.Degraded = append(d.tl.Degraded, w)
	d.mu.Unlock()
	d.record("degraded", w)
}

// endLease is the store-side loss on an engine (Engine.EndLease).
func (s storeSpec) endLease(ctx context.Context, ns, lock, mode string) (int64, string, error) {
	if s.engine.EndLease == nil {
		return 0, "", fmt.Errorf("store-side loss: the %s engine has no EndLease hook", s.engine.Scheme)
	}
	return s.engine.EndLease(ctx, s.dsn, ns, lock, mode)
}

// retryUnavailable calls fn until it succeeds, fails otherwise than with
// store.ErrUnavailable, or ctx is done: the driver's own control calls
// wait out a restart of the whole store (an engine's store-restart), as
// an operator would retry.
func retryUnavailable[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	for {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := fn(callCtx)
		cancel()
		if err == nil || !errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
