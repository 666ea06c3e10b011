package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/masterjob/masterjob/internal/faultproxy"
	"github.com/masterjob/masterjob/store"
)

func init() {
	tests = append(tests, testCase{"Outage/AnswersSoonAfter", testAnswersSoonAfterOutage})
}

// Timing of testAnswersSoonAfterOutage.
const (
	// outage is how long the path to the server is cut. 11.2 s falls
	// between two of the attempts of gRPC's default connection backoff
	// (1 s after the first failed attempt, then 1.6 times longer, each
	// ±20 %: the fourth at 7.4–11.1 s, the fifth at 12.7 s or later), so
	// that a client on that backoff answers at least 1.45 s after it ends.
	outage = 11200 * time.Millisecond
	// answerAfterOutage bounds the time from the end of the outage to the
	// handle's first answer.
	answerAfterOutage = 1200 * time.Millisecond
)

// testAnswersSoonAfterOutage: a handle whose server could not be reached
// for a while (every connection refused) answers again soon after the
// server can be reached, and its calls meanwhile fail with errors that
// wrap store.ErrUnavailable. A client library that backs off for seconds
// between attempts to reconnect (gRPC's default, up to two minutes) keeps
// masters from renewing, and followers from taking a free lock, long
// after the store is back: the chaos harness excused that as an instance
// cut off from its store.
func testAnswersSoonAfterOutage(t *testing.T, h Harness) {
	if h.OpenVia == nil {
		t.Skip("storetest: Harness.OpenVia unset: no path to a server to cut")
	}
	p := faultproxy.Start(t, h.Server)
	s := h.OpenVia(t, p.Addr())
	defer s.Close()
	ctx := t.Context()
	call := func(d time.Duration) error {
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := s.Locks(cctx, "outage")
		return err
	}
	if err := call(waitLimit); err != nil {
		t.Fatalf("Locks before the outage: %v", err)
	}

	p.Cut(faultproxy.CutReset)
	end := time.Now().Add(outage)
	err := call(time.Second)
	if err == nil {
		t.Fatal("Locks answered while every connection to the server was refused")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Locks while the server could not be reached: %v; want an error wrapping store.ErrUnavailable", err)
	}
	time.Sleep(time.Until(end))
	p.Restore()
	back := time.Now()
	for {
		err := call(200 * time.Millisecond)
		if err == nil {
			break
		}
		if time.Since(back) > waitLimit {
			t.Fatalf("no answer %v after the outage ended: %v", waitLimit, err)
		}
	}
	took := time.Since(back)
	if took > answerAfterOutage {
		t.Errorf("the first answer came %v after the outage of %v ended; want at most %v", took.Round(time.Millisecond), outage, answerAfterOutage)
	}
	t.Logf("answered %v after the outage ended", took.Round(time.Millisecond))
}
