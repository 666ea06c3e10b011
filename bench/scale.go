//go:build linux

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/masterjob/masterjob/store"
)

// InstanceLine is what a scale instance (bench/cmd/masterjob-bench-instance)
// prints every second.
type InstanceLine struct {
	ID    string `json:"id"`
	Mono  int64  `json:"mono"`  // CLOCK_MONOTONIC, ns
	Calls int64  `json:"calls"` // store calls made so far
	Held  int    `json:"held"`  // masterships
	RSS   int64  `json:"rss"`   // bytes
	CPU   int64  `json:"cpu"`   // CPU time used so far (user and system), ns
	// Unnoticed counts the masterships that ended because their lease had
	// expired before the instance noticed (masterjob.ErrLeaseExpired): the
	// job ran past the lease. A loop held up by its own work (or a
	// starved process) shows here.
	Unnoticed int64 `json:"unnoticed"`
}

// ScaleConfig is one run of the scale scenario.
type ScaleConfig struct {
	Instances int
	Locks     int
	// Timing of the election and failover part (short, so that a run takes
	// minutes); Idle is measured at the defaults in a run of its own.
	Timing Timing
	// Window is how long round trips are counted once stable.
	Window time.Duration
	// LogDir, if set, keeps each instance's debug log there.
	LogDir string
}

// ScaleResult is what the scale scenario measured.
type ScaleResult struct {
	Store     string `json:"store"`
	Instances int    `json:"instances"`
	Locks     int    `json:"locks"`
	Timing    string `json:"timing"`
	// AllMastered is the time from the start of the instances until every
	// lock had a master.
	AllMastered time.Duration `json:"allMastered"`
	// MinHeld and MaxHeld are the spread of masterships per instance once
	// stable (after 5 check intervals); Share is ceil(locks/instances).
	MinHeld, MaxHeld, Share int
	// RoundTrips is each instance's store calls per second once stable
	// (each call is one round trip on every store).
	RoundTrips []float64 `json:"roundTrips"`
	// RSS is each instance's resident set size once stable, in bytes.
	RSS []int64 `json:"rss"`
	// CPU is each instance's CPU time (user and system) per minute over
	// the window, in ms.
	CPU []float64 `json:"cpu"`
	// After kill -9 of the instance holding the most masterships: how long
	// until all of its locks had a master again, and how many survivors
	// got some.
	Killed        string        `json:"killed"`
	KilledHeld    int           `json:"killedHeld"`
	Refailover    time.Duration `json:"refailover"`
	SpreadOver    int           `json:"spreadOver"`
	Survivors     int           `json:"survivors"`
	FailoverBound time.Duration `json:"failoverBound"` // lease + check interval
	Host          HostLoad      `json:"host"`
	// While settling (balancing's hand-offs), read once a second: how
	// many locks were seen without a master for longer than orphanLimit,
	// and the longest such time seen (a lower bound, to the second).
	Orphaned      int           `json:"orphaned"`
	LongestOrphan time.Duration `json:"longestOrphan"`
	// Unnoticed is the sum over the instances of InstanceLine.Unnoticed
	// at the end of the run (the killed instance's at its last line).
	Unnoticed int64 `json:"unnoticed"`
	// Join is what happened when a new instance joined the survivors.
	Join *ScaleJoin `json:"join,omitempty"`
}

// ScaleJoin is the last part of the scale scenario: once the survivors of
// the kill -9 have settled, a new instance starts, and balancing must give
// it its share within 5 check intervals, moving each lock at most once.
type ScaleJoin struct {
	// Settled is how long the survivors took, after the failover, to be
	// within their share and slack (the join waits for it, at most
	// 5 check intervals, so that its moves are the join's alone).
	Settled time.Duration `json:"settled"`
	// Share and Slack are the new instance's, among all instances.
	Share int `json:"share"`
	Slack int `json:"slack"`
	// Reached is the time from the new instance's start until it held at
	// least share - slack and no instance more than share + slack, every
	// lock mastered; zero if that did not happen within Bound.
	Reached time.Duration `json:"reached"`
	Bound   time.Duration `json:"bound"` // 5 check intervals
	// Held is the new instance's masterships at the end, a check interval
	// after Reached (or at 2 × Bound).
	Held int `json:"held"`
	// Moved counts the locks that changed holder while watched, and
	// MovedTwice those that changed more than once (flapping).
	Moved      int `json:"moved"`
	MovedTwice int `json:"movedTwice"`
	// Orphaned and LongestOrphan are as for settling, while joining.
	Orphaned      int           `json:"orphaned"`
	LongestOrphan time.Duration `json:"longestOrphan"`
}

