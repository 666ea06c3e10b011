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
	"net"
	"net/http"
	"path"
	"slices"
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
	hosts         []string
	anyHost       bool
	maxInFlight   int
	maxStreams    int
	heartbeat     time.Duration
	poll          time.Duration
	streamBuffer  int
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

// WithAllowedHosts adds host names (such as "ops.example.com", without a
// port) that a handler without a token answers besides the loopback ones;
// "*" answers every host. See HostAllowed. With a token it changes
// nothing.
func WithAllowedHosts(hosts ...string) Option {
	return func(c *config) {
		for _, host := range hosts {
			switch {
			case host == "*":
				c.anyHost = true
			case host == "" || strings.ContainsAny(host, ":/ \t\r\n"):
				c.errs = append(c.errs, fmt.Errorf("allowed host %s: want a host name without a port, or \"*\"", echo(host)))
			default:
				c.hosts = append(c.hosts, strings.ToLower(strings.TrimSuffix(host, ".")))
			}
		}
	}
}

// DefaultMaxInFlight is how many reads, and how many control requests,
// the handler lets call the store at once unless WithMaxInFlight says
// otherwise.
const DefaultMaxInFlight = 2

// BusyWait is how long a request waits for its turn when the handler
// already serves its maximum of requests in flight, before it is answered
// 503 with Retry-After.
const BusyWait = 100 * time.Millisecond

// WithMaxInFlight sets how many reads, and separately how many disable
// and enable requests, may call the store at once (default
// DefaultMaxInFlight, at least 1). A request beyond that waits up to
// BusyWait for its turn, then gets 503 with "Retry-After: 1". The bound
// keeps a flood of requests from taking the process's CPU and the store's
// connections from the executor beside it.
func WithMaxInFlight(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("max in flight %d: want at least 1", n))
			return
		}
		c.maxInFlight = n
	}
}

