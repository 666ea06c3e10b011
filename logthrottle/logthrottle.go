// Package logthrottle keeps repeated log lines from flooding the log: a
// slog.Handler wrapper that passes the first lines of each kind in a time
// window, drops the rest, and then says how many it dropped.
//
// Lines a remote client or an outage can trigger at will (a refused
// request, a failed store call, a TLS handshake error) are otherwise
// logged once per event: tens of thousands of lines a second. Wrapped,
// each kind of line costs at most Burst lines and one summary per Window:
//
//	h := logthrottle.New(slog.NewJSONHandler(os.Stderr, nil), logthrottle.Options{})
//	log := slog.New(h)
//
// A line's kind is its level, its message, the attributes and groups its
// logger was given (Logger.With, WithGroup: a component, a lock) and the
// values of the record attributes named in Options.KeyAttrs. The summary,
// logged when a window in which lines were dropped ends, has the level of
// the dropped lines, the message "repeated log lines suppressed", and the
// attributes suppressed_msg (the dropped lines' message), suppressed (how
// many) and window, then the attributes of the last dropped line in the
// group "last". Flush logs the summaries of the windows still open (at
// exit).
//
// Memory is bounded: at most MaxKinds kinds are tracked; past that, lines
// are throttled by level and message alone, and past that again, all
// together.
package logthrottle

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultBurst    = 10
	DefaultWindow   = 10 * time.Second
	DefaultMaxKinds = 1000
)

// SummaryMessage is the message of the summary of dropped lines.
const SummaryMessage = "repeated log lines suppressed"

// Options configure New. A zero field takes its default.
type Options struct {
	// Burst is how many lines of one kind pass in a window (default
	// DefaultBurst).
	Burst int
	// Window is the length of a window, which starts with the first line
	// of its kind (default DefaultWindow).
	Window time.Duration
	// KeyAttrs names record attributes (top level) whose values are part
	// of a line's kind, such as "lock" for lines about one of many locks.
	// Name only attributes whose values the program chooses: values a
	// remote client chooses would make as many kinds (MaxKinds bounds
	// them).
	KeyAttrs []string
	// MaxKinds bounds the kinds tracked at once (default DefaultMaxKinds).
	MaxKinds int
}

// Handler is the slog.Handler New returns. Its methods are safe for
// concurrent use; handlers derived from it (WithAttrs, WithGroup) share
// its state.
type Handler struct {
	inner slog.Handler
	scope string // the attributes and groups of WithAttrs and WithGroup, as text
	st    *state
}

// state is what a Handler and the handlers derived from it share.
type state struct {
	opts Options

	mu        sync.Mutex
	kinds     map[string]*kind
	overflow  map[string]*kind // by level and message, once kinds is full
	all       *kind            // once overflow is full too
	lastSweep time.Time        // when kinds and overflow were last swept
}

// kind is one kind of line in its current window.
type kind struct {
	key     string
	table   map[string]*kind // the map it is in (nil for all)
	inner   slog.Handler     // the handler of its first line, for the summary
	start   time.Time
	passed  int
	dropped int
	level   slog.Level // highest level dropped
	msg     string
	last    []slog.Attr // attributes of the last line dropped
	timer   *time.Timer // set once a line was dropped: logs the summary
}

// New returns a Handler that passes to h what it does not drop.
func New(h slog.Handler, opts Options) *Handler {
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxKinds <= 0 {
		opts.MaxKinds = DefaultMaxKinds
	}
	opts.KeyAttrs = append([]string(nil), opts.KeyAttrs...)
	return &Handler{inner: h, st: &state{
		opts: opts, kinds: make(map[string]*kind), overflow: make(map[string]*kind),
	}}
}

// Enabled reports whether the wrapped handler handles level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// WithAttrs returns a Handler whose lines carry attrs, of their own kinds.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	var b strings.Builder
	b.WriteString(h.scope)
	for _, a := range attrs {
		b.WriteString(" ")
		b.WriteString(a.String())
	}
	return &Handler{inner: h.inner.WithAttrs(attrs), scope: b.String(), st: h.st}
}

// WithGroup returns a Handler whose lines' attributes are in group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &Handler{inner: h.inner.WithGroup(name), scope: h.scope + " {" + name, st: h.st}
}

// Handle passes r on, or drops it when its kind passed Burst lines in
// the current window.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if h.st.admit(h, r) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

