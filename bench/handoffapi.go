//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/masterjob/masterjob/bench/internal/probe"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
)

// Names of the series of the hand-off-through-the-API scenario.
const (
	SeriesHandoffAPI     = "POST handoff → next child starts"
	SeriesHandoffAPIStop = "POST handoff → old child exited"
	SeriesHandoffAPICall = "POST handoff (the request)"
)

// ErrNoHandoffs: the store cannot hand a lease over (it does not
// implement store.Handoffs).
var ErrNoHandoffs = errors.New("the store cannot hand off (it does not implement store.Handoffs)")

// HandoffAPI asks the master to hand the lock over through the control
// API, trials times, on a cluster of three runners with lease (tolerance)
// lease, and measures until the next child starts: POST
// /api/mastercontrols/handoff with "to" naming another runner (a live
// member taking part in the lock, from the lock's candidates), to a
// control API served in this process on the benchmark's own store
// handle. The master sees the request in its next renewal, woken by the
// store's push; it stops its child, then releases the lease reserved for
// that runner, which acquires it woken by the release's push. Each
// trial checks that the new child has a greater token and started after
// the old one exited. Stores that cannot hand off (no store.Handoffs) are
// refused.
func (e *Env) HandoffAPI(ctx context.Context, lease time.Duration, trials int) (*Result, error) {
	timing := LeaseTiming(lease)
	s, err := e.startSession(ctx, "handoff-api-"+lease.String(), timing, 3)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if _, ok := s.st.(store.Handoffs); !ok {
		return nil, fmt.Errorf("handoff-api on %s: %w", e.Backend.Kind, ErrNoHandoffs)
	}
	api, err := controlapi.New(s.st, controlapi.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String() + controlapi.BasePath
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	host := markHost()
	res := &Result{Store: e.Backend.Kind, Scenario: "hand-off through the API", Timing: timing.String(), Lease: lease}
	var handoff, stop, gap, call []time.Duration
	for i := range trials {
		if _, err := s.settledMaster(ctx); err != nil {
			return nil, err
		}
		to, err := otherCandidate(ctx, hc, base, s.lock)
		if err != nil {
			return nil, fmt.Errorf("handoff-api trial %d: %w", i+1, err)
		}
		body, _ := json.Marshal(controlapi.HandoffRequest{LockName: s.lock, To: to, Reason: "benchmark"})
		t0 := probe.Mono()
		resp, err := hc.Post(base+"/handoff", "application/json", bytes.NewReader(body))
		c1 := probe.Mono()
		if err != nil {
			return nil, fmt.Errorf("handoff-api trial %d: %w", i+1, err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("handoff-api trial %d: %d %s", i+1, resp.StatusCode, answer)
		}
		next, gone, err := s.takeOver(2*lease+10*time.Second, false)
		if err != nil {
			return nil, fmt.Errorf("handoff-api trial %d: %w", i+1, err)
		}
		handoff = append(handoff, next.Mono-t0)
		stop = append(stop, gone-t0)
		gap = append(gap, next.Mono-gone)
		call = append(call, c1-t0)
		e.logf("  %s hand-off through the API %d/%d: %v", e.Backend.Kind, i+1, trials, (next.Mono - t0).Round(time.Microsecond))
		s.advance(next)
	}
	res.Trials, res.Host = trials, host.since()
	res.add(SeriesHandoffAPI, handoff)
	res.add(SeriesHandoffAPIStop, stop)
	res.add(SeriesHandoffGap, gap)
	res.add(SeriesHandoffAPICall, call)
	return res, nil
}

// otherCandidate returns a live member taking part in lock other than its
// master, as GET /api/mastercontrols/locks/{lock} lists them; "" (any
// other instance) on a store that keeps no member list.
func otherCandidate(ctx context.Context, hc *http.Client, base, lock string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/locks/"+url.PathEscape(lock), nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var l controlapi.Lock
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("reading the lock: %d, %v", resp.StatusCode, err)
	}
	if l.Standbys == nil {
		return "", nil
	}
	for _, c := range l.Candidates {
		if c != l.Master {
			return c, nil
		}
	}
	return "", errors.New("no live runner other than the master takes part in the lock")
}
