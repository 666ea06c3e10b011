// Package health serves liveness and readiness probes for masterjob
// processes, fit for Kubernetes httpGet probes:
//
//	mux.Handle("/healthz", health.Liveness())
//	mux.Handle("/readyz", health.Readiness(func(context.Context) error { return ex.Ready() }))
//
// A node that runs no executor (masterjob serve) is ready when its store
// answers:
//
//	mux.Handle("/readyz", health.Readiness(health.StorePing(st)))
//
// Liveness answers 200 "ok" for as long as the process serves HTTP: it
// checks nothing else, so that a store outage (which the executor survives
// on its own) never gets the process restarted. Readiness answers 200 "ok"
// when its check returns nil and 503 with the reason otherwise; with
// masterjob.Executor.Ready that is when Run is not running, the last store
// round trip failed, or a job is still running past its lease's trust
// window.
//
// The 503 body names the reason in general terms ("store unreachable");
// the check's full error, which may hold a backend's words (host names,
// user names), is logged, and sent only with WithDetails. Both handlers
// answer text by default and JSON to clients that accept
// application/json (or ask with ?format=json), and refuse methods other
// than GET and HEAD with 405.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store"
)

// DefaultTimeout bounds a readiness check unless WithTimeout says otherwise.
const DefaultTimeout = 2 * time.Second

// PingLock is the lock name StorePing reads. Reading a lock the store does
// not know creates nothing.
const PingLock = "masterjob-readyz-ping"

// Status is the JSON body of both probes.
type Status struct {
	// Status is "ok" or "not ready".
	Status string `json:"status"`
	// Reason says, in general terms, why the process is not ready.
	Reason string `json:"reason,omitempty"`
	// Error is the check's full error; only with WithDetails.
	Error string `json:"error,omitempty"`
}

// Status values.
const (
	StatusOK       = "ok"
	StatusNotReady = "not ready"
)

// Option configures Readiness.
type Option func(*config)

type config struct {
	timeout time.Duration
	details bool
	log     *slog.Logger
}

// WithTimeout bounds each check (default DefaultTimeout): the check's
// context expires after d, and a check that has not returned by then (even
// one that ignores its context) makes the probe answer 503. Values not
// above zero keep the default.
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithDetails sends the check's full error in 503 responses. Use it only
// where the probe endpoint is not reachable by untrusted clients.
func WithDetails() Option { return func(c *config) { c.details = true } }

// WithLogger sets the logger of failed checks (default slog.Default()).
// Each change between ready and not ready is logged once, at Warn and Info.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Liveness returns the handler of /healthz: 200 "ok" to GET and HEAD while
// the process serves HTTP.
func Liveness() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed(w, r) {
			return
		}
		respond(w, r, http.StatusOK, Status{Status: StatusOK})
	})
}

// Readiness returns the handler of /readyz: 200 "ok" when check returns
// nil, 503 with the reason otherwise. check gets the request's context,
// bounded by the timeout (WithTimeout); it is called once per request, so it
// should be cheap. A nil check is always ready.
func Readiness(check func(ctx context.Context) error, opts ...Option) http.Handler {
	c := config{timeout: DefaultTimeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	return &readiness{check: check, cfg: c, log: c.log.With("component", "health")}
}

type readiness struct {
	check func(ctx context.Context) error
	cfg   config
	log   *slog.Logger

	// lastReady is the state of the last answer (stateReady or
	// stateNotReady, 0 before the first); it keeps the log to one line per
	// change.
	lastReady atomic.Int32
}

const (
	stateReady int32 = 1 + iota
	stateNotReady
)

func (rd *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	err := rd.run(r.Context())
	if err == nil {
		if rd.lastReady.Swap(stateReady) == stateNotReady {
			rd.log.Info("ready again")
		}
		respond(w, r, http.StatusOK, Status{Status: StatusOK})
		return
	}
	st := Status{Status: StatusNotReady, Reason: Reason(err)}
	if rd.cfg.details {
		st.Error = err.Error()
	}
	if rd.lastReady.Swap(stateNotReady) != stateNotReady {
		rd.log.Warn("not ready", "reason", st.Reason, "err", err)
	} else {
		rd.log.Debug("not ready", "reason", st.Reason, "err", err)
	}
	w.Header().Set("Retry-After", "1")
	respond(w, r, http.StatusServiceUnavailable, st)
}

// run calls the check with the timeout, without waiting past it for a
// check that ignores its context.
func (rd *readiness) run(ctx context.Context) error {
	if rd.check == nil {
		return nil
	}
	ctx, cancel := context.WithTimeoutCause(ctx, rd.cfg.timeout, errCheckTimeout)
	defer cancel()
	done := make(chan error, 1) // buffered: a late check does not leak
	go func() { done <- rd.check(ctx) }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return errCheckTimeout
		}
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

var errCheckTimeout = errors.New("health: readiness check timed out")

// Reason returns the general reason for a check's error that a 503 names:
// the meaning of the first masterjob or store sentinel err wraps, or "not
// ready" for any other error.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, masterjob.ErrNotRunning):
		return "executor not running"
	case errors.Is(err, masterjob.ErrPastTrustWindow):
		return "a job is running past its lease's trust window"
	case errors.Is(err, masterjob.ErrStoreUnreachable), errors.Is(err, store.ErrUnavailable):
		return "store unreachable"
	case errors.Is(err, store.ErrClosed), errors.Is(err, masterjob.ErrClosed):
		return "shutting down"
	case errors.Is(err, errCheckTimeout), errors.Is(err, context.DeadlineExceeded):
		return "readiness check timed out"
	case errors.Is(err, context.Canceled):
		return "request cancelled"
	}
	return StatusNotReady
}

// StorePing returns a readiness check that reads one lock (PingLock) from
// st: ready when the store answers. Bound it with Readiness's timeout.
func StorePing(st store.Store) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := st.Locks(ctx, PingLock)
		return err
	}
}

// allowed answers 405 to methods other than GET and HEAD.
func allowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// respond writes st as JSON to clients that want it, else as text: "ok",
// or "not ready: reason".
func respond(w http.ResponseWriter, r *http.Request, code int, st Status) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if wantsJSON(r) {
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(st)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	text := st.Status
	if st.Reason != "" {
		text += ": " + st.Reason
	}
	if st.Error != "" {
		text += " (" + st.Error + ")"
	}
	_, _ = w.Write([]byte(text + "\n"))
}

func wantsJSON(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}
