package masterjob

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// The executor's loops log through an asyncLog, so that a log write that
// blocks (a full pipe on stderr, a stalled log shipper) never holds a loop
// and with it the enforcement of trust windows. Records go to a bounded
// queue; one goroutine writes them in order. When the queue is full, records
// are dropped and counted, and the count is logged once the writer catches
// up.
const (
	logQueueLen = 1024
	// logFlushTimeout bounds how long Run waits, when it ends, for the
	// queued records to be written.
	logFlushTimeout = time.Second
	// dropReportEvery spaces the reports of dropped records while the
	// output stays behind: at 10,000 locks a report before every record
	// written filled the log with reports.
	dropReportEvery = time.Second
)

type asyncLog struct {
	q       chan logItem
	dropped atomic.Int64
	done    chan struct{}
}

type logItem struct {
	h slog.Handler
	r slog.Record
}

// newAsyncLog starts the writer of records handled by the handler it
// returns, which passes them on to inner.
func newAsyncLog(inner slog.Handler) (*asyncLog, slog.Handler) {
	a := &asyncLog{q: make(chan logItem, logQueueLen), done: make(chan struct{})}
	go a.write()
	return a, &asyncHandler{inner: inner, a: a}
}

// write writes the queued records in order. Dropped records are reported
// once the writer has caught up (the queue is empty), or every
// dropReportEvery while it stays behind, and when the log closes.
func (a *asyncLog) write() {
	defer close(a.done)
	var last time.Time
	var h slog.Handler
	report := func() {
		if n := a.dropped.Swap(0); n > 0 {
			r := slog.NewRecord(time.Now(), slog.LevelWarn, "log lines dropped: the log output was blocked", 0)
			r.AddAttrs(slog.Int64("dropped", n))
			_ = h.Handle(context.Background(), r)
			last = time.Now()
		}
	}
	for it := range a.q {
		h = it.h
		if a.dropped.Load() > 0 && (len(a.q) == 0 || time.Since(last) >= dropReportEvery) {
			report()
		}
		_ = it.h.Handle(context.Background(), it.r)
	}
	if h != nil {
		report()
	}
}

// close stops the writer once the queue is written, waiting at most
// logFlushTimeout. No record may be handled after close.
func (a *asyncLog) close() {
	close(a.q)
	t := time.NewTimer(logFlushTimeout)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C: // the output is blocked: leave the writer to it
	}
}

type asyncHandler struct {
	inner slog.Handler
	a     *asyncLog
}

func (h *asyncHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *asyncHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.a.q <- logItem{h.inner, r.Clone()}:
	default:
		h.a.dropped.Add(1)
	}
	return nil
}

func (h *asyncHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &asyncHandler{inner: h.inner.WithAttrs(attrs), a: h.a}
}

func (h *asyncHandler) WithGroup(name string) slog.Handler {
	return &asyncHandler{inner: h.inner.WithGroup(name), a: h.a}
}