// scaleInstance is one running instance.
type scaleInstance struct {
	id   string
	cmd  *exec.Cmd
	mu   sync.Mutex
	last InstanceLine
	prev []InstanceLine // every line, for rates
	done chan struct{}
}

func (si *scaleInstance) lines() []InstanceLine {
	si.mu.Lock()
	defer si.mu.Unlock()
	return slices.Clone(si.prev)
}

// Scale runs cfg.Instances instance processes taking part in cfg.Locks
// locks each on a fresh store and measures the election, the spread, the
// round trips and the failover after a kill -9.
func (e *Env) Scale(ctx context.Context, instanceBin string, cfg ScaleConfig) (*ScaleResult, error) {
	fresh, err := e.Backend.Fresh(fmt.Sprintf("scale-%d-%d", cfg.Instances, cfg.Locks))
	if err != nil {
		return nil, err
	}
	defer fresh.Drop()
	st, err := fresh.Open(ctx, "")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	names := make([]string, cfg.Locks)
	for i := range names {
		names[i] = fmt.Sprintf("L%05d", i)
	}
	host := markHost()
	res := &ScaleResult{Store: e.Backend.Kind, Instances: cfg.Instances, Locks: cfg.Locks, Timing: cfg.Timing.String(),
		Share: (cfg.Locks + cfg.Instances - 1) / cfg.Instances}
	var insts []*scaleInstance
	defer func() {
		for _, si := range insts {
			_ = si.cmd.Process.Signal(syscall.SIGKILL)
			<-si.done
		}
	}()
	t0 := time.Now()
	for i := range cfg.Instances {
		si, err := e.startInstance(instanceBin, fresh.URL, fmt.Sprintf("i%02d", i), cfg)
		if err != nil {
			return nil, err
		}
		insts = append(insts, si)
	}
	e.logf("  %s scale: %d instances, %d locks: waiting for every lock to have a master", e.Backend.Kind, cfg.Instances, cfg.Locks)
	limit := 10 * cfg.Timing.Check
	for {
		held, _, err := heldBy(ctx, st, names)
		if err != nil {
			return nil, err
		}
		if held[""] == 0 {
			res.AllMastered = time.Since(t0)
			break
		}
		if time.Since(t0) > limit {
			return nil, fmt.Errorf("scale: %d locks still without a master after %v", held[""], limit)
		}
		sleep(ctx, 100*time.Millisecond)
	}
	e.logf("  %s scale: all mastered after %v; settling for 5 check intervals", e.Backend.Kind, res.AllMastered.Round(time.Millisecond))
	res.Orphaned, res.LongestOrphan = watchOrphans(ctx, st, names, 5*cfg.Timing.Check)
	held, _, err := heldBy(ctx, st, names)
	if err != nil {
		return nil, err
	}
	res.MinHeld, res.MaxHeld = cfg.Locks, 0
	for _, si := range insts {
		n := held[si.id]
		res.MinHeld, res.MaxHeld = min(res.MinHeld, n), max(res.MaxHeld, n)
	}
	// Round trips once stable.
	start := map[string]InstanceLine{}
	for _, si := range insts {
		start[si.id] = si.snapshot()
	}
	sleep(ctx, cfg.Window)
	for _, si := range insts {
		a, b := start[si.id], si.snapshot()
		secs := float64(b.Mono-a.Mono) / 1e9
		if secs <= 0 {
			return nil, errors.New("scale: an instance stopped reporting")
		}
		res.RoundTrips = append(res.RoundTrips, float64(b.Calls-a.Calls)/secs)
		res.RSS = append(res.RSS, b.RSS)
		res.CPU = append(res.CPU, float64(b.CPU-a.CPU)/1e6/secs*60)
	}
	// kill -9 the busiest instance, as the store says now (the counts
	// read after settling are a window old).
	now, holders, err := heldBy(ctx, st, names)
	if err != nil {
		return nil, err
	}
	victim := insts[0]
	for _, si := range insts {
		if now[si.id] > now[victim.id] {
			victim = si
		}
	}
	var its []string
	for _, n := range names {
		if holders[n] == victim.id {
			its = append(its, n)
		}
	}
	res.Killed, res.KilledHeld, res.Survivors = victim.id, len(its), cfg.Instances-1
	res.FailoverBound = cfg.Timing.Tolerance + cfg.Timing.Check
	if len(its) == 0 {
		return nil, errors.New("scale: no instance holds a lock to kill")
	}
	before := now
	e.logf("  %s scale: kill -9 of %s (%d masterships)", e.Backend.Kind, victim.id, len(its))
	k0 := time.Now()
	_ = victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.done
	for {
		states, err := st.Locks(ctx, its...)
		if err != nil {
			return nil, err
		}
		free := 0
		for _, s := range states {
			if !s.Held() || s.Holder == victim.id {
				free++
			}
		}
		if free == 0 {
			res.Refailover = time.Since(k0)
			break
		}
		if time.Since(k0) > 3*res.FailoverBound {
			return nil, fmt.Errorf("scale: %d of %s's locks still without a master after %v", free, victim.id, time.Since(k0))
		}
		sleep(ctx, 50*time.Millisecond)
	}
	after, _, err := heldBy(ctx, st, names)
	if err != nil {
		return nil, err
	}
	for _, si := range insts {
		if si != victim && after[si.id] > before[si.id] {
			res.SpreadOver++
		}
	}
	join, err := e.scaleJoin(ctx, st, names, instanceBin, fresh.URL, cfg, &insts)
	if err != nil {
		return nil, err
	}
	res.Join = join
	for _, si := range insts {
		res.Unnoticed += si.snapshot().Unnoticed
	}
	res.Host = host.since()
	return res, nil
}

