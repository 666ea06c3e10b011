package masterjob

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"

	"github.com/masterjob/masterjob/store"
)

// Balancing spreads the masterships of many locks over the instances that
// take part in them. On stores with store.Membership every instance reads
// the member list once per check interval (the only round trip balancing
// adds) and computes, for the members that take part in the same locks as
// itself (the same lock set), each one's fair share:
//
//	share(i) = ceil(L × weight(i) / Σ weight)
//
// where L is the number of locks of the set. Then:
//
//   - a follower takes at most share - held free locks in a check,
//     preferring different locks than its peers (rendezvous hashing), and
//     leaves the rest to instances under their share; a lock nobody took
//     within the grace (half a check interval) is taken by anyone, so no
//     lock waits for a master longer than that;
//   - an instance holding more than share + slack, or more than its share
//     while a peer is short of its own by more than the slack (a peer that
//     just joined), hands its extra locks over to peers under their
//     share: stop, then release reserved for the
//     peer, which acquires at once on the store's push. Never by taking an
//     unexpired lease. Every instance over its share computes the same
//     plan from the same member list (the givers in the order of their
//     ids, each filling the receivers' room in turn), so one round
//     converges, no peer is given more than its room and nothing moves
//     back: a lock moves at most once per change of the member list.
//
// slack is max(1, 5% of share) unless set. Instances with a lock set of
// their own (a rolling deploy that adds a lock, say) balance only within
// their set; a lock with one candidate stays where it is.

// BalanceConfig configures balancing (WithBalance).
type BalanceConfig struct {
	// Off disables balancing: every instance takes every free lock it
	// sees, as before.
	Off bool
	// Weight is this instance's share relative to its peers (default 1): an
	// instance of weight 2 holds twice as many masterships as one of
	// weight 1.
	Weight float64
	// Slack is how many masterships over its share an instance may hold
	// before it hands some off. 0 means the default, max(1, 5% of share).
	Slack int
}

// WithBalance configures balancing. It is on by default on stores that keep
// a member list (store.Membership).
func WithBalance(b BalanceConfig) Option { return func(o *options) { o.balance = &b } }

// balanceView is what the balancer last read of this instance's group: the
// live members that take part in the same locks.
type balanceView struct {
	me        string
	lockCount int
	group     []peerInfo // this instance included, sorted by id
	slack     int        // configured slack; 0 for the default
	// readAt is when the list was read, on this instance's clock; zero
	// for a view made before the first read.
	readAt time.Time
}

// peerInfo is one member of the group as last read.
type peerInfo struct {
	id      string
	weight  float64
	masters int
	// seen estimates, on this instance's clock, when the member last
	// called the store (seenAt; zero: this instance). A peer configured with
	// a longer TTL looks fresher than it is, one with a shorter TTL staler:
	// the estimate only ever costs a reservation, never safety.
	seen time.Time
}

// seenAt estimates when member m, read at readAt, last called the store:
// when its record was last refreshed (readAt less the part of ttl, this
// instance's member TTL, that had run out), plus the store's refresh lag
// (store.Member's RefreshLag: etcd keeps the record alive only once a
// third of its TTL has passed, so a member that calls every few seconds
// shows a record up to that old), never after readAt.
func seenAt(readAt time.Time, ttl time.Duration, m store.Member) time.Time {
	seen := readAt.Add(-max(0, ttl-m.TTL) + max(0, m.RefreshLag))
	if seen.After(readAt) {
		return readAt
	}
	return seen
}

// counts returns the masterships of the group's live members, by id, and
// their sum.
func (v balanceView) counts(suspect func(string) bool) (map[string]int, int) {
	out := map[string]int{}
	sum := 0
	for _, p := range v.group {
		if p.id != v.me && suspect(p.id) {
			continue
		}
		out[p.id] = p.masters
		sum += p.masters
	}
	return out, sum
}

// settledSince reports whether the group is the same as at the previous
// round (the same members) and its masterships moved by at most slack
// each: no hand-off or takeover in flight.
func settledSince(prev, cur map[string]int, slack int) bool {
	if prev == nil || len(prev) != len(cur) {
		return false
	}
	for id, n := range cur {
		p, ok := prev[id]
		if !ok || n-p > slack || p-n > slack {
			return false
		}
	}
	return true
}