// Handler serves the control API. Create it with New; it is safe for
// concurrent use.
type Handler struct {
	st           store.Store
	history      store.History
	log          *slog.Logger
	tokens       []token
	readsAuth    bool
	maxBody      int64
	callTimeout  time.Duration
	origins      *http.CrossOriginProtection
	hosts        []string // names allowed in Host besides loopback ones, lower case
	anyHost      bool
	reads        chan struct{} // a slot per read calling the store
	writes       chan struct{} // a slot per control request calling the store
	streams      chan struct{} // a slot per open event stream
	heartbeat    time.Duration
	poll         time.Duration
	streamBuffer int
	feed         feed
	memberCache  memberCache
	mux          *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New returns the control API on st. It fails on a nil store or an invalid
// option.
func New(st store.Store, opts ...Option) (*Handler, error) {
	if st == nil {
		return nil, errors.New("controlapi: nil store")
	}
	c := config{maxBody: DefaultMaxBodyBytes, callTimeout: DefaultCallTimeout, maxInFlight: DefaultMaxInFlight,
		maxStreams: DefaultMaxStreams, heartbeat: DefaultHeartbeat, poll: DefaultPollInterval, streamBuffer: DefaultStreamBuffer}
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
		st:           st,
		history:      c.history,
		log:          c.log,
		tokens:       c.tokens,
		readsAuth:    c.tokenForReads,
		maxBody:      c.maxBody,
		callTimeout:  c.callTimeout,
		origins:      cop,
		hosts:        c.hosts,
		anyHost:      c.anyHost,
		reads:        make(chan struct{}, c.maxInFlight),
		writes:       make(chan struct{}, c.maxInFlight),
		streams:      make(chan struct{}, c.maxStreams),
		heartbeat:    c.heartbeat,
		poll:         c.poll,
		streamBuffer: c.streamBuffer,
	}
	h.feed.h = h
	h.mux = h.routes()
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

// The endpoints' paths, below BasePath.
const (
	pathDisable     = "/disable"
	pathEnable      = "/enable"
	pathHistory     = "/history"
	pathHandoff     = "/handoff"
	pathEvents      = "/events"
	pathLocks       = "/locks"
	pathLockValue   = "lockName" // the path wildcard
	lockPathHint    = "read one lock at " + BasePath + pathLocks + "/{lockName} (percent-encoded)"
	historyPathHint = "and its history at " + BasePath + pathHistory + "/{lockName}"
)

// routes returns the handler's ServeMux. The lock name is always the last
// part of a path and takes the whole rest of it ({lockName...}), so that
// every valid name, "/" included, has a path: GET /api/mastercontrols/disable
// is the endpoint's (405), GET /api/mastercontrols/locks/disable the lock's.
// Methods are checked by the handlers, so that a wrong one gets the API's
// JSON 405 with its Allow header.
func (h *Handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	list := h.reader(h.list)
	mux.Handle(BasePath, list)
	mux.Handle(BasePath+"/{$}", list)
	mux.HandleFunc(BasePath+pathDisable, func(w http.ResponseWriter, r *http.Request) { h.write(w, r, true) })
	mux.HandleFunc(BasePath+pathEnable, func(w http.ResponseWriter, r *http.Request) { h.write(w, r, false) })
	mux.HandleFunc(BasePath+pathHandoff, h.handoffRequest)
	mux.Handle(BasePath+pathEvents, h.reader(h.stream))
	mux.Handle(InstancesPath, h.reader(h.instances))
	mux.Handle(BasePath+pathHistory, h.reader(func(w http.ResponseWriter, r *http.Request) { h.events(w, r, "") }))
	mux.Handle(BasePath+pathHistory+"/{"+pathLockValue+"...}", h.reader(h.lockPath(func(w http.ResponseWriter, r *http.Request, name string) {
		h.events(w, r, name)
	})))
	mux.Handle(BasePath+pathLocks+"/{"+pathLockValue+"...}", h.reader(h.lockPath(h.one)))
	mux.HandleFunc(BasePath+pathLocks, h.notFound) // not a redirect to .../locks/
	mux.HandleFunc("/", h.notFound)
	return mux
}

// ServeHTTP serves the endpoints below BasePath and InstancesPath; other
// paths get 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if !h.HostAllowed(r.Host) {
		h.refuse(w, r, &requestError{status: http.StatusMisdirectedRequest, Error: Error{
			Error: "host " + echo(r.Host) + " is not served: without a token the control API answers only requests " +
				"addressed to a loopback address or localhost (a defence against DNS rebinding); " +
				"use http://127.0.0.1:PORT or http://localhost:PORT, or set a token",
		}})
		return
	}
	if !canonicalPath(r.URL.EscapedPath()) {
		// Not to the ServeMux, which would answer with a redirect to the
		// cleaned path, in HTML.
		h.notFound(w, r)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// canonicalPath reports whether p, an escaped path, is absolute and has
// no empty, "." or ".." segment (but may end with "/").
func canonicalPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if c != "/" && strings.HasSuffix(p, "/") {
		c += "/"
	}
	return c == p
}