// Flush logs the summaries of the windows in which lines were dropped and
// that have not ended yet, and forgets every kind.
func (h *Handler) Flush(ctx context.Context) {
	s := h.st
	s.mu.Lock()
	var pending []*kind
	for _, table := range []map[string]*kind{s.kinds, s.overflow} {
		for _, k := range table {
			if k.timer != nil && k.timer.Stop() {
				pending = append(pending, k)
			}
			delete(table, k.key)
		}
	}
	if s.all != nil {
		if s.all.timer != nil && s.all.timer.Stop() {
			pending = append(pending, s.all)
		}
		s.all = nil
	}
	summaries := make([]slog.Record, 0, len(pending))
	for _, k := range pending {
		summaries = append(summaries, k.summary(time.Now()))
	}
	s.mu.Unlock()
	for i, k := range pending {
		logSummary(ctx, k.inner, summaries[i])
	}
}

// admit counts r and reports whether it passes.
func (s *state) admit(h *Handler, r slog.Record) bool {
	key := h.key(r)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.find(h, key, r, now)
	if k.timer == nil && now.Sub(k.start) >= s.opts.Window {
		// The window ended without drops: a new one starts.
		k.start, k.passed = now, 0
	}
	if k.passed < s.opts.Burst {
		k.passed++
		return true
	}
	k.dropped++
	k.level = max(k.level, r.Level)
	k.last = k.last[:0]
	r.Attrs(func(a slog.Attr) bool {
		k.last = append(k.last, a)
		return true
	})
	if k.timer == nil {
		k.timer = time.AfterFunc(max(0, k.start.Add(s.opts.Window).Sub(now)), func() { s.endWindow(k) })
	}
	return false
}

// find returns the kind of key (a record of handler h), creating it.
// Past MaxKinds, lines fall back to a kind by level and message alone,
// then to one kind for all.
func (s *state) find(h *Handler, key string, r slog.Record, now time.Time) *kind {
	if k, ok := s.kinds[key]; ok {
		return k
	}
	if len(s.kinds) >= s.opts.MaxKinds || len(s.overflow) >= s.opts.MaxKinds {
		s.sweep(now)
	}
	table := s.kinds
	if len(s.kinds) >= s.opts.MaxKinds {
		key = r.Level.String() + "\x00" + r.Message
		if k, ok := s.overflow[key]; ok {
			return k
		}
		table = s.overflow
		if len(s.overflow) >= s.opts.MaxKinds {
			if s.all == nil {
				s.all = &kind{inner: h.inner, start: now, msg: "(many kinds)", level: r.Level}
			}
			return s.all
		}
	}
	k := &kind{key: key, table: table, inner: h.inner, start: now, msg: r.Message, level: r.Level}
	table[key] = k
	return k
}

// sweep forgets the kinds whose window ended without drops (those with
// drops are forgotten when their summary is logged). It runs at most ten
// times a window, so that a full table costs little per line.
func (s *state) sweep(now time.Time) {
	if now.Sub(s.lastSweep) < s.opts.Window/10 {
		return
	}
	s.lastSweep = now
	for _, table := range []map[string]*kind{s.kinds, s.overflow} {
		for key, k := range table {
			if k.timer == nil && now.Sub(k.start) >= s.opts.Window {
				delete(table, key)
			}
		}
	}
}

// endWindow logs k's summary and forgets k: its next line starts a new
// window.
func (s *state) endWindow(k *kind) {
	s.mu.Lock()
	if k.table != nil {
		if k.table[k.key] == k {
			delete(k.table, k.key)
		}
	} else if s.all == k {
		s.all = nil
	}
	rec := k.summary(time.Now())
	s.mu.Unlock()
	logSummary(context.Background(), k.inner, rec)
}

// summary returns the record that reports k's dropped lines. The caller
// holds the lock.
func (k *kind) summary(now time.Time) slog.Record {
	rec := slog.NewRecord(now, k.level, SummaryMessage, 0)
	rec.AddAttrs(
		slog.String("suppressed_msg", k.msg),
		slog.Int("suppressed", k.dropped),
		slog.Duration("window", now.Sub(k.start).Round(time.Millisecond)),
	)
	if len(k.last) > 0 {
		last := make([]any, len(k.last))
		for i, a := range k.last {
			last[i] = a
		}
		rec.AddAttrs(slog.Group("last", last...))
	}
	return rec
}

func logSummary(ctx context.Context, h slog.Handler, rec slog.Record) {
	if h.Enabled(ctx, rec.Level) {
		_ = h.Handle(ctx, rec)
	}
}

// key returns the kind of r logged through h.
func (h *Handler) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteByte(0)
	b.WriteString(h.scope)
	if len(h.st.opts.KeyAttrs) > 0 {
		r.Attrs(func(a slog.Attr) bool {
			for _, name := range h.st.opts.KeyAttrs {
				if a.Key == name {
					b.WriteByte(0)
					b.WriteString(a.String())
				}
			}
			return true
		})
	}
	return b.String()
}
