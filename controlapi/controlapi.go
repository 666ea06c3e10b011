package controlapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/masterjob/masterjob/store"
)

// BasePath is the path under which the handler serves, as in the seed.
const BasePath = "/api/mastercontrols"

// DefaultCallTimeout bounds each store call a request makes unless
// WithCallTimeout says otherwise.
const DefaultCallTimeout = 10 * time.Second

// DefaultCaller is recorded as who made a control change (the lock's
// ChangedBy, the history entry's Instance) when the request was not
// authenticated by a named token.
const DefaultCaller = "http"

// Option configures New.
type Option func(*config)

type config struct {
	tokens        []token
	tokenForReads bool
	log           *slog.Logger
	history       store.History
	maxBody       int64
	callTimeout   time.Duration
	origins       []string
	errs          []error
}

// token is an accepted bearer token, kept as its SHA-256 so that every
// comparison takes the same time whatever the candidate's length.
type token struct {
	sum    [sha256.Size]byte
	caller string
}

// WithToken requires "Authorization: Bearer <t>" on the mutating endpoints
// (and on the reads with WithTokenForReads). Changes made with it are
// recorded as made by DefaultCaller. t must be non-empty printable ASCII
// without spaces. Several tokens may be accepted (see WithNamedToken).
func WithToken(t string) Option { return WithNamedToken(DefaultCaller, t) }

// WithNamedToken is WithToken for a token that identifies its caller:
// changes made with it are recorded as made by caller (1 to 64 printable
// characters).
func WithNamedToken(caller, t string) Option {
	return func(c *config) {
		if err := checkToken(t); err != nil {
			c.errs = append(c.errs, err)
			return
		}
		if caller == "" || len(caller) > 64 || strings.IndexFunc(caller, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			c.errs = append(c.errs, fmt.Errorf("caller name %s: want 1 to 64 printable characters", echo(caller)))
			return
		}
		c.tokens = append(c.tokens, token{sum: sha256.Sum256([]byte(t)), caller: caller})
	}
}

func checkToken(t string) error {
	if t == "" {
		return errors.New("empty token")
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return errors.New("token: want printable ASCII without spaces")
		}
	}
	return nil
}

// WithTokenForReads requires the token on the read endpoints too. It needs
// WithToken or WithNamedToken.
func WithTokenForReads() Option { return func(c *config) { c.tokenForReads = true } }

// WithLogger sets the logger of refused and failed requests and of control
// changes (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithHistory sets where control changes are recorded and history is read
// from. By default the store itself, if it implements store.History;
// without a history, control changes are not recorded and the history
// endpoints answer 501.
func WithHistory(h store.History) Option { return func(c *config) { c.history = h } }

// WithMaxBodyBytes caps request bodies (default DefaultMaxBodyBytes, at
// least 1024).
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) {
		if n < 1024 {
			c.errs = append(c.errs, fmt.Errorf("max body bytes %d: want at least 1024", n))
			return
		}
		c.maxBody = n
	}
}

// WithCallTimeout bounds each store call a request makes (default
// DefaultCallTimeout); a store that does not answer in time gets 503.
func WithCallTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.errs = append(c.errs, fmt.Errorf("call timeout %v: want a positive duration", d))
			return
		}
		c.callTimeout = d
	}
}

// WithTrustedOrigin lets browsers on origin (such as
// "https://ops.example.com") send control requests from pages served
// elsewhere. By default the handler refuses cross-origin control requests
// from browsers (http.CrossOriginProtection); requests from other clients
// are not affected.
func WithTrustedOrigin(origin string) Option {
	return func(c *config) { c.origins = append(c.origins, origin) }
}

// Handler serves the control API. Create it with New; it is safe for
// concurrent use.
type Handler struct {
	st          store.Store
	history     store.History
	log         *slog.Logger
	tokens      []token
	readsAuth   bool
	maxBody     int64
	callTimeout time.Duration
	origins     *http.CrossOriginProtection
}

