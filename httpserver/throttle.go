package httpserver

import (
	"container/list"
	"encoding/json"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Defaults of AuthThrottle.
const (
	DefaultAuthBurst      = 10
	DefaultAuthInterval   = time.Second
	DefaultAuthMaxClients = 10000
)

// AuthThrottle slows down clients that keep sending wrong tokens. Each
// client address (an IPv4 address, or the /64 of an IPv6 one) has a
// budget of Burst refused requests, refilled by one every Interval. A
// request that carries an Authorization header and is refused with 401
// spends one; once the budget is spent, the address's requests that carry
// an Authorization header get 429 Too Many Requests with Retry-After,
// without the token being checked, until the budget refills. Requests
// without the header pass (they guess nothing), and so do other addresses.
// With the defaults, one address can have at most 10 tokens checked at
// once and one a second after that.
//
// At most MaxClients addresses are remembered (about 100 bytes each); when
// full, the one refused least recently is forgotten. Behind a reverse
// proxy every client has the proxy's address: they share one budget.
//
// The zero value is the defaults (the Default* constants); Disabled turns
// the throttle off.
type AuthThrottle struct {
	Burst      int
	Interval   time.Duration
	MaxClients int
	Disabled   bool
}

func (a AuthThrottle) withDefaults() AuthThrottle {
	if a.Burst <= 0 {
		a.Burst = DefaultAuthBurst
	}
	if a.Interval <= 0 {
		a.Interval = DefaultAuthInterval
	}
	if a.MaxClients <= 0 {
		a.MaxClients = DefaultAuthMaxClients
	}
	return a
}

// throttle is the state of an AuthThrottle.
type throttle struct {
	cfg  AuthThrottle
	log  *slog.Logger
	now  func() time.Time
	next http.Handler

	mu      sync.Mutex
	clients map[netip.Prefix]*list.Element // of *budget
	lru     list.List                      // front: refused most recently
}

// budget is one address's budget of refused requests.
type budget struct {
	key       netip.Prefix
	tokens    float64   // at the time of last
	last      time.Time // when tokens was computed
	throttled bool      // logged as throttled since its budget was last full
}

func newThrottle(cfg AuthThrottle, log *slog.Logger, next http.Handler) *throttle {
	return &throttle{
		cfg: cfg.withDefaults(), log: log, now: time.Now, next: next,
		clients: make(map[netip.Prefix]*list.Element),
	}
}

// clientKey returns the budget key of a request's remote address: its
// IPv4 address, or the /64 of its IPv6 one. ok is false when the address
// cannot be parsed (then the request is not throttled).
func clientKey(remoteAddr string) (netip.Prefix, bool) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// refill returns b's tokens at now.
func (t *throttle) refill(b *budget, now time.Time) float64 {
	elapsed := now.Sub(b.last)
	if elapsed < 0 {
		elapsed = 0
	}
	return math.Min(float64(t.cfg.Burst), b.tokens+float64(elapsed)/float64(t.cfg.Interval))
}

// wait returns how long key must wait before its next request with a
// token is checked: 0 when it may go now.
func (t *throttle) wait(key netip.Prefix) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.clients[key]
	if !ok {
		return 0
	}
	b := e.Value.(*budget)
	now := t.now()
	tokens := t.refill(b, now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) * float64(t.cfg.Interval))
}

// refused spends one of key's budget; it reports whether the address just
// ran out (to be logged once).
func (t *throttle) refused(key netip.Prefix) (ranOut bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	e, ok := t.clients[key]
	var b *budget
	if ok {
		b = e.Value.(*budget)
		b.tokens = t.refill(b, now)
		if b.tokens >= float64(t.cfg.Burst) {
			b.throttled = false
		}
		t.lru.MoveToFront(e)
	} else {
		b = &budget{key: key, tokens: float64(t.cfg.Burst)}
		t.clients[key] = t.lru.PushFront(b)
		for t.lru.Len() > t.cfg.MaxClients {
			old := t.lru.Back()
			t.lru.Remove(old)
			delete(t.clients, old.Value.(*budget).key)
		}
	}
	b.last = now
	b.tokens = math.Max(0, b.tokens-1)
	if b.tokens < 1 && !b.throttled {
		b.throttled = true
		return true
	}
	return false
}

// remembered returns the number of addresses remembered.
func (t *throttle) remembered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

func (t *throttle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(r.Header.Values("Authorization")) == 0 {
		t.next.ServeHTTP(w, r)
		return
	}
	key, ok := clientKey(r.RemoteAddr)
	if !ok {
		t.next.ServeHTTP(w, r)
		return
	}
	if d := t.wait(key); d > 0 {
		secs := int(math.Ceil(d.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusTooManyRequests)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"error": "too many requests with a wrong token from this address; retry after " + strconv.Itoa(secs) + "s",
		})
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	t.next.ServeHTTP(sw, r)
	if sw.status == http.StatusUnauthorized && t.refused(key) {
		t.log.Warn("client sent too many wrong tokens: throttled", "component", "httpserver",
			"remote", key.String(), "burst", t.cfg.Burst, "one_more_every", t.cfg.Interval)
	}
}

// statusWriter records the status of a response. Unwrap keeps
// http.ResponseController's deadlines and flushing reachable.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush serves handlers that assert http.Flusher rather than use
// http.ResponseController.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}
