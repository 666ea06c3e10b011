package masterjob

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store"
)

// TestFirstInLineOneMemberPerLock: members that read the same list agree
// on one first in line per freed lock, never a member at or over its share
// or the lock's last holder, and when many locks come free together (their
// master died) the first places spread over the members with room instead
// of all going to one, which would leave the rest to wait for the others'
// delayed checks.
func TestFirstInLineOneMemberPerLock(t *testing.T) {
	// 12 locks over b, c, d and e (share 3 each): d is full, e was their
	// master and died (its record lives on); b and c have room.
	group := []peerInfo{
		{id: "b", weight: 1, masters: 1},
		{id: "c", weight: 1, masters: 2},
		{id: "d", weight: 1, masters: 3},
		{id: "e", weight: 1, masters: 6},
	}
	firsts := map[string]int{}
	const locks = 1000
	for i := range locks {
		lock := fmt.Sprintf("lock-%d", i)
		var got []string
		for i, me := range []string{"b", "c", "d"} {
			e := &Executor{cfg: Config{CheckMasterInterval: 5 * time.Second, HeartbeatInterval: time.Second}, masters: map[string]Lease{}}
			e.balance = balanceView{me: me, lockCount: 12, group: group}
			for j := range group[i].masters {
				e.masters[fmt.Sprintf("held-%d", j)] = Lease{}
			}
			if e.lineUp().first(lock, "e") {
				got = append(got, me)
			}
		}
		if len(got) != 1 {
			t.Fatalf("%s: first in line by their own reading: %v; want one member", lock, got)
		}
		firsts[got[0]]++
	}
	if firsts["d"] != 0 || firsts["b"] < locks/3 || firsts["c"] < locks/3 {
		t.Errorf("first places over %d locks: %v; want none for d (at its share) and about half each for b and c", locks, firsts)
	}
}

// TestFirstInLineNotLeftToNobody: the member first in line by the others'
// reading of its record goes, although its last balancing round, taken
// while it was master, counted it full, and although it still knows
// itself as the lock's last holder (a lock it released on a Disable, then
// enabled again). Before, it left itself out on both counts while the
// others waited for it: nobody took the lock until the delayed checks
// (seen in 3 of 20 Enables on PostgreSQL).
func TestFirstInLineNotLeftToNobody(t *testing.T) {
	lock := ""
	for i := 0; lock == ""; i++ {
		if l := fmt.Sprintf("L%d", i); rank("x", l) > rank("y", l) && rank("x", l) > rank("z", l) {
			lock = l
		}
	}
	cfg := Config{CheckMasterInterval: 5 * time.Second, HeartbeatInterval: time.Second}
	// Its own view, from a round while it held the lock.
	x := &Executor{cfg: cfg, masters: map[string]Lease{}}
	x.balance = balanceView{me: "x", lockCount: 1, group: []peerInfo{{id: "x", weight: 1, masters: 1}, {id: "y", weight: 1}, {id: "z", weight: 1}}}
	if !x.lineUp().first(lock, "x") {
		t.Error("x, holding nothing now and first by rank, is not first in line by its own reckoning")
	}
	// The others read its record after the release.
	for _, me := range []string{"y", "z"} {
		e := &Executor{cfg: cfg, masters: map[string]Lease{}}
		e.balance = balanceView{me: me, lockCount: 1, group: []peerInfo{{id: "x", weight: 1}, {id: "y", weight: 1}, {id: "z", weight: 1}}}
		if e.lineUp().first(lock, "") {
			t.Errorf("%s is first in line; want x", me)
		}
	}
}

// TestFirstInLineSomebodyGoes: over random groups read alike by every
// member (each counting itself as its record says), at least one member
// goes first for every lock, whatever each knows of the lock's last
// holder; exactly one when none knows it (or all, when none has room);
// at most two when all know it (the last holder itself, which never
// leaves itself out, and the one the others name). It is the property
// whose breach cost an Enable 100 ms (TestFirstInLineNotLeftToNobody),
// over every shape of group at once.
func TestFirstInLineSomebodyGoes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := Config{CheckMasterInterval: 5 * time.Second, HeartbeatInterval: time.Second}
	for trial := range 3000 {
		n := 2 + rng.IntN(5)
		group := make([]peerInfo, n)
		for i := range group {
			group[i] = peerInfo{id: fmt.Sprintf("m%d", i), weight: float64(1 + rng.IntN(3)), masters: rng.IntN(4)}
		}
		lockCount := 1 + rng.IntN(12)
		last := fmt.Sprintf("m%d", rng.IntN(n+1)) // m<n>: a holder that is not a member
		mode := rng.IntN(3)                       // 0: none knows it, 1: all do, 2: some do
		lock := fmt.Sprintf("lock-%d", trial)
		var goers []string
		for _, p := range group {
			e := &Executor{cfg: cfg, masters: map[string]Lease{}}
			e.balance = balanceView{me: p.id, lockCount: lockCount, group: group}
			for j := range p.masters {
				e.masters[fmt.Sprintf("held-%d", j)] = Lease{}
			}
			knows := last
			if mode == 0 || mode == 2 && rng.IntN(2) == 0 {
				knows = ""
			}
			if e.lineUp().first(lock, knows) {
				goers = append(goers, p.id)
			}
		}
		if len(goers) == 0 || mode == 0 && len(goers) != 1 && len(goers) != n || mode == 1 && len(goers) > 2 && len(goers) != n {
			t.Fatalf("trial %d: group %+v, %d locks, last holder %s (mode %d): first in line by their own reading: %v",
				trial, group, lockCount, last, mode, goers)
		}
	}
}

