package controlapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/masterjob/masterjob/store"
)

// InstancesPath is the path of the member list: GET /api/instances. Mount
// the handler there too (httpserver does).
const InstancesPath = "/api/instances"

// LockState is a state a lock can be in, as the filters of the lock list
// name them.
type LockState string

// States of a lock.
const (
	// StateMaster: an instance holds an unexpired lease (the lock may be
	// disabled and its master stopping).
	StateMaster LockState = "master"
	// StateNoMaster: enabled, and no instance is master.
	StateNoMaster LockState = "nomaster"
	// StateDisabled: disabled (its master, if any, is stopping).
	StateDisabled LockState = "disabled"
	// StateNoStandby: enabled, and no live member other than its master
	// takes part in it: nobody could take over. Only on stores that keep
	// a member list.
	StateNoStandby LockState = "nostandby"
)

var lockStates = []LockState{StateMaster, StateNoMaster, StateDisabled, StateNoStandby}

// LockFilter selects locks of a list, as the query parameters of GET
// /api/mastercontrols (match, state, instance) do. The zero value selects
// every lock.
type LockFilter struct {
	// Match, if not empty, selects the locks whose name contains it,
	// ignoring case.
	Match string
	// State, if not empty, selects the locks in that state.
	State LockState
	// Instance, if not empty, selects the locks that instance is master
	// of.
	Instance string
}

// Matches reports whether l passes the filter.
func (f LockFilter) Matches(l Lock) bool {
	if f.Match != "" && !containsFold(l.LockName, f.Match) {
		return false
	}
	if f.Instance != "" && l.Master != f.Instance {
		return false
	}
	switch f.State {
	case StateMaster:
		return l.Master != ""
	case StateNoMaster:
		return l.Master == "" && !l.Disabled
	case StateDisabled:
		return l.Disabled
	case StateNoStandby:
		return !l.Disabled && l.Standbys != nil && *l.Standbys == 0
	}
	return true
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// Summarize counts locks by state and masterships by instance.
func Summarize(locks []Lock) Summary {
	var (
		s         Summary
		noStandby int
		standbys  bool
		byID      = map[string]*Masterships{}
	)
	s.Locks = len(locks)
	for _, l := range locks {
		switch {
		case l.Master != "":
			s.WithMaster++
		case !l.Disabled:
			s.NoMaster++
		}
		if l.Disabled {
			s.Disabled++
		}
		if l.Standbys != nil {
			standbys = true
			if *l.Standbys == 0 && !l.Disabled {
				noStandby++
			}
		}
		if l.Master != "" {
			m := byID[l.Master]
			if m == nil {
				m = &Masterships{Instance: l.Master}
				if l.Holder != nil {
					m.Host = l.Holder.Host
				}
				byID[l.Master] = m
			}
			m.Count++
		}
	}
	if standbys {
		s.NoStandby = &noStandby
	}
	s.Masters = make([]Masterships, 0, len(byID))
	for _, m := range byID {
		s.Masters = append(s.Masters, *m)
	}
	slices.SortFunc(s.Masters, func(a, b Masterships) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Instance, b.Instance))
	})
	return s
}

// memberCacheTTL is how long the handler reuses a member list it read:
// the dashboard and scripts polling the lists every second cost one read
// of the member list per second, however many they are.
const memberCacheTTL = time.Second

// memberCache keeps the last member list read with the locks of each
// member.
type memberCache struct {
	mu      sync.Mutex
	at      time.Time
	members []store.Member
}

// allMembers returns every live member with its locks, read at most
// memberCacheTTL ago; ok is false when the store keeps no member list.
func (h *Handler) allMembers(ctx context.Context) (members []store.Member, ok bool, err error) {
	ms, ok := h.st.(store.Membership)
	if !ok {
		return nil, false, nil
	}
	c := &h.memberCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < memberCacheTTL {
		return c.members, true, nil
	}
	members, err = ms.Members(ctx, store.MemberFilter{WithLocks: true})
	if err != nil {
		return nil, true, err
	}
	c.members, c.at = members, time.Now()
	return members, true, nil
}

// forgetMembers drops the cached member list (after a change the caller
// wants to see at once).
func (h *Handler) forgetMembers() {
	h.memberCache.mu.Lock()
	h.memberCache.at = time.Time{}
	h.memberCache.mu.Unlock()
}

// SetStandbys sets the standby count of each lock (Lock.Standbys) from
// members, each with its locks sorted (store.MemberFilter.WithLocks), as
// the lock list of the API does.
func SetStandbys(locks []Lock, members []store.Member) {
	// Members with the same lock set take part in the same locks: count
	// each set once, however many members share it.
	setOf := make(map[string]string, len(members)) // member id -> set
	count := map[string]int{}
	first := map[string]*store.Member{}
	for i := range members {
		key := members[i].LockSetID
		if key == "" {
			key = "\x00" + members[i].ID
		}
		if count[key] == 0 {
			first[key] = &members[i]
		}
		count[key]++
		setOf[members[i].ID] = key
	}
	takers := make(map[string]int, len(locks))
	for key, n := range count {
		for _, l := range first[key].Locks {
			takers[l] += n
		}
	}
	in := map[string]map[string]struct{}{} // set -> its locks, built when a master needs it
	for i := range locks {
		n := takers[locks[i].LockName]
		if key, ok := setOf[locks[i].Master]; ok && locks[i].Master != "" {
			set := in[key]
			if set == nil {
				set = make(map[string]struct{}, len(first[key].Locks))
				for _, l := range first[key].Locks {
					set[l] = struct{}{}
				}
				in[key] = set
			}
			if _, part := set[locks[i].LockName]; part {
				n--
			}
		}
		locks[i].Standbys = &n
	}
}