// sameKeys reports whether a and b have the same keys.
func sameKeys(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// share returns this instance's fair share and slack among the group's
// members that are not suspected dead, and how many those are; ok is false
// when balancing does not apply (no live peer, or no lock).
func (v balanceView) share(suspect func(string) bool) (share, slack, peers int, ok bool) {
	total, mine, peers := v.live(suspect)
	if peers < 2 || v.lockCount == 0 || mine == 0 {
		return 0, 0, peers, false
	}
	share = shareOf(v.lockCount, mine, total)
	return share, slackOf(v.slack, share), peers, true
}

// live returns the total weight of the group's members not suspected dead
// (this instance always counts), this instance's weight, and how many
// those members are.
func (v balanceView) live(suspect func(string) bool) (total, mine float64, peers int) {
	for _, p := range v.group {
		if p.id != v.me && suspect(p.id) {
			continue
		}
		peers++
		total += p.weight
		if p.id == v.me {
			mine = p.weight
		}
	}
	return total, mine, peers
}

func shareOf(locks int, weight, total float64) int {
	return int(math.Ceil(float64(locks) * weight / total))
}

func slackOf(configured, share int) int {
	if configured > 0 {
		return configured
	}
	return defaultSlack(share)
}

// capacity returns how many more masterships this instance should take,
// or -1 for no limit.
func (e *Executor) capacity() int {
	v, held := e.balanceNow(), e.heldCount()
	share, _, _, ok := v.share(e.suspected)
	if !ok {
		return -1
	}
	return max(0, share-held)
}

// successors returns, for n masterships to hand over at shutdown, the live
// peer of the group each should go to: each to the peer with the fewest
// masterships for its weight, counting those already given, so that the
// peers end as even as they can. Empty without balancing.
//
// A peer whose last call, as its record tells (seenAt: on etcd up to
// the record's RefreshLag after its last refresh), is older than a check
// interval and a heartbeat is left out: a live instance calls at least
// once per check interval, so it has probably died (its record lives on
// until its TTL), and a lock reserved for it would wait for the
// reservation to lapse. With no peer left, the locks are released to
// anyone.
func (e *Executor) successors(n int) []string {
	v := e.balanceNow()
	if _, _, _, ok := v.share(e.suspected); !ok {
		return nil
	}
	type load struct {
		id     string
		held   float64
		weight float64
	}
	stale := e.memberStaleAfter()
	var ps []*load
	for _, p := range v.group {
		if p.id != v.me && e.alive(v, p, stale) {
			ps = append(ps, &load{p.id, float64(p.masters), p.weight})
		}
	}
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		best := ps[0]
		for _, p := range ps[1:] {
			if p.held/p.weight < best.held/best.weight || (p.held/p.weight == best.held/best.weight && p.id < best.id) {
				best = p
			}
		}
		out[i] = best.id
		best.held++
	}
	return out
}

// lineup is who of this instance's group may take a freed lock first, as
// the balancer last read the group: the live members under their share
// of the group's locks. The loop makes one per batch of pushes (a master
// of 10,000 locks that dies frees them all in one), not one per lock.
type lineup struct {
	me    string
	all   bool     // balancing does not apply: everyone goes
	cands []string // this instance among them when it has room
}

// lineUp returns the lineup as of now. This instance counts its own
// masterships as they are now, not as of the last balancing round: the
// others read them from the record it wrote since, and a member that
// counted itself full while the others counted it first in line would
// leave the lock to nobody until the delayed checks.
func (e *Executor) lineUp() lineup {
	v := e.balanceNow()
	if _, _, _, ok := v.share(e.suspected); !ok {
		return lineup{all: true}
	}
	total, _, _ := v.live(e.suspected)
	stale := e.memberStaleAfter()
	u := lineup{me: v.me}
	for _, p := range v.group {
		if p.id == v.me {
			p.masters = e.heldCount()
		} else if !e.alive(v, p, stale) {
			continue
		}
		if p.masters < shareOf(v.lockCount, p.weight, total) {
			u.cands = append(u.cands, p.id)
		}
	}
	return u
}

// first reports whether this instance is the one to take lock at once
// when a push says it may be free (onNotify says which pushes count): of
// the candidates, the one that ranks the lock highest (rendezvous), so
// that locks freed together go first to different members, each within
// its room. lastHolder, the instance that last held it, is left out by
// the others, never by itself, which only it may still believe to be the
// holder. Every member computes the same answer from the same member
// records, so that one acquisition goes out first instead of one per
// follower, all for the same row; where the views differ, two may go
// (a wasted call) or none (the others' delay). True when balancing does
// not apply or no member qualifies.
func (u lineup) first(lock, lastHolder string) bool {
	if u.all {
		return true
	}
	var (
		best     string
		bestRank uint64
	)
	for _, id := range u.cands {
		if id == lastHolder && id != u.me {
			continue
		}
		if r := rank(id, lock); best == "" || r > bestRank {
			best, bestRank = id, r
		}
	}
	return best == "" || best == u.me
}

