package controlapi

import (
	"encoding/json"
	"time"

	"github.com/masterjob/masterjob/store"
)

// ControlRequest is the body of POST /api/mastercontrols/disable and
// /api/mastercontrols/enable: {"lockName": "...", "reason": "..."}. A
// disable needs a reason (not only white space), as the seed's did; on
// enable it is optional and recorded in the history only.
type ControlRequest struct {
	LockName string `json:"lockName"`
	Reason   string `json:"reason,omitempty"`
}

// ControlResult is the response to a disable or enable request.
type ControlResult struct {
	// Changed is false when the lock already was in the requested state,
	// which is not an error.
	Changed bool `json:"changed"`
	// Message says what happened, for people. It begins with the seed's
	// sentence: "Flagged X as disabled", "X is already flagged as
	// disabled" or "X is flagged for (re)enablement".
	Message string `json:"message"`
	// Lock is the lock's state after the request.
	Lock Lock `json:"lock"`
	// Warning is set when the change was made but could not be recorded in
	// the history.
	Warning string `json:"warning,omitempty"`
}

// LockList is the response to GET /api/mastercontrols: the locks that
// match the query's filters, ordered by name, one page of them when the
// query has a limit.
type LockList struct {
	Locks []Lock `json:"locks"`
	// Total is how many locks match the filters, over every page.
	Total int `json:"total"`
	// NextAfter, when set, is the "after" parameter that asks for the next
	// page; it is omitted on the last page and without a limit.
	NextAfter string `json:"nextAfter,omitempty"`
	// Summary counts every lock listed or named, whatever the filters
	// and the page.
	Summary Summary `json:"summary"`
}

// Summary counts locks by state, and masterships by instance.
type Summary struct {
	Locks      int `json:"locks"`
	WithMaster int `json:"withMaster"`
	// NoMaster counts the enabled locks without a master.
	NoMaster int `json:"noMaster"`
	Disabled int `json:"disabled"`
	// NoStandby counts the enabled locks that no live member other than
	// their master takes part in; omitted when the store keeps no member
	// list.
	NoStandby *int `json:"noStandby,omitempty"`
	// Masters lists, per instance that is master of at least one of the
	// locks, how many it masters, most first.
	Masters []Masterships `json:"masters"`
}

// Masterships is how many locks one instance masters.
type Masterships struct {
	Instance string `json:"instance"`
	// Host is the master's host, as it described itself, if it did.
	Host  string `json:"host,omitempty"`
	Count int    `json:"count"`
}

// Lock is the JSON form of one lock's state (store.LockState) at the time
// of the request: the one shape of a lock in every view, the control API's
// answers, `masterjob status --json` (an array of them) and the dashboard.
// Times are the store's, in RFC 3339; zero times are omitted. The lease
// fields (master, holder, holderInfo, since, lastRenewal, expiresAt,
// revoked) describe an unexpired lease only: when no instance is master
// they are empty and expiresInMs is 0.
//
//	{"lockName": "JOB-SCHEDULER", "master": "web-1-3f2a", "holder": {"host": "web-1", "pid": 4242,
//	 "address": "10.0.0.5:8080", "version": "v1.2.0"}, "token": 7, "since": "2025-01-02T03:04:05Z",
//	 "lastRenewal": "2025-01-02T03:09:01Z", "expiresAt": "2025-01-02T03:09:25Z", "expiresInMs": 23890,
//	 "revoked": false, "disabled": false, "reason": "", "changedBy": ""}
type Lock struct {
	LockName string `json:"lockName"`
	// Unknown is set (and present) only for a lock the store has no
	// record of: no instance has ever been its master and it was never
	// disabled (token 0, never changed). The store reports such a name as
	// free and enabled; the answer to a request that named it says it is
	// unknown instead. GET /api/mastercontrols/locks/{lockName} answers
	// 404 for it.
	Unknown bool `json:"unknown,omitempty"`
	// Master is the instance id of the holder of the unexpired lease, or
	// "" when no instance is master.
	Master string `json:"master"`
	// Holder is what the master said of itself, when it said it in the
	// usual JSON form (masterjob.InstanceInfo).
	Holder *Holder `json:"holder,omitempty"`
	// HolderInfo is the master's description verbatim, when it is not in
	// that form.
	HolderInfo string `json:"holderInfo,omitempty"`
	// Token is the fencing token of the current or most recent lease; 0 if
	// the lock was never acquired.
	Token int64 `json:"token"`
	// Since is when the master acquired the lease.
	Since time.Time `json:"since,omitzero"`
	// LastRenewal is when the master last renewed the lease.
	LastRenewal time.Time `json:"lastRenewal,omitzero"`
	// ExpiresAt is when the lease expires unless renewed.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// ExpiresInMs is the time left on the lease as measured by the store,
	// in milliseconds; 0 when no instance is master.
	ExpiresInMs int64 `json:"expiresInMs"`
	// Revoked is set when the lock was disabled while held: the master is
	// stopping its job and will release the lease.
	Revoked bool `json:"revoked"`
	// Disabled, Reason, ChangedBy and ChangedAt are the lock's control.
	Disabled  bool      `json:"disabled"`
	Reason    string    `json:"reason"`
	ChangedBy string    `json:"changedBy"`
	ChangedAt time.Time `json:"changedAt,omitzero"`

	// Standbys is how many live members other than the master take part
	// in the lock: the instances that could take over. Omitted when the
	// store keeps no member list (store.Membership).
	Standbys *int `json:"standbys,omitempty"`
	// Candidates lists the live members taking part in the lock, its
	// master first, then by instance id. Set only when one lock is read
	// (GET /api/mastercontrols/locks/{lockName}) on a store that keeps a
	// member list.
	Candidates []string `json:"candidates,omitempty"`
	// HandoffRequested is set while an operator's hand-off of the lease is
	// pending, HandoffTo naming the instance asked for ("" for any
	// other).
	HandoffRequested bool   `json:"handoffRequested,omitempty"`
	HandoffTo        string `json:"handoffTo,omitempty"`
	// ReservedFor names the only instance that may acquire the lock for a
	// short while after a hand-off to it.
	ReservedFor string `json:"reservedFor,omitempty"`
}