// candidatesOf returns the ids of members (those taking part in one lock),
// its master first, then by id.
func candidatesOf(master string, members []store.Member) []string {
	out := make([]string, 0, len(members))
	for _, m := range members {
		if m.ID == master {
			out = append(out, m.ID)
		}
	}
	for _, m := range members {
		if m.ID != master {
			out = append(out, m.ID)
		}
	}
	return out
}

// instances serves GET /api/instances[?lockName=...]: the live members,
// those taking part in lockName when it is given.
func (h *Handler) instances(w http.ResponseWriter, r *http.Request) {
	q, rerr := parseQuery(r.URL.RawQuery, map[string]bool{fieldLockName: false})
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	var f store.MemberFilter
	if q.Has(fieldLockName) {
		f.Lock = q.Get(fieldLockName)
		if rerr := checkLockName(f.Lock); rerr != nil {
			h.refuse(w, r, rerr)
			return
		}
	}
	ms, ok := h.st.(store.Membership)
	if !ok {
		writeJSON(w, http.StatusNotImplemented, Error{Error: "this store keeps no member list: instances do not announce themselves in it"})
		return
	}
	ctx, end, ok := h.begin(w, r, h.reads)
	if !ok {
		return
	}
	defer end()
	members, err := ms.Members(ctx, f)
	if err != nil {
		h.storeFailed(w, r, "members", err)
		return
	}
	out := InstanceList{Instances: make([]Instance, len(members))}
	for i, m := range members {
		out.Instances[i] = InstanceOf(m)
	}
	writeJSON(w, http.StatusOK, out)
}

// Errors of Handoff, besides store.ErrNotHeld (the lock has no master) and
// store.ErrLockDisabled.
var (
	// ErrHandoffUnsupported: the store cannot hand a lease over (it does
	// not implement store.Handoffs).
	ErrHandoffUnsupported = errors.New("controlapi: the store cannot hand off a lock")
	// ErrUnknownLock: the store has no record of the lock.
	ErrUnknownLock = errors.New("controlapi: unknown lock")
	// ErrNotCandidate: the instance named as the successor is not a live
	// member taking part in the lock, or is its master already.
	ErrNotCandidate = errors.New("controlapi: not a live member taking part in the lock")
	// ErrNoCandidate: no live member other than the master takes part in
	// the lock; a hand-off would only restart the job where it runs.
	ErrNoCandidate = errors.New("controlapi: no other live member takes part in the lock")
)

// Handoff asks the master of req.LockName to hand the lock over, as POST
// /api/mastercontrols/handoff does, and records the request in st's
// history (store.History) as made by by from remote ("" when not over
// HTTP). The master stops its job, then releases the lease, reserved for
// req.To for a short while when it is set; it does not take the lock back
// soon unless no other instance takes part.
//
// On a store that keeps a member list (store.Membership), req.To must be
// a live member taking part in the lock other than its master
// (ErrNotCandidate), and without req.To another such member must exist
// (ErrNoCandidate). Other errors wrap ErrHandoffUnsupported,
// ErrUnknownLock, store.ErrLockDisabled, store.ErrNotHeld, or the store's
// own.
func Handoff(ctx context.Context, st store.Store, req HandoffRequest, by, remote string) (HandoffResult, error) {
	hist, _ := st.(store.History)
	return handoff(ctx, st, hist, req, by, remote)
}