// livePeer reports whether id is still a live peer in the member list as
// the balancer last read it, and known to be alive now: its record was
// written within stale (memberStaleAfter) of now, not only of that read.
// A successor named when a shutdown began may have left or died by the
// time the job has stopped and the lease is released: a peer that shut
// down moments before (its record deleted, which the balancer has read
// again since), or one that stopped writing after the last read (the
// shutdown asks for a new read then: overdue). Reserving the lease for it
// would make every other peer wait.
func (e *Executor) livePeer(id string) bool {
	stale := e.memberStaleAfter()
	v := e.balanceNow()
	for _, p := range v.group {
		if p.id == id {
			return e.alive(v, p, stale) && !overdue(p, stale)
		}
	}
	return false
}

// overdue reports whether peer p should have written its record again
// since the list was read: whether it is still alive, only a new read can
// tell.
func overdue(p peerInfo, stale time.Duration) bool {
	return !p.seen.IsZero() && time.Since(p.seen) > stale
}

// overdueSuccessor reports whether one of ids, named successors, is overdue
// (see overdue) in the member list as last read.
func (e *Executor) overdueSuccessor(ids []string) bool {
	stale := e.memberStaleAfter()
	for _, p := range e.balanceNow().group {
		if slices.Contains(ids, p.id) && overdue(p, stale) {
			return true
		}
	}
	return false
}

// alive reports whether peer p of view v may be named a successor: not
// suspected dead, its record written within stale (memberStaleAfter) of
// the read that found it, and that read no older than two stale periods.
//
// The record's age is judged as it was when the list was read, not as it
// would be now: a live follower writes its record at each check (at most
// a check interval apart) and the balancer reads the list once per check
// interval, so a record read on time often looks older than stale before
// the next read although it has been written again since. Judged against
// now, each live follower looked dead a fifth to a quarter of the time at
// the default timings: a shutdown named no successor, and members
// disagreed on who is first in line, each sending an acquisition. A peer
// that dies after the read counts as alive until the next read: first in
// line, it costs the others their delayed check; as a successor, the
// release checks livePeer, which does not count it. A view no read has
// refreshed for two periods (the store unreachable) counts nobody alive.
func (e *Executor) alive(v balanceView, p peerInfo, stale time.Duration) bool {
	if e.suspected(p.id) {
		return false
	}
	if p.seen.IsZero() {
		return true
	}
	return v.readAt.Sub(p.seen) <= stale && time.Since(v.readAt) <= 2*stale
}

// suspect marks instance id as probably dead: a lease of its expired
// without a release. Balancing leaves it out until its member record
// would have expired.
func (e *Executor) suspect(id, why string) {
	now := time.Now()
	until := now.Add(e.memberTTL())
	e.mu.Lock()
	if e.suspects == nil {
		e.suspects = map[string]time.Time{}
	}
	prev, was := e.suspects[id]
	e.suspects[id] = until
	e.mu.Unlock()
	if !was || now.After(prev) {
		// Once per suspicion, not once per lock of the suspect.
		e.runLog().Debug("balancing: instance suspected dead", "suspect", id, "why", why)
	}
}

// suspected reports whether id is suspected dead.
func (e *Executor) suspected(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	until, ok := e.suspects[id]
	if ok && time.Now().After(until) {
		delete(e.suspects, id)
		return false
	}
	return ok
}

// balancer refreshes the member list beside the loops and plans hand-offs.
type balancer struct {
	e        *Executor
	ms       store.Membership
	interval time.Duration
	cfg      BalanceConfig
	last     map[string]int // masterships per live member at the previous round
	// groupSince is when the round first saw the current set of live
	// members.
	groupSince time.Time
	// changed is signalled when the store pushes a member joining or
	// leaving: the list is read again then, at most every
	// memberRefreshMin, rather than only once per interval.
	changed <-chan struct{}
	// now is signalled when the list must be read at once, without the
	// spacing of pushed changes (a shutdown naming its successors).
	now <-chan struct{}
}

