package masterjob

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// gatedHandler counts the records it is given, waiting on gate while it is
// open-ended (a blocked log output).
type gatedHandler struct {
	gate    chan struct{}
	mu      sync.Mutex
	records int
	reports int
	dropped int64
}

func (g *gatedHandler) Enabled(context.Context, slog.Level) bool { return true }
func (g *gatedHandler) WithAttrs([]slog.Attr) slog.Handler       { return g }
func (g *gatedHandler) WithGroup(string) slog.Handler            { return g }

func (g *gatedHandler) Handle(_ context.Context, r slog.Record) error {
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Message == "log lines dropped: the log output was blocked" {
		g.reports++
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "dropped" {
				g.dropped += a.Value.Int64()
			}
			return true
		})
		return nil
	}
	g.records++
	return nil
}

// TestAsyncLogReportsDropsSparingly: while the output stays behind, the
// records that do not fit are dropped and counted, and the count is
// reported about once per second, not before every record written; every
// record is either written or counted in a report.
func TestAsyncLogReportsDropsSparingly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gatedHandler{gate: make(chan struct{})}
		a, h := newAsyncLog(g)
		log := slog.New(h)
		const total = 20 * logQueueLen
		// A slow output: one record a millisecond, while the loop logs
		// faster than that for 20 s.
		go func() {
			for {
				select {
				case g.gate <- struct{}{}:
				case <-a.done:
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		for i := range total {
			log.Info("a record", "i", i)
			if i%20 == 19 {
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(5 * time.Second) // the writer catches up
		a.close()
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.dropped == 0 {
			t.Fatalf("no record dropped (%d written): the test did not overflow the queue", g.records)
		}
		if got := int64(g.records) + g.dropped; got != total {
			t.Errorf("%d written + %d reported dropped = %d, want %d", g.records, g.dropped, got, total)
		}
		// 20,480 records logged over about 1 s, written over about 20 s.
		if g.reports > 25 {
			t.Errorf("%d reports of dropped records; want about one per second", g.reports)
		}
	})
}
