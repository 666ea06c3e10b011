package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func quietLogger() *zap.Logger { return zap.NewNop() }

// leaseKey names one of this handle's leases: one per holder and TTL. An
// executor uses one TTL for its locks (its masterJobTolerance) and one for
// its member record, so it has one lease for all its locks.
type leaseKey struct {
	holder string
	secs   int64
}

// lease is one etcd lease of this handle.
type lease struct {
	key  leaseKey
	id   clientv3.LeaseID
	secs int64 // TTL granted, seconds
	// began is when the last successful grant or keepalive began, on this
	// host's clock (monotonic reading included): etcd counted the TTL from
	// a moment after it.
	began time.Time
}

// remaining is the least time the lease has left at now.
func (l lease) remaining(now time.Time) time.Duration {
	return time.Duration(l.secs)*time.Second - now.Sub(l.began)
}

// LeaseTTL returns the etcd lease TTL, in whole seconds, that the store
// uses for a lease duration d (masterJobTolerance): the longest whole
// number of seconds that still lets etcd delete the keys within d
// (d - ExpiryTick, rounded down), provided that it is at least 2/3 of d,
// so that the trust window left after the default safety margin (d/4) is
// longer than the default heartbeat (d/3); else d rounded down, under the
// same proviso; else d rounded up. It returns 0 for d under a second:
// etcd grants whole seconds.
func LeaseTTL(d time.Duration) int64 {
	if d < time.Second {
		return 0
	}
	atLeast := 2 * d / 3
	if a := int64((d - ExpiryTick) / time.Second); a >= 1 && time.Duration(a)*time.Second >= atLeast {
		return a
	}
	if b := int64(d / time.Second); time.Duration(b)*time.Second >= atLeast {
		return b
	}
	return int64((d + time.Second - 1) / time.Second)
}

// leaseSeconds returns the TTL to ask for d, or an error naming the rule
// when etcd cannot grant a lease that short.
func (s *Store) leaseSeconds(d time.Duration) (int64, error) {
	s.mu.Lock()
	minTTL := s.minTTL
	s.mu.Unlock()
	secs := LeaseTTL(d)
	if secs == 0 || (minTTL > 0 && time.Duration(minTTL)*time.Second > d) {
		return 0, tooShort(d, minTTL)
	}
	return max(secs, minTTL), nil
}

func tooShort(d time.Duration, minTTL int64) error {
	if minTTL == 0 {
		return fmt.Errorf("%w: a lease of %v was asked, but etcd grants leases in whole seconds, "+
			"at least etcd's minimum lease TTL, ceil(1.5 × election timeout) (2s with etcd's defaults): "+
			"masterJobTolerance must be at least that", ErrLeaseTooShort, d)
	}
	return fmt.Errorf("%w: a lease of %v was asked, but this etcd cluster grants at least %ds "+
		"(etcd's minimum lease TTL is ceil(1.5 × election timeout)): masterJobTolerance must be at least %ds",
		ErrLeaseTooShort, d, minTTL, minTTL)
}

// CheckTTL returns an error wrapping ErrLeaseTooShort, naming the rule,
// when etcd cannot grant leases of d: under a second, or under the
// cluster's minimum TTL (ceil(1.5 × election timeout)). It learns that
// minimum by granting a lease of one second, revoked at once.
func (s *Store) CheckTTL(ctx context.Context, d time.Duration) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if _, err := s.leaseSeconds(d); err != nil {
		return err
	}
	s.mu.Lock()
	known := s.minTTL > 0
	s.mu.Unlock()
	if !known {
		resp, err := s.cli.Grant(ctx, 1)
		if err != nil {
			return s.fail(ctx, "grant a lease", err)
		}
		_, _ = s.cli.Revoke(ctx, resp.ID)
		s.mu.Lock()
		s.minTTL = max(resp.TTL, 1)
		s.mu.Unlock()
	}
	_, err := s.leaseSeconds(d)
	return err
}

// lockLeases takes the lease semaphore.
func (s *Store) lockLeases(ctx context.Context) error {
	select {
	case s.leaseSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("etcd: %w: %w", context.Cause(ctx), errLeaseBusy)
	}
}

var errLeaseBusy = errors.New("waiting for another call's keepalive")

func (s *Store) unlockLeases() { <-s.leaseSem }