// memberRefreshMin spaces the reads of the member list that pushes cause.
const memberRefreshMin = 100 * time.Millisecond

// defaultSlack returns the slack of a share: max(1, 5% of it).
func defaultSlack(share int) int {
	return max(1, int(math.Ceil(0.05*float64(share))))
}

func (b *balancer) run(ctx context.Context) {
	// The first member list is read once the loops have announced this
	// instance (their first round trip), a moment after start.
	wait := min(b.interval, 100*time.Millisecond)
	for b.sleep(ctx, wait) {
		wait = b.interval
		b.e.membersFresh.Store(true)
		rctx, cancel := context.WithTimeout(ctx, b.interval)
		members, err := b.ms.Members(rctx, store.MemberFilter{})
		cancel()
		if err != nil {
			b.e.membersFresh.Store(false)
			b.e.runLog().Debug("cannot read the member list for balancing", "err", err)
			continue
		}
		b.round(members)
	}
}

// memberListCurrent reports whether the member list the balancer last read,
// or is reading, shows every join and leave the store has committed, as
// far as pushes tell: notifications are subscribed, and no member change,
// resync or new subscription has come since that read began. A read still
// under way is as good as one asked for now: its list reaches the view
// (livePeer) as soon as a new read's would. A Leave committed so
// recently that its push has not been handled yet is not seen: the
// release's own check (Transfers: the successor's member record) still
// refuses to give that peer the lock, which may then wait out the peer's
// reservation, as it did before a shutdown read the list again. A Leave
// comes at the end of a peer's shutdown, so this takes a shutdown that
// begins within the push's delay (about a millisecond) after it.
func (e *Executor) memberListCurrent() bool {
	return e.pushing.Load() && e.membersFresh.Load()
}

// sleep waits for d, for a member change pushed by the store (then after
// at least memberRefreshMin), or for a request to read at once; it returns
// false once ctx is done.
func (b *balancer) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	changed := b.changed
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-b.now:
			return true
		case <-changed:
			if b.e.urgentMembers.Load() {
				// A shutdown is naming successors from this list.
				return true
			}
			changed = nil // once: the wait is now memberRefreshMin
			t.Reset(min(d, memberRefreshMin))
		}
	}
}

// readMembersNow asks the balancer to read the member list at once.
func (e *Executor) readMembersNow() {
	select {
	case e.readMembers <- struct{}{}:
	default:
	}
}

// round computes this instance's share from members and hands off what
// exceeds it.
func (b *balancer) round(members []store.Member) {
	e := b.e
	e.mu.Lock()
	me, setID := e.holder.ID, e.lockSetID
	held := make([]string, 0, len(e.masters))
	for l := range e.masters {
		held = append(held, l)
	}
	weight := e.weight
	e.mu.Unlock()

	readAt, ttl := time.Now(), e.memberTTL()
	view := balanceView{me: me, slack: b.cfg.Slack, readAt: readAt}
	found := false
	for _, m := range members {
		if m.LockSetID != setID {
			continue
		}
		p := peerInfo{id: m.ID, weight: m.Weight, masters: m.Masters, seen: seenAt(readAt, ttl, m)}
		if m.ID == me {
			found = true
			p.weight, p.masters, p.seen = weight, len(held), time.Time{}
			view.lockCount = m.LockCount
		}
		if p.weight <= 0 {
			p.weight = 1
		}
		view.group = append(view.group, p)
	}
	if !found {
		view.lockCount = len(e.lockSetSnapshot())
		view.group = append(view.group, peerInfo{id: me, weight: weight, masters: len(held)})
	}
	e.mu.Lock()
	e.balance = view
	e.mu.Unlock()
	share, slack, peers, ok := view.share(e.suspected)
	// Hand off only once the group has settled: the same members for a
	// check interval, each one's masterships moved by at most the slack
	// since the previous round, and every lock mastered. While masterships
	// move (a takeover after a crash, hand-offs in flight) the counts are
	// stale; acting on them would move locks twice. A little churn (a job
	// that returned and restarts) does not hold balancing back. The
	// interval matters when instances start together: each joins the list
	// at its first call, and rounds that pushed joins bring 100 ms apart
	// would otherwise share all locks among the first two or three.
	cur, sum := view.counts(e.suspected)
	now := time.Now()
	if !sameKeys(b.last, cur) {
		b.groupSince = now
	}
	settled := settledSince(b.last, cur, slack) && sum == view.lockCount && now.Sub(b.groupSince) >= b.interval
	b.last = cur
	if !ok || !settled {
		return
	}

	// Over the share: hand the extra locks to peers under theirs, as this
	// instance's part of the plan every member over its share computes
	// alike from the same list.
	stale := e.memberStaleAfter()
	gives := view.handoffs(e.suspected, func(p peerInfo) bool { return e.alive(view, p, stale) })
	excess := 0
	for _, g := range gives {
		excess += g.n
	}
	if excess == 0 {
		return
	}
	// Keep the locks this instance ranks highest; hand off the others.
	slices.SortFunc(held, func(a, c string) int { return cmp.Compare(rank(me, a), rank(me, c)) })
	plan := make([]handoffPlan, 0, excess)
	for _, g := range gives {
		for range g.n {
			plan = append(plan, handoffPlan{lock: held[len(plan)], to: g.to})
		}
	}
	e.runLog().Info("balancing: handing off masterships over this instance's share",
		"held", len(held), "share", share, "slack", slack, "peers", peers, "handoffs", len(plan))
	e.planHandoffs(plan)
}