// scaleJoin waits for the survivors of the kill to settle, then starts a
// new instance and follows every lock once a second until the new
// instance has its share, and for a check interval more, to see whether
// a lock moves back.
func (e *Env) scaleJoin(ctx context.Context, st store.Store, names []string, bin, url string, cfg ScaleConfig, insts *[]*scaleInstance) (*ScaleJoin, error) {
	check := cfg.Timing.Check
	j := &ScaleJoin{Bound: 5 * check}
	survivors := cfg.Instances - 1
	s0 := time.Now()
	for {
		count, _, err := heldBy(ctx, st, names)
		if err != nil {
			return nil, err
		}
		share := (len(names) + survivors - 1) / survivors
		if balanced(count, share, balanceSlack(share)) || time.Since(s0) > 5*check {
			j.Settled = time.Since(s0)
			break
		}
		sleep(ctx, time.Second)
	}
	j.Share = (len(names) + cfg.Instances - 1) / cfg.Instances
	j.Slack = balanceSlack(j.Share)
	e.logf("  %s scale: survivors settled after %v; a new instance joins", e.Backend.Kind, j.Settled.Round(time.Millisecond))
	_, holders, err := heldBy(ctx, st, names)
	if err != nil {
		return nil, err
	}
	w := newJoinWatch(holders)
	const id = "j00"
	si, err := e.startInstance(bin, url, id, cfg)
	if err != nil {
		return nil, err
	}
	*insts = append(*insts, si)
	t0 := time.Now()
	end := t0.Add(2 * j.Bound)
	for ctx.Err() == nil && time.Now().Before(end) {
		sleep(ctx, time.Second)
		count, holders, err := heldBy(ctx, st, names)
		if err != nil {
			continue
		}
		now := time.Now()
		w.sample(now, names, holders)
		j.Held = count[id]
		if j.Reached == 0 && count[id] >= j.Share-j.Slack && balanced(count, j.Share, j.Slack) {
			if j.Reached = now.Sub(t0); j.Reached > j.Bound {
				j.Reached = 0 // reached, but late: reported as missed
			}
			end = now.Add(check)
		}
	}
	j.Moved, j.MovedTwice = w.moved()
	j.Orphaned, j.LongestOrphan = len(w.orphaned), w.longest
	return j, nil
}

// balanced reports whether every lock has a master and no holder has
// more than share + slack.
func balanced(count map[string]int, share, slack int) bool {
	if count[""] > 0 {
		return false
	}
	for id, n := range count {
		if id != "" && n > share+slack {
			return false
		}
	}
	return true
}

// balanceSlack is the library's default slack: max(1, 5% of the share).
func balanceSlack(share int) int {
	return max(1, int(math.Ceil(0.05*float64(share))))
}