var _ http.Handler = (*Handler)(nil)

// New returns the control API on st. It fails on a nil store or an invalid
// option.
func New(st store.Store, opts ...Option) (*Handler, error) {
	if st == nil {
		return nil, errors.New("controlapi: nil store")
	}
	c := config{maxBody: DefaultMaxBodyBytes, callTimeout: DefaultCallTimeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tokenForReads && len(c.tokens) == 0 {
		c.errs = append(c.errs, errors.New("WithTokenForReads without a token"))
	}
	cop := http.NewCrossOriginProtection()
	for _, o := range c.origins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			c.errs = append(c.errs, fmt.Errorf("trusted origin: %w", err))
		}
	}
	if len(c.errs) > 0 {
		return nil, fmt.Errorf("controlapi: invalid option: %w", errors.Join(c.errs...))
	}
	h := &Handler{
		st:          st,
		history:     c.history,
		log:         c.log,
		tokens:      c.tokens,
		readsAuth:   c.tokenForReads,
		maxBody:     c.maxBody,
		callTimeout: c.callTimeout,
		origins:     cop,
	}
	if h.history == nil {
		h.history, _ = st.(store.History)
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.log = h.log.With("component", "controlapi")
	return h, nil
}

// Methods allowed on each kind of path.
const (
	allowRead  = "GET, HEAD"
	allowWrite = "POST"
)

// ServeHTTP routes a request whose path starts with BasePath.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")

	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), BasePath)
	if !ok || (rest != "" && rest[0] != '/') {
		h.notFound(w, r)
		return
	}
	rest = strings.TrimPrefix(rest, "/")
	var segs []string
	if rest != "" {
		segs = strings.Split(rest, "/")
	}
	switch {
	case len(segs) == 0:
		h.read(w, r, h.list)
	case len(segs) == 1 && segs[0] == "disable":
		h.write(w, r, true)
	case len(segs) == 1 && segs[0] == "enable":
		h.write(w, r, false)
	case len(segs) == 1 && segs[0] == "history":
		h.read(w, r, func(w http.ResponseWriter, r *http.Request) { h.events(w, r, "") })
	case len(segs) == 1 || (len(segs) == 2 && segs[1] == "history"):
		name, err := url.PathUnescape(segs[0])
		if err != nil {
			h.refuse(w, r, badRequest(fieldLockName, "lock name in the path is not validly percent-encoded"))
			return
		}
		serve := func(w http.ResponseWriter, r *http.Request) { h.one(w, r, name) }
		if len(segs) == 2 {
			serve = func(w http.ResponseWriter, r *http.Request) { h.events(w, r, name) }
		}
		h.read(w, r, func(w http.ResponseWriter, r *http.Request) {
			if rerr := checkLockName(name); rerr != nil {
				h.refuse(w, r, rerr)
				return
			}
			serve(w, r)
		})
	default:
		h.notFound(w, r)
	}
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.refuse(w, r, &requestError{status: http.StatusNotFound, Error: Error{
		Error: "no such endpoint: " + echo(r.URL.Path) + "; see " + BasePath,
	}})
}

// read serves a GET or HEAD endpoint.
func (h *Handler) read(w http.ResponseWriter, r *http.Request, serve http.HandlerFunc) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.methodNotAllowed(w, r, allowRead)
		return
	}
	if h.readsAuth {
		if _, ok := h.authenticate(w, r); !ok {
			return
		}
	}
	serve(w, r)
}

func (h *Handler) methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	h.refuse(w, r, &requestError{status: http.StatusMethodNotAllowed, Error: Error{
		Error: "method " + echo(r.Method) + " not allowed on " + echo(r.URL.Path) + "; allowed: " + allow,
	}})
}