// Holder is the description a master gives of itself.
type Holder struct {
	Host    string `json:"host,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Address string `json:"address,omitempty"`
	Version string `json:"version,omitempty"`
}

// LockOf returns the JSON form of a lock's state.
func LockOf(s store.LockState) Lock { return lockOf(s, nil) }

// lockOf is LockOf, parsing each description once when holders (by
// description) is not nil: a list of many locks has few masters. The
// Holder values are shared between the locks; nothing changes them.
func lockOf(s store.LockState, holders map[string]*Holder) Lock {
	l := Lock{
		LockName:  s.Lock,
		Token:     s.Token,
		Disabled:  s.Disabled,
		Reason:    s.Reason,
		ChangedBy: s.ChangedBy,
		ChangedAt: s.ChangedAt,
		Unknown:   s.Token == 0 && s.ChangedAt.IsZero() && !s.Disabled && s.Holder == "",
	}
	if s.ReservedFor != "" && s.ReservedTTL > 0 && !s.Held() {
		l.ReservedFor = s.ReservedFor
	}
	if s.Held() {
		l.HandoffRequested, l.HandoffTo = s.HandoffRequested, s.HandoffTo
		l.Master = s.Holder
		l.Since, l.LastRenewal, l.ExpiresAt = s.AcquiredAt, s.RenewedAt, s.ExpiresAt
		l.ExpiresInMs = max(s.TTL.Milliseconds(), 1) // held: some time is left
		l.Revoked = s.Revoked
		if s.HolderInfo != "" {
			h, seen := holders[s.HolderInfo]
			if !seen {
				var v Holder
				if err := json.Unmarshal([]byte(s.HolderInfo), &v); err == nil {
					h = &v
				}
				if holders != nil {
					holders[s.HolderInfo] = h
				}
			}
			if h != nil {
				l.Holder = h
			} else {
				l.HolderInfo = s.HolderInfo
			}
		}
	}
	return l
}

// EventPage is the response to GET /api/mastercontrols/history: entries
// newest first.
type EventPage struct {
	Events []Event `json:"events"`
	// NextBefore, when set, is the "before" parameter that asks for the
	// next (older) page; it is omitted when this page was the last.
	NextBefore int64 `json:"nextBefore,omitempty"`
}

// Event is the JSON form of a history entry (store.Event).
type Event struct {
	ID       int64     `json:"id"`
	LockName string    `json:"lockName"`
	Kind     string    `json:"kind"`
	Instance string    `json:"instance"`
	Token    int64     `json:"token,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Remote   string    `json:"remote,omitempty"`
	At       time.Time `json:"at"`
}