// joinWatch follows the holder of every lock from one reading to the next:
// the locks that moved, and those without a master for long.
type joinWatch struct {
	last      map[string]string // the last holder seen of each lock
	moves     map[string]int
	freeSince map[string]time.Time
	orphaned  map[string]bool
	longest   time.Duration
}

func newJoinWatch(holders map[string]string) *joinWatch {
	if holders == nil {
		holders = map[string]string{}
	}
	return &joinWatch{last: maps.Clone(holders), moves: map[string]int{},
		freeSince: map[string]time.Time{}, orphaned: map[string]bool{}}
}

// sample takes one reading: holders maps each held lock to its holder. A
// lock moves when its holder differs from the last one seen (a lock free
// for a moment and taken back by the same holder did not move).
func (w *joinWatch) sample(now time.Time, names []string, holders map[string]string) {
	for _, n := range names {
		h, ok := holders[n]
		if !ok {
			since, seen := w.freeSince[n]
			if !seen {
				w.freeSince[n] = now
				continue
			}
			w.longest = max(w.longest, now.Sub(since))
			if now.Sub(since) > orphanLimit {
				w.orphaned[n] = true
			}
			continue
		}
		delete(w.freeSince, n)
		if prev, had := w.last[n]; had && prev != h {
			w.moves[n]++
		}
		w.last[n] = h
	}
}

// moved returns how many locks moved, and how many more than once.
func (w *joinWatch) moved() (moved, twice int) {
	for _, n := range w.moves {
		moved++
		if n > 1 {
			twice++
		}
	}
	return moved, twice
}

// orphanLimit is how long a lock may go without a master during
// balancing before the scale scenario counts it: a hand-off takes
// milliseconds, and a reservation no successor took lapses after 5 s.
const orphanLimit = 5 * time.Second

// watchOrphans reads the locks once a second for d and returns how many
// were seen without a master for longer than orphanLimit, and the longest
// time one was seen so (from the first read that saw it free to the last).
// A failed read is skipped.
func watchOrphans(ctx context.Context, st store.Store, names []string, d time.Duration) (over int, longest time.Duration) {
	end := time.Now().Add(d)
	w := newJoinWatch(nil)
	for ctx.Err() == nil && time.Now().Before(end) {
		now := time.Now()
		if _, holders, err := heldBy(ctx, st, names); err == nil {
			w.sample(now, names, holders)
		}
		sleep(ctx, min(time.Second, time.Until(end)))
	}
	return len(w.orphaned), w.longest
}

// heldBy returns the masterships per holder ("" for none) and the holder of
// each lock.
func heldBy(ctx context.Context, st store.Store, names []string) (map[string]int, map[string]string, error) {
	states, err := st.Locks(ctx, names...)
	if err != nil {
		return nil, nil, err
	}
	count, holder := map[string]int{}, map[string]string{}
	for _, s := range states {
		if s.Held() {
			count[s.Holder]++
			holder[s.Lock] = s.Holder
		} else {
			count[""]++
		}
	}
	return count, holder, nil
}

func (si *scaleInstance) snapshot() InstanceLine {
	si.mu.Lock()
	defer si.mu.Unlock()
	return si.last
}

// startInstance starts one instance process and reads its lines.
func (e *Env) startInstance(bin, storeURL, id string, cfg ScaleConfig) (*scaleInstance, error) {
	args := []string{"-store", storeURL, "-id", id, "-locks", strconv.Itoa(cfg.Locks)}
	t := cfg.Timing
	if t.Heartbeat > 0 {
		args = append(args, "-heartbeat-interval", t.Heartbeat.String())
	}
	if t.Tolerance > 0 {
		args = append(args, "-tolerance", t.Tolerance.String())
	}
	if t.Check > 0 {
		args = append(args, "-check-master-interval", t.Check.String())
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if cfg.LogDir != "" {
		// Each instance's log (debug level) in a file of its own.
		f, err := os.Create(filepath.Join(cfg.LogDir, id+".log"))
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own descriptor once started
		cmd.Args = append(cmd.Args, "-v")
		cmd.Stderr = f
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	si := &scaleInstance{id: id, cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(si.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l InstanceLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				si.mu.Lock()
				si.last = l
				si.prev = append(si.prev, l)
				si.mu.Unlock()
			}
		}
		_ = cmd.Wait()
	}()
	return si, nil
}