// authenticate checks the bearer token, when tokens are configured, and
// returns the caller to record. On failure it has answered 401.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (caller string, ok bool) {
	if len(h.tokens) == 0 {
		return DefaultCaller, true
	}
	const challenge = `Bearer realm="masterjob"`
	values := r.Header.Values("Authorization")
	scheme, cred, found := "", "", false
	if len(values) == 1 {
		scheme, cred, found = strings.Cut(values[0], " ")
	}
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
		w.Header().Set("WWW-Authenticate", challenge)
		h.refuse(w, r, &requestError{status: http.StatusUnauthorized, Error: Error{
			Error: `missing bearer token: send "Authorization: Bearer <token>"`,
		}})
		return "", false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	match := -1
	for i, t := range h.tokens { // no early exit: the time taken does not depend on which token matched
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		w.Header().Set("WWW-Authenticate", challenge+`, error="invalid_token"`)
		h.refuse(w, r, &requestError{status: http.StatusUnauthorized, Error: Error{Error: "invalid bearer token"}})
		return "", false
	}
	return h.tokens[match].caller, true
}

// refuse answers a refused request and logs it.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, e *requestError) {
	lvl := slog.LevelDebug
	if e.status == http.StatusUnauthorized || e.status == http.StatusForbidden {
		lvl = slog.LevelWarn
	}
	h.log.Log(r.Context(), lvl, "request refused", "method", r.Method, "path", r.URL.Path,
		"remote", r.RemoteAddr, "status", e.status, "error", e.Error.Error, "field", e.Field)
	writeJSON(w, e.status, e.Error)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// storeFailed answers a failed store call without passing the backend's
// words on: they are logged.
func (h *Handler) storeFailed(w http.ResponseWriter, r *http.Request, op string, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	switch {
	case errors.Is(err, store.ErrInvalidLockName):
		h.refuse(w, r, badRequest(fieldLockName, "invalid lockName"))
		return
	case errors.Is(err, store.ErrClosed):
		status, msg = http.StatusServiceUnavailable, "the store is closed"
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusServiceUnavailable, "the store is unavailable; try again"
	case errors.Is(err, context.Canceled):
		status, msg = http.StatusServiceUnavailable, "request cancelled"
	}
	lvl := slog.LevelError
	if status == http.StatusServiceUnavailable {
		lvl = slog.LevelWarn
		w.Header().Set("Retry-After", "1")
	}
	h.log.Log(r.Context(), lvl, "store call failed", "op", op, "method", r.Method, "path", r.URL.Path,
		"remote", r.RemoteAddr, "status", status, "err", err)
	writeJSON(w, status, Error{Error: msg})
}

func (h *Handler) callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.callTimeout)
}

// list serves GET /api/mastercontrols[?lockName=...].
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	names, rerr := parseListQuery(r.URL.RawQuery)
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	ctx, cancel := h.callCtx(r)
	defer cancel()
	states, err := h.st.Locks(ctx, names...)
	if err != nil {
		h.storeFailed(w, r, "locks", err)
		return
	}
	out := LockList{Locks: make([]Lock, len(states))}
	for i, s := range states {
		out.Locks[i] = LockOf(s)
	}
	writeJSON(w, http.StatusOK, out)
}

// one serves GET /api/mastercontrols/{lockName}, name being valid. A lock
// the store has never seen is free and enabled.
func (h *Handler) one(w http.ResponseWriter, r *http.Request, name string) {
	if _, rerr := parseQuery(r.URL.RawQuery, nil); rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	ctx, cancel := h.callCtx(r)
	defer cancel()
	states, err := h.st.Locks(ctx, name)
	if err == nil && (len(states) != 1 || states[0].Lock != name) {
		err = fmt.Errorf("store returned %d states for one lock", len(states))
	}
	if err != nil {
		h.storeFailed(w, r, "locks", err)
		return
	}
	writeJSON(w, http.StatusOK, LockOf(states[0]))
}

