package logthrottle_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/logthrottle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink is a JSON log in memory.
type sink struct{ syncbuf.Buffer }

// lines returns the records logged, decoded.
func (s *sink) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %q", err, l)
		}
		out = append(out, m)
	}
	return out
}

func count(lines []map[string]any, msg string) int {
	n := 0
	for _, l := range lines {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

func newLogger(s *sink, opts logthrottle.Options) (*slog.Logger, *logthrottle.Handler) {
	h := logthrottle.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}), opts)
	return slog.New(h), h
}

// A kind passes Burst lines per window; the rest are dropped and counted,
// and the summary, when the window ends, says how many, with the last
// one's attributes and the logger's own.
func TestBurstAndSummary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s sink
		log, _ := newLogger(&s, logthrottle.Options{Burst: 3, Window: 10 * time.Second})
		api := log.With("component", "controlapi")
		for i := range 100 {
			api.Warn("request refused", "remote", fmt.Sprintf("10.0.0.%d:1", i), "status", 401)
		}
		if got := s.lines(t); len(got) != 3 || count(got, "request refused") != 3 {
			t.Fatalf("during the window: %d lines, want the 3 of the burst", len(got))
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		got := s.lines(t)
		if len(got) != 4 {
			t.Fatalf("after the window: %d lines, want 3 and a summary: %v", len(got), got)
		}
		sum := got[3]
		last, _ := sum["last"].(map[string]any)
		if sum["msg"] != logthrottle.SummaryMessage || sum["level"] != "WARN" || sum["suppressed"] != float64(97) ||
			sum["suppressed_msg"] != "request refused" || sum["component"] != "controlapi" ||
			last["remote"] != "10.0.0.99:1" || sum["window"] == nil {
			t.Fatalf("summary: %v", sum)
		}
		// The next window starts afresh.
		api.Warn("request refused", "remote", "x")
		if got := s.lines(t); len(got) != 5 {
			t.Fatalf("a new window: %d lines, want 5", len(got))
		}
	})
}

// Kinds are apart: by message, level, the logger's attributes and groups,
// and the KeyAttrs values; other attributes do not make kinds.
func TestKinds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s sink
		log, _ := newLogger(&s, logthrottle.Options{Burst: 1, KeyAttrs: []string{"lock"}})
		for range 5 {
			log.Warn("a", "n", 1)
			log.Warn("a", "n", 2) // same kind
			log.Error("a")
			log.Warn("b")
			log.With("component", "x").Warn("a")
			log.WithGroup("g").Warn("a")
			log.Warn("a", "lock", "L1")
			log.Warn("a", "lock", "L2")
		}
		if got := s.lines(t); len(got) != 7 {
			t.Fatalf("%d lines, want one of each of the 7 kinds", len(got))
		}
		time.Sleep(logthrottle.DefaultWindow)
		synctest.Wait()
		if got := count(s.lines(t), logthrottle.SummaryMessage); got != 7 {
			t.Fatalf("%d summaries, want 7", got)
		}
	})
}

// A flood costs at most Burst lines and a summary per window, whatever its
// rate; disabled levels cost nothing.
func TestFloodBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s sink
		h := logthrottle.New(slog.NewJSONHandler(&s, nil), logthrottle.Options{}) // Info and up
		log := slog.New(h)
		const windows = 6
		for range windows * 100 {
			for range 100 {
				log.Error("store call failed", "err", "connection refused")
				log.Debug("request refused")
			}
			time.Sleep(logthrottle.DefaultWindow / 100)
		}
		time.Sleep(logthrottle.DefaultWindow)
		synctest.Wait()
		got := s.lines(t)
		passed, summaries := count(got, "store call failed"), count(got, logthrottle.SummaryMessage)
		t.Logf("%d records over %d windows: %d lines passed, %d summaries", windows*100*100, windows, passed, summaries)
		if passed > windows*logthrottle.DefaultBurst || summaries > windows || len(got) != passed+summaries {
			t.Fatalf("%d passed and %d summaries over %d windows, want at most %d and %d",
				passed, summaries, windows, windows*logthrottle.DefaultBurst, windows)
		}
		total := 0
		for _, l := range got {
			if n, ok := l["suppressed"].(float64); ok {
				total += int(n)
			}
		}
		if total+passed != windows*100*100 {
			t.Fatalf("%d passed + %d counted as suppressed != %d logged", passed, total, windows*100*100)
		}
	})
}

// Memory is bounded: KeyAttrs values a client chooses make at most
// MaxKinds kinds; past that, lines are throttled by level and message.
func TestMaxKinds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s sink
		log, _ := newLogger(&s, logthrottle.Options{Burst: 1, MaxKinds: 10, KeyAttrs: []string{"lock"}})
		for i := range 10000 {
			log.Warn("refused", "lock", fmt.Sprint("L", i))
		}
		// 10 kinds of their own, then one by level and message.
		if got := len(s.lines(t)); got != 11 {
			t.Fatalf("%d lines, want 11", got)
		}
		time.Sleep(logthrottle.DefaultWindow)
		synctest.Wait()
		got := s.lines(t)
		if n := count(got, logthrottle.SummaryMessage); n != 1 || got[len(got)-1]["suppressed"] != float64(10000-11) {
			t.Fatalf("summaries: %v", got[11:])
		}
	})
}

// Flush logs the summaries of open windows at once.
func TestFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s sink
		log, h := newLogger(&s, logthrottle.Options{Burst: 1})
		log.Info("x")
		log.Info("x")
		log.Info("x")
		h.Flush(context.Background())
		got := s.lines(t)
		if len(got) != 2 || got[1]["suppressed"] != float64(2) {
			t.Fatalf("after Flush: %v", got)
		}
		time.Sleep(logthrottle.DefaultWindow)
		synctest.Wait()
		if n := len(s.lines(t)); n != 2 {
			t.Fatalf("the flushed window's summary came again: %d lines", n)
		}
	})
}

// Concurrent loggers (run with -race) keep the count exact.
func TestConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s sink
		log, h := newLogger(&s, logthrottle.Options{})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				l := log.With("g", g%2)
				for range 1000 {
					l.Warn("flood")
				}
			})
		}
		wg.Wait()
		h.Flush(context.Background())
		got := s.lines(t)
		total := count(got, "flood")
		for _, l := range got {
			if n, ok := l["suppressed"].(float64); ok {
				total += int(n)
			}
		}
		if total != 8000 || count(got, "flood") != 2*logthrottle.DefaultBurst {
			t.Fatalf("%d lines passed, %d accounted for, want %d and 8000", count(got, "flood"), total, 2*logthrottle.DefaultBurst)
		}
	})
}