// HostAllowed reports whether the handler answers a request whose Host
// header is host (with or without a port). With a token, every host is
// answered. Without one, only a loopback address (127.0.0.0/8, ::1),
// "localhost" and the names of WithAllowedHosts are: a web page whose name
// its owner points at 127.0.0.1 (DNS rebinding) is a page of another
// origin to the browser, but its requests reach a loopback listener with
// that name in Host, and are refused (421). Package dashboard applies the
// same rule to its page when httpserver composes the two.
func (h *Handler) HostAllowed(host string) bool {
	if len(h.tokens) > 0 || h.anyHost {
		return true
	}
	if name, _, err := net.SplitHostPort(host); err == nil {
		host = name
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if host == "" {
		return false
	}
	if isLoopback(host) {
		return true
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, a := range h.hosts {
		if a == host {
			return true
		}
	}
	return false
}

// lockPath adapts a handler of one lock to the paths that end with its
// name: it checks the name first.
func (h *Handler) lockPath(serve func(w http.ResponseWriter, r *http.Request, name string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue(pathLockValue)
		if rerr := checkLockName(name); rerr != nil {
			h.refuse(w, r, rerr)
			return
		}
		serve(w, r, name)
	}
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request) {
	h.refuse(w, r, &requestError{status: http.StatusNotFound, Error: Error{
		Error: "no such endpoint: " + echo(r.URL.Path) + "; " + BasePath + " lists the locks; " + lockPathHint + ", " + historyPathHint +
			"; " + InstancesPath + " lists the instances",
	}})
}

// reader serves a GET or HEAD endpoint.
func (h *Handler) reader(serve http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
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

// begin takes one of the slots (h.reads or h.writes) for a request about
// to call the store, waiting up to BusyWait, and returns the context of
// its store calls and the func that ends them. When no slot frees in time
// it answers 503 with Retry-After and returns ok false.
func (h *Handler) begin(w http.ResponseWriter, r *http.Request, slots chan struct{}) (ctx context.Context, end func(), ok bool) {
	select {
	case slots <- struct{}{}:
	default:
		t := time.NewTimer(BusyWait)
		defer t.Stop()
		select {
		case slots <- struct{}{}:
		case <-t.C:
			w.Header().Set("Retry-After", "1")
			h.refuse(w, r, &requestError{status: http.StatusServiceUnavailable, Error: Error{
				Error: fmt.Sprintf("busy: %d requests are being served; try again", cap(slots)),
			}})
			return nil, nil, false
		case <-r.Context().Done():
			h.refuse(w, r, &requestError{status: http.StatusServiceUnavailable, Error: Error{Error: "request cancelled"}})
			return nil, nil, false
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.callTimeout)
	return ctx, func() { cancel(); <-slots }, true
}

// list serves GET /api/mastercontrols[?lockName=...&match=&state=&instance=&limit=&after=].
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	lq, rerr := parseListQuery(r.URL.RawQuery)
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	ctx, end, ok := h.begin(w, r, h.reads)
	if !ok {
		return
	}
	defer end()
	states, err := h.st.Locks(ctx, lq.names...)
	if err != nil {
		h.storeFailed(w, r, "locks", err)
		return
	}
	all := make([]Lock, len(states))
	holders := map[string]*Holder{} // each master's description, parsed once
	for i, s := range states {
		all[i] = lockOf(s, holders)
	}
	// Ordered by name byte by byte, whatever the database's collation:
	// the order the "after" cursor follows.
	if !slices.IsSortedFunc(all, byName) {
		slices.SortFunc(all, byName)
	}
	members, ok, err := h.allMembers(ctx)
	switch {
	case err != nil:
		// The locks are worth more than the standbys: answer without them.
		h.log.Warn("cannot read the member list; answering without standbys", "err", err)
	case ok:
		SetStandbys(all, members)
	}
	out := LockList{Summary: Summarize(all), Locks: []Lock{}}
	for _, l := range all {
		if !lq.filter.Matches(l) {
			continue
		}
		out.Total++
		switch {
		case lq.after != "" && l.LockName <= lq.after:
		case lq.limit > 0 && len(out.Locks) == lq.limit:
			out.NextAfter = out.Locks[len(out.Locks)-1].LockName
		default:
			out.Locks = append(out.Locks, l)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func byName(a, b Lock) int { return strings.Compare(a.LockName, b.LockName) }

// one serves GET /api/mastercontrols/locks/{lockName}, name being valid. A
// lock the store has no record of gets 404.
func (h *Handler) one(w http.ResponseWriter, r *http.Request, name string) {
	if _, rerr := parseQuery(r.URL.RawQuery, nil); rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	ctx, end, ok := h.begin(w, r, h.reads)
	if !ok {
		return
	}
	defer end()
	states, err := h.st.Locks(ctx, name)
	if err == nil && (len(states) != 1 || states[0].Lock != name) {
		err = fmt.Errorf("store returned %d states for one lock", len(states))
	}
	if err != nil {
		h.storeFailed(w, r, "locks", err)
		return
	}
	l := LockOf(states[0])
	if l.Unknown {
		h.refuse(w, r, &requestError{status: http.StatusNotFound, Error: Error{Field: fieldLockName,
			Error: "unknown lock " + echo(name) + ": the store has no record of it (no instance has been its master, and it was never disabled)",
		}})
		return
	}
	if ms, ok := h.st.(store.Membership); ok {
		members, err := ms.Members(ctx, store.MemberFilter{Lock: name})
		if err != nil {
			h.log.Warn("cannot read the member list; answering without candidates", "err", err)
		} else {
			l.Candidates = candidatesOf(l.Master, members)
			n := len(l.Candidates)
			if n > 0 && l.Candidates[0] == l.Master {
				n--
			}
			l.Standbys = &n
		}
	}
	writeJSON(w, http.StatusOK, l)
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
	ctx, end, ok := h.begin(w, r, h.reads)
	if !ok {
		return
	}
	defer end()
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

// controlBody checks a control request (POST, same origin, token, no
// query, JSON) and reads its body. It returns the caller to record; when
// ok is false it has answered.
func (h *Handler) controlBody(w http.ResponseWriter, r *http.Request) (caller string, body []byte, ok bool) {
	if r.Method != http.MethodPost {
		h.methodNotAllowed(w, r, allowWrite)
		return "", nil, false
	}
	if err := h.origins.Check(r); err != nil {
		h.refuse(w, r, &requestError{status: http.StatusForbidden, Error: Error{Error: "cross-origin request refused"}})
		return "", nil, false
	}
	caller, ok = h.authenticate(w, r)
	if !ok {
		return "", nil, false
	}
	if _, rerr := parseQuery(r.URL.RawQuery, nil); rerr != nil {
		h.refuse(w, r, rerr)
		return "", nil, false
	}
	if rerr := checkContentType(r.Header.Get("Content-Type")); rerr != nil {
		w.Header().Set("Accept-Post", "application/json")
		h.refuse(w, r, rerr)
		return "", nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.refuse(w, r, &requestError{status: http.StatusRequestEntityTooLarge, Error: Error{
				Error: fmt.Sprintf("request body longer than %d bytes", h.maxBody),
			}})
			return "", nil, false
		}
		h.refuse(w, r, badRequest("", "cannot read the request body"))
		return "", nil, false
	}
	return caller, body, true
}

// write serves POST /api/mastercontrols/disable and .../enable.
func (h *Handler) write(w http.ResponseWriter, r *http.Request, disable bool) {
	caller, body, ok := h.controlBody(w, r)
	if !ok {
		return
	}
	req, rerr := decodeControlRequest(body)
	if rerr == nil && disable && strings.TrimSpace(req.Reason) == "" {
		rerr = badRequest(fieldReason, "missing reason: a disable says why (status shows it, the history keeps it)")
	}
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}

	ctx, end, ok := h.begin(w, r, h.writes)
	if !ok {
		return
	}
	defer end()
	var (
		change store.ControlChange
		kind   store.EventKind
		op     string
		err    error
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

// message says what a control request did. It begins with the seed's
// sentence ("Flagged X as disabled", "X is already flagged as disabled",
// "X is flagged for (re)enablement"), which scripts written for the seed
// look for, and goes on with what follows.
func message(disable bool, c store.ControlChange) string {
	s := c.State
	switch {
	case disable && c.Changed && s.Held():
		return fmt.Sprintf("Flagged %s as disabled; its master %q stops its job within one heartbeat", s.Lock, s.Holder)
	case disable && c.Changed:
		return fmt.Sprintf("Flagged %s as disabled; no instance will become its master until it is enabled", s.Lock)
	case disable:
		return fmt.Sprintf("%s is already flagged as disabled; nothing changed", s.Lock)
	case c.Changed:
		return fmt.Sprintf("%s is flagged for (re)enablement; one instance will become its master and start the job", s.Lock)
	default:
		return fmt.Sprintf("%s is flagged for (re)enablement; it was not disabled, nothing changed", s.Lock)
	}
}