// ensureLease returns holder's lease for duration d, granted or kept alive
// within fresh (0: kept alive now).
func (s *Store) ensureLease(ctx context.Context, holder string, d, fresh time.Duration) (lease, error) {
	secs, err := s.leaseSeconds(d)
	if err != nil {
		return lease{}, err
	}
	if err := s.lockLeases(ctx); err != nil {
		return lease{}, s.fail(ctx, "lease", err)
	}
	defer s.unlockLeases()
	key := leaseKey{holder, secs}
	s.mu.Lock()
	cur, ok := s.leases[key]
	var l lease
	if ok {
		l = *cur
	}
	s.mu.Unlock()
	if ok && fresh > 0 && time.Since(l.began) < fresh && l.remaining(time.Now()) > 0 {
		return l, nil
	}
	if ok {
		began := time.Now()
		resp, err := s.cli.KeepAliveOnce(ctx, l.id)
		switch {
		case err == nil:
			l.began, l.secs = began, resp.TTL
			s.putLease(l)
			return l, nil
		case isLeaseNotFound(err):
			s.dropLease(l.id)
		default:
			return lease{}, s.fail(ctx, "keep the lease alive", err)
		}
	}
	began := time.Now()
	resp, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return lease{}, s.fail(ctx, "grant a lease", err)
	}
	if resp.TTL > secs {
		// The cluster raised it to its minimum TTL.
		s.mu.Lock()
		s.minTTL = resp.TTL
		s.mu.Unlock()
		if time.Duration(resp.TTL)*time.Second > d {
			_, _ = s.cli.Revoke(context.WithoutCancel(ctx), resp.ID)
			return lease{}, tooShort(d, resp.TTL)
		}
	}
	l = lease{key: key, id: resp.ID, secs: resp.TTL, began: began}
	s.putLease(l)
	return l, nil
}

// keepAlive renews lease id (of this handle or not) and reports whether it
// was alive.
func (s *Store) keepAlive(ctx context.Context, id clientv3.LeaseID) (bool, error) {
	began := time.Now()
	resp, err := s.cli.KeepAliveOnce(ctx, id)
	switch {
	case err == nil:
		s.mu.Lock()
		if l := s.byID[id]; l != nil {
			l.began, l.secs = began, resp.TTL
		}
		s.mu.Unlock()
		return true, nil
	case isLeaseNotFound(err):
		s.dropLease(id)
		return false, nil
	}
	return false, s.fail(ctx, "keep a lease alive", err)
}

func (s *Store) putLease(l lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.leases[l.key]; old != nil && old.id != l.id {
		delete(s.byID, old.id)
	}
	p := &l
	s.leases[l.key] = p
	s.byID[l.id] = p
}

func (s *Store) dropLease(id clientv3.LeaseID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byID[id]; l != nil {
		delete(s.byID, id)
		if s.leases[l.key] == l {
			delete(s.leases, l.key)
		}
	}
}

// leaseTime is what the store knows of one lease's time left.
type leaseTime struct {
	remaining time.Duration // <= 0: expired or gone
	renewedAt time.Time     // when it was last granted or kept alive (estimate)
	granted   time.Duration // its TTL as granted
}

// leaseTimes returns the time left of each lease: this handle's own from
// its keepalives (to the millisecond), others' from etcd's LeaseTimeToLive,
// one request per lease, concurrently. etcd reports whole seconds, cut
// down; the time left is taken as that, a bound from below from the start
// of the call, since a successor trusts a lease given to it for the TTL
// its read returned (store.Transfers); a lease alive with less than a
// second left gets a nanosecond.
func (s *Store) leaseTimes(ctx context.Context, ids []clientv3.LeaseID) (map[clientv3.LeaseID]leaseTime, error) {
	now := time.Now()
	out := make(map[clientv3.LeaseID]leaseTime, len(ids))
	var ask []clientv3.LeaseID
	s.mu.Lock()
	for _, id := range ids {
		if _, done := out[id]; done || id == clientv3.NoLease {
			continue
		}
		if l := s.byID[id]; l != nil && l.remaining(now) > 0 {
			out[id] = leaseTime{remaining: l.remaining(now), renewedAt: l.began, granted: time.Duration(l.secs) * time.Second}
			continue
		}
		out[id] = leaseTime{}
		ask = append(ask, id)
	}
	s.mu.Unlock()
	if len(ask) == 0 {
		return out, nil
	}
	got := make([]leaseTime, len(ask))
	err := parallel(len(ask), func(i int) error {
		resp, err := s.cli.TimeToLive(ctx, ask[i])
		if err != nil {
			if isLeaseNotFound(err) {
				return nil
			}
			return s.fail(ctx, "read a lease's TTL", err)
		}
		if resp.TTL < 0 {
			return nil
		}
		rem := max(time.Duration(min(resp.TTL, resp.GrantedTTL))*time.Second, time.Nanosecond)
		granted := time.Duration(resp.GrantedTTL) * time.Second
		got[i] = leaseTime{remaining: rem, renewedAt: now.Add(rem - granted), granted: granted}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, id := range ask {
		out[id] = got[i]
	}
	return out, nil
}