func handoff(ctx context.Context, st store.Store, hist store.History, req HandoffRequest, by, remote string) (HandoffResult, error) {
	ho, ok := st.(store.Handoffs)
	if !ok {
		return HandoffResult{}, ErrHandoffUnsupported
	}
	if err := store.ValidateLockName(req.LockName); err != nil {
		return HandoffResult{}, err
	}
	// The lock's state and its members, read at once: both are on the
	// path of the hand-off.
	ms, withMembers := st.(store.Membership)
	var (
		members    []store.Member
		membersErr error
		read       = make(chan struct{})
	)
	go func() {
		defer close(read)
		if withMembers {
			members, membersErr = ms.Members(ctx, store.MemberFilter{Lock: req.LockName})
		}
	}()
	states, err := st.Locks(ctx, req.LockName)
	<-read
	if err != nil {
		return HandoffResult{}, err
	}
	if len(states) != 1 {
		return HandoffResult{}, fmt.Errorf("store returned %d states for one lock", len(states))
	}
	if err := handoffRefused(states[0], req.LockName); err != nil {
		return HandoffResult{}, err
	}
	master := states[0].Holder
	if withMembers {
		if membersErr != nil {
			return HandoffResult{}, membersErr
		}
		ids := make([]string, 0, len(members))
		for _, m := range members {
			if m.ID != master {
				ids = append(ids, m.ID)
			}
		}
		switch {
		case req.To == master:
			return HandoffResult{}, refusal(ErrNotCandidate, "%q is the master of %q already", req.To, req.LockName)
		case req.To != "" && !slices.Contains(ids, req.To):
			return HandoffResult{}, refusal(ErrNotCandidate, "%q is not a live member taking part in %q (candidates: %s)",
				req.To, req.LockName, listOrNone(ids))
		case len(ids) == 0:
			return HandoffResult{}, refusal(ErrNoCandidate, "no live member other than its master %q takes part in %q: a hand-off would only restart its job there",
				master, req.LockName)
		}
	}
	state, err := ho.Handoff(ctx, req.LockName, req.To, by)
	if err != nil {
		if errors.Is(err, store.ErrNotHeld) && state.Lock == req.LockName {
			if rerr := handoffRefused(state, req.LockName); rerr != nil {
				return HandoffResult{}, rerr
			}
		}
		return HandoffResult{}, err
	}
	if state.Holder != "" {
		master = state.Holder
	}
	to := req.To
	if to == "" {
		to = "any other instance"
	}
	res := HandoffResult{
		From: master, To: req.To, Lock: LockOf(state),
		Message: fmt.Sprintf("Asked %s to hand %s over to %s: it stops its job, then releases the lock", master, req.LockName, to),
	}
	if hist != nil {
		reason := "from " + master + " to " + to
		if req.Reason != "" {
			reason += ": " + req.Reason
		}
		e := store.Event{Lock: req.LockName, Kind: store.EventHandoff, Instance: by, Token: state.Token, Reason: reason, Remote: remote}
		if err := hist.AppendEvents(ctx, []store.Event{e}); err != nil {
			res.Warning = "the hand-off was requested but could not be recorded in the history"
		}
	}
	return res, nil
}

// handoffRefused returns why a lock in state s cannot be handed off, or
// nil.
func handoffRefused(s store.LockState, name string) error {
	switch {
	case LockOf(s).Unknown:
		return refusal(ErrUnknownLock, "unknown lock %q: the store has no record of it", name)
	case s.Disabled:
		return refusal(store.ErrLockDisabled, "%q is disabled: enable it first", name)
	case !s.Held():
		return refusal(store.ErrNotHeld, "%q has no master to hand it over", name)
	}
	return nil
}

// handoffRefusal is a hand-off refused for the state of the lock or of
// the cluster: its message is for people, its sentinel for callers.
type handoffRefusal struct {
	sentinel error
	msg      string
}

func (e *handoffRefusal) Error() string { return e.msg }
func (e *handoffRefusal) Unwrap() error { return e.sentinel }

func refusal(sentinel error, format string, args ...any) error {
	return &handoffRefusal{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

func listOrNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	const most = 10
	q := make([]string, 0, min(len(ids), most))
	for _, id := range ids[:min(len(ids), most)] {
		q = append(q, fmt.Sprintf("%q", id))
	}
	s := strings.Join(q, ", ")
	if len(ids) > most {
		s += fmt.Sprintf(" and %d more", len(ids)-most)
	}
	return s
}

// handoffRequest serves POST /api/mastercontrols/handoff.
func (h *Handler) handoffRequest(w http.ResponseWriter, r *http.Request) {
	caller, body, ok := h.controlBody(w, r)
	if !ok {
		return
	}
	req, rerr := decodeHandoffRequest(body)
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	if _, ok := h.st.(store.Handoffs); !ok {
		writeJSON(w, http.StatusNotImplemented, Error{Error: "this store cannot hand a lock over; disable and enable it instead"})
		return
	}
	ctx, end, ok := h.begin(w, r, h.writes)
	if !ok {
		return
	}
	defer end()
	res, err := handoff(ctx, h.st, h.history, req, caller, r.RemoteAddr)
	if err != nil {
		msg := err.Error()
		switch {
		case errors.Is(err, ErrUnknownLock):
			h.refuse(w, r, &requestError{status: http.StatusNotFound, Error: Error{Field: fieldLockName, Error: msg}})
		case errors.Is(err, store.ErrLockDisabled), errors.Is(err, store.ErrNotHeld), errors.Is(err, ErrNoCandidate):
			h.refuse(w, r, &requestError{status: http.StatusConflict, Error: Error{Field: fieldLockName, Error: msg}})
		case errors.Is(err, ErrNotCandidate):
			h.refuse(w, r, &requestError{status: http.StatusConflict, Error: Error{Field: fieldTo, Error: msg}})
		default:
			h.storeFailed(w, r, "handoff", err)
		}
		return
	}
	h.log.Info("control request", "op", "handoff", "lock", req.LockName, "from", res.From, "to", req.To,
		"reason", req.Reason, "by", caller, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}