// TestFirstInLineAgreesBetweenReads: followers that write their records
// and read the member list once per check interval, each on its own phase,
// agree on one first in line at every moment, not only just after a read.
// Before, a record's age was judged against the time of the question, not
// of the read: a follower whose record was fresh when read looked dead a
// check interval and a heartbeat after it was written, although it had
// written it again since. Each member then dropped a different peer, and
// two or three acquisitions went out for one freed lock (seen in 2 of 10
// Enables on PostgreSQL); a shutdown named no successor.
func TestFirstInLineAgreesBetweenReads(t *testing.T) {
	const interval, heartbeat = 5 * time.Second, time.Second / 3
	cfg := Config{CheckMasterInterval: interval, HeartbeatInterval: heartbeat}
	rng := rand.New(rand.NewPCG(3, 4))
	ids := []string{"a", "b", "c"}
	for trial := range 2000 {
		// Member i writes its record at writeAt[i] + k·interval and reads
		// the list at readPhase[i] + k·interval; the question is asked at
		// t, within a period of both.
		var writeAt, readPhase [3]time.Duration
		for i := range ids {
			writeAt[i] = time.Duration(rng.Int64N(int64(interval)))
			readPhase[i] = time.Duration(rng.Int64N(int64(interval)))
		}
		t0 := 10 * interval
		at := t0 + time.Duration(rng.Int64N(int64(interval)))
		// last returns the latest moment ≤ t of phase + k·interval.
		last := func(phase, t time.Duration) time.Duration {
			return t - (t-phase)%interval
		}
		now := time.Now()
		lock := fmt.Sprintf("lock-%d", trial)
		var goers []string
		for i, me := range ids {
			read := last(readPhase[i], at)
			readAt := now.Add(read - at)
			group := make([]peerInfo, len(ids))
			for j, id := range ids {
				group[j] = peerInfo{id: id, weight: 1}
				if j != i {
					group[j].seen = readAt.Add(last(writeAt[j], read) - read)
				}
			}
			e := &Executor{cfg: cfg, masters: map[string]Lease{}}
			e.balance = balanceView{me: me, lockCount: 1, group: group, readAt: readAt}
			if e.lineUp().first(lock, "") {
				goers = append(goers, me)
			}
		}
		if len(goers) != 1 {
			t.Fatalf("trial %d: records written at phases %v, lists read at phases %v, asked at %v into a period: first in line by their own reading: %v; want one",
				trial, writeAt, readPhase, at-t0, goers)
		}
	}
}

// TestAliveJudgesTheRecordAsRead: a record is judged by its age when the
// list was read, and a list no read has refreshed for two stale periods
// (the store unreachable) counts nobody alive.
func TestAliveJudgesTheRecordAsRead(t *testing.T) {
	e := &Executor{cfg: Config{CheckMasterInterval: 5 * time.Second, HeartbeatInterval: time.Second}}
	stale := e.memberStaleAfter() // 6 s
	now := time.Now()
	for _, c := range []struct {
		name         string
		readAgo, age time.Duration
		want         bool
	}{
		{"fresh when read, read 5 s ago", 5 * time.Second, 4 * time.Second, true},
		{"fresh when read, read just now", 0, 5 * time.Second, true},
		{"overdue when read", 0, 7 * time.Second, false},
		{"overdue when read long ago", 5 * time.Second, 7 * time.Second, false},
		{"fresh when read, but the list is 13 s old", 13 * time.Second, time.Second, false},
	} {
		readAt := now.Add(-c.readAgo)
		v := balanceView{me: "a", readAt: readAt}
		p := peerInfo{id: "b", weight: 1, seen: readAt.Add(-c.age)}
		if got := e.alive(v, p, stale); got != c.want {
			t.Errorf("%s: alive %v, want %v", c.name, got, c.want)
		}
	}
}

// TestSeenAtCountsTheRefreshLag: a member's last call is estimated from its
// record's TTL and the lag the store says its refreshes may have (etcd
// keeps a record alive once a third of its TTL has passed). Without the
// lag, an etcd follower calling every check interval read as silent for
// up to a third of the member TTL, and the members counted different
// lineups: on an Enable, each sent an acquisition (docs/benchmarks.md,
// twenty-fourth look).
func TestSeenAtCountsTheRefreshLag(t *testing.T) {
	e := &Executor{cfg: Config{CheckMasterInterval: 5 * time.Second, HeartbeatInterval: time.Second}}
	stale := e.memberStaleAfter() // 6 s
	ttl := 14 * time.Second       // the member TTL
	readAt := time.Now()
	for _, c := range []struct {
		name     string
		left     time.Duration // the record's TTL left at the read
		lag      time.Duration
		want     time.Duration // seen, before readAt
		wantLive bool
	}{
		{"refreshed at each call", 13 * time.Second, 0, time.Second, true},
		{"kept alive 9 s ago, calls between unsaid", 5 * time.Second, 0, 9 * time.Second, false},
		{"kept alive 9 s ago, refreshes lag up to 4.67 s", 5 * time.Second, ttl / 3, 9*time.Second - ttl/3, true},
		{"the lag never puts seen after the read", 13 * time.Second, ttl / 3, 0, true},
		{"kept alive 12 s ago: silent even with the lag", 2 * time.Second, ttl / 3, 12*time.Second - ttl/3, false},
	} {
		m := store.Member{ID: "b", TTL: c.left, RefreshLag: c.lag}
		seen := seenAt(readAt, ttl, m)
		if got := readAt.Sub(seen); got != c.want {
			t.Errorf("%s: seen %v before the read, want %v", c.name, got, c.want)
		}
		v := balanceView{me: "a", readAt: readAt}
		if got := e.alive(v, peerInfo{id: "b", weight: 1, seen: seen}, stale); got != c.wantLive {
			t.Errorf("%s: alive %v, want %v", c.name, got, c.wantLive)
		}
	}
}