// EventOf returns the JSON form of a history entry.
func EventOf(e store.Event) Event {
	return Event{
		ID: e.ID, LockName: e.Lock, Kind: string(e.Kind), Instance: e.Instance,
		Token: e.Token, Reason: e.Reason, Remote: e.Remote, At: e.At,
	}
}

// Error is the body of every response with a 4xx or 5xx status.
type Error struct {
	// Error says what went wrong.
	Error string `json:"error"`
	// Field names the request field (body field, query parameter or path
	// segment) at fault, if one is.
	Field string `json:"field,omitempty"`
}

// Instance is the JSON form of a live member of the cluster
// (store.Member): an instance that announced itself in the store and whose
// record has not expired.
//
//	{"id": "web-1-4242-3f2a", "host": "web-1", "pid": 4242, "version": "v1.2.0",
//	 "address": "web-1:8080", "started": "2025-01-02T03:04:05Z", "masters": 3, "lockCount": 12,
//	 "weight": 1, "lastSeen": "2025-01-02T03:09:01Z", "ttlMs": 118000}
type Instance struct {
	ID string `json:"id"`
	// Host, PID, Version, Address (its HTTP address, if it serves one)
	// and Started are what the instance said of itself, when it said it
	// in the usual JSON form (masterjob.InstanceInfo).
	Host    string    `json:"host,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Version string    `json:"version,omitempty"`
	Address string    `json:"address,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// Info is its description verbatim, when it is not in that form.
	Info string `json:"info,omitempty"`
	// Masters is how many masterships it held when it last announced
	// itself (at LastSeen).
	Masters int `json:"masters"`
	// LockCount is how many locks it takes part in.
	LockCount int `json:"lockCount"`
	// Weight is its share of the masterships relative to the others, for
	// balancing (1 when not set).
	Weight float64 `json:"weight"`
	// LastSeen is when the store last wrote its record (store clock),
	// TTLMs the milliseconds left before the record expires unless the
	// instance announces itself again.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	TTLMs    int64     `json:"ttlMs"`
}

// InstanceList is the response to GET /api/instances: the live members,
// ordered by id.
type InstanceList struct {
	Instances []Instance `json:"instances"`
}

// InstanceOf returns the JSON form of a member.
func InstanceOf(m store.Member) Instance {
	in := Instance{
		ID: m.ID, Masters: m.Masters, LockCount: m.LockCount, Weight: m.Weight,
		LastSeen: m.SeenAt, TTLMs: max(m.TTL.Milliseconds(), 0),
	}
	if in.Weight <= 0 {
		in.Weight = 1
	}
	if info, ok := parseInfo(m.Info); ok {
		in.Host, in.PID, in.Version, in.Address, in.Started = info.Host, info.PID, info.Version, info.Address, info.Started
	} else {
		in.Info = m.Info
	}
	return in
}

// instanceInfo is the usual JSON form of an instance's description
// (masterjob.InstanceInfo).
type instanceInfo struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Address string    `json:"address"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
}

func parseInfo(s string) (instanceInfo, bool) {
	var info instanceInfo
	if s == "" || s[0] != '{' || json.Unmarshal([]byte(s), &info) != nil {
		return instanceInfo{}, false
	}
	return info, true
}

// HandoffRequest is the body of POST /api/mastercontrols/handoff.
type HandoffRequest struct {
	LockName string `json:"lockName"`
	// To is the instance id of the live member that should take the lock
	// over; empty for any other.
	To string `json:"to,omitempty"`
	// Reason is optional and recorded in the history.
	Reason string `json:"reason,omitempty"`
}

// HandoffResult is the response to a hand-off request.
type HandoffResult struct {
	// Message says what happens next, for people.
	Message string `json:"message"`
	// From is the master asked to hand the lock over, To the instance it
	// is handed to ("" for any other).
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	// Lock is the lock's state after the request.
	Lock Lock `json:"lock"`
	// Warning is set when the request was made but could not be recorded
	// in the history.
	Warning string `json:"warning,omitempty"`
}

// MemberEvent is the data of a "member" event of the event stream: an
// instance joined the cluster (its member record appeared) or left it
// (its record was removed at shutdown, or expired).
type MemberEvent struct {
	// Kind is "joined" or "left".
	Kind     string `json:"kind"`
	Instance string `json:"instance"`
	Host     string `json:"host,omitempty"`
	Address  string `json:"address,omitempty"`
	// LockCount is how many locks it takes part in.
	LockCount int `json:"lockCount"`
	// At is when the store last wrote its record (store clock).
	At time.Time `json:"at,omitzero"`
}