// events serves the history endpoints; lock is the (valid) lock named in
// the path, or "" for /api/mastercontrols/history.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, lock string) {
	f, rerr := parseHistoryQuery(r.URL.RawQuery, lock)
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	if h.history == nil {
		writeJSON(w, http.StatusNotImplemented, Error{Error: "this store keeps no history"})
		return
	}
	ctx, cancel := h.callCtx(r)
	defer cancel()
	events, err := h.history.Events(ctx, f)
	if err != nil {
		h.storeFailed(w, r, "events", err)
		return
	}
	page := EventPage{Events: make([]Event, len(events))}
	for i, e := range events {
		page.Events[i] = EventOf(e)
	}
	if n := len(events); n > 0 && n >= store.EventsLimit(f.Limit) {
		page.NextBefore = events[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// write serves POST /api/mastercontrols/disable and .../enable.
func (h *Handler) write(w http.ResponseWriter, r *http.Request, disable bool) {
	if r.Method != http.MethodPost {
		h.methodNotAllowed(w, r, allowWrite)
		return
	}
	if err := h.origins.Check(r); err != nil {
		h.refuse(w, r, &requestError{status: http.StatusForbidden, Error: Error{Error: "cross-origin request refused"}})
		return
	}
	caller, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	if _, rerr := parseQuery(r.URL.RawQuery, nil); rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	if rerr := checkContentType(r.Header.Get("Content-Type")); rerr != nil {
		w.Header().Set("Accept-Post", "application/json")
		h.refuse(w, r, rerr)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.refuse(w, r, &requestError{status: http.StatusRequestEntityTooLarge, Error: Error{
				Error: fmt.Sprintf("request body longer than %d bytes", h.maxBody),
			}})
			return
		}
		h.refuse(w, r, badRequest("", "cannot read the request body"))
		return
	}
	req, rerr := decodeControlRequest(body)
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}

	ctx, cancel := h.callCtx(r)
	defer cancel()
	var (
		change store.ControlChange
		kind   store.EventKind
		op     string
	)
	if disable {
		op, kind = "disable", store.EventDisabled
		change, err = h.st.Disable(ctx, req.LockName, req.Reason, caller)
	} else {
		op, kind = "enable", store.EventEnabled
		change, err = h.st.Enable(ctx, req.LockName, caller)
	}
	if err != nil {
		h.storeFailed(w, r, op, err)
		return
	}
	res := ControlResult{Changed: change.Changed, Lock: LockOf(change.State), Message: message(disable, change)}
	h.log.Info("control request", "op", op, "lock", req.LockName, "changed", change.Changed,
		"reason", req.Reason, "by", caller, "remote", r.RemoteAddr)
	if change.Changed && h.history != nil {
		e := store.Event{Lock: req.LockName, Kind: kind, Instance: caller, Reason: req.Reason, Remote: r.RemoteAddr}
		if change.State.Held() {
			e.Token = change.State.Token // the lease the change concerns
		}
		if err := h.history.AppendEvents(ctx, []store.Event{e}); err != nil {
			h.log.Warn("control change not recorded in the history", "op", op, "lock", req.LockName, "err", err)
			res.Warning = "the change was made but could not be recorded in the history"
		}
	}
	writeJSON(w, http.StatusOK, res)
}

func message(disable bool, c store.ControlChange) string {
	s := c.State
	switch {
	case disable && c.Changed && s.Held():
		return fmt.Sprintf("lock %q disabled; its master %q stops its job within one heartbeat", s.Lock, s.Holder)
	case disable && c.Changed:
		return fmt.Sprintf("lock %q disabled; no instance will become its master until it is enabled", s.Lock)
	case disable:
		return fmt.Sprintf("lock %q was already disabled", s.Lock)
	case c.Changed:
		return fmt.Sprintf("lock %q enabled; one instance will become its master and start the job", s.Lock)
	default:
		return fmt.Sprintf("lock %q was already enabled", s.Lock)
	}
}