// give is a number of masterships to hand to one peer.
type give struct {
	to string
	n  int
}

// handoffs returns how many of this instance's masterships go to which
// peer: this instance's part of one plan for the whole group. Members
// suspected dead are left out. Every member over share + slack gives what
// it holds over its share, and so does every member over its share while
// another is short of its share by more than the slack (a new instance
// gets its share, not share - slack); the members under their share (and alive, for
// this instance: a peer that may have died would leave a reserved lock
// waiting) receive up to their share. The givers are taken in the order of
// their ids, and each fills the receivers' room in the order of theirs, so
// every giver that read the same list computes the same plan, no receiver
// is given more than its room, and one round converges. When a giver has
// already handed some over, its excess and its receivers' room have shrunk
// alike, and the later givers' parts are unchanged.
func (v balanceView) handoffs(suspect func(string) bool, alive func(peerInfo) bool) []give {
	total := 0.0
	var live []peerInfo
	for _, p := range v.group {
		if p.id == v.me || !suspect(p.id) {
			live = append(live, p)
			total += p.weight
		}
	}
	slices.SortFunc(live, func(a, c peerInfo) int { return cmp.Compare(a.id, c.id) })
	shares := make([]int, len(live))
	// A member short of its share by more than the slack (one that just
	// joined, say) is filled even by members within their slack: each
	// member over its share then gives down to it.
	short := false
	for i, p := range live {
		shares[i] = shareOf(v.lockCount, p.weight, total)
		short = short || p.masters < shares[i]-slackOf(v.slack, shares[i])
	}
	type slot struct {
		id   string
		room int
	}
	var under []slot
	before := -1 // masterships the givers ahead of this instance hand over
	given := 0
	mine := 0
	for i, p := range live {
		s := shares[i]
		switch {
		case p.masters > s+slackOf(v.slack, s) || (short && p.masters > s):
			if p.id == v.me {
				before, mine = given, p.masters-s
			}
			given += p.masters - s
		case p.id != v.me && p.masters < s && alive(p):
			under = append(under, slot{p.id, s - p.masters})
		}
	}
	if before < 0 {
		return nil
	}
	// Skip the room the givers ahead of this one fill, then take this
	// instance's part.
	var out []give
	for _, u := range under {
		skip := min(before, u.room)
		before -= skip
		n := min(u.room-skip, mine)
		if n > 0 {
			out = append(out, give{u.id, n})
			mine -= n
		}
		if mine == 0 {
			break
		}
	}
	return out
}

// handoffPlan is one lock to hand over to a peer.
type handoffPlan struct {
	lock, to string
}

// planHandoffs passes each planned hand-off to the loop that holds the
// lock.
func (e *Executor) planHandoffs(plan []handoffPlan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.run == nil {
		return
	}
	for _, p := range plan {
		reg := e.jobs[p.lock]
		if reg == nil {
			continue
		}
		if l := e.run.loops[reg.cfg]; l != nil {
			l.inbox.handoff(p.lock, p.to)
		}
	}
}

// balanceNow returns the latest balance view.
func (e *Executor) balanceNow() balanceView {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.balance
}

// lockSetSnapshot returns the registered locks, sorted.
func (e *Executor) lockSetSnapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.jobs))
	for l := range e.jobs {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// heldCount returns how many masterships this instance holds.
func (e *Executor) heldCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.masters)
}
