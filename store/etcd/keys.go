package etcd

import (
	"encoding/json"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Key layout under the prefix P (see the package doc):
//
//	P k/NAME/l   the lease key: value the holder's id, attached to its lease
//	P k/NAME/h   the holder record of the current or last lease
//	P k/NAME/c   the control record (disabled, revoked token, hand-off)
//	P k/NAME/r   a reservation for a successor, attached to its own lease
//	P e/NAME/ID  one history entry
//	P m/ID       one member record, attached to its member's lease
//
// NAME is the lock name with "%" and "/" escaped, so that one prefix
// (P k/NAME/) holds exactly one lock's keys.
const (
	dirLocks   = "k/"
	dirEvents  = "e/"
	dirMembers = "m/"

	sufLease   = "l"
	sufHolder  = "h"
	sufControl = "c"
	sufReserve = "r"
)

var nameEscaper = strings.NewReplacer("%", "%25", "/", "%2F")
var nameUnescaper = strings.NewReplacer("%25", "%", "%2F", "/")

// LockKeyPrefix returns the prefix of every key of lock in a store whose
// key prefix is prefix, for an operator who inspects or deletes a lock's
// record with etcdctl (get or del --prefix).
func LockKeyPrefix(prefix, lock string) string { return prefix + dirLocks + escapeName(lock) + "/" }

func escapeName(name string) string         { return nameEscaper.Replace(name) }
func unescapeName(esc string) string        { return nameUnescaper.Replace(esc) }
func (s *Store) lockDir(name string) string { return LockKeyPrefix(s.prefix, name) }
func (s *Store) leaseKey(name string) string {
	return s.lockDir(name) + sufLease
}
func (s *Store) holderKey(name string) string  { return s.lockDir(name) + sufHolder }
func (s *Store) controlKey(name string) string { return s.lockDir(name) + sufControl }
func (s *Store) reserveKey(name string) string { return s.lockDir(name) + sufReserve }
func (s *Store) memberKey(id string) string    { return s.prefix + dirMembers + id }
func (s *Store) eventDir(lock string) string {
	return s.prefix + dirEvents + escapeName(lock) + "/"
}

// splitLockKey returns the lock name and the suffix of a key under
// P k/, or ok false.
func (s *Store) splitLockKey(key string) (name, suffix string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.prefix+dirLocks)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", "", false
	}
	return unescapeName(rest[:i]), rest[i+1:], true
}

// holderRecord is the value of P k/NAME/h. An acquisition writes it in the
// transaction that creates the lease key, so its mod revision is the
// lease's token; a release rewrites it with the token spelt out and
// Released set.
type holderRecord struct {
	Holder     string `json:"holder"`
	Info       string `json:"info,omitempty"`
	AcquiredAt int64  `json:"acquiredAt,omitempty"` // writer's wall clock, Unix ns
	TTL        int64  `json:"ttl,omitempty"`        // the lease's TTL in seconds
	Token      int64  `json:"token,omitempty"`      // 0: the record's mod revision
	Released   bool   `json:"released,omitempty"`
}

// controlRecord is the value of P k/NAME/c. Only Disable, Enable and
// Handoff write it.
type controlRecord struct {
	Disabled  bool   `json:"disabled,omitempty"`
	Reason    string `json:"reason,omitempty"`
	ChangedBy string `json:"changedBy,omitempty"`
	ChangedAt int64  `json:"changedAt,omitempty"` // writer's wall clock, Unix ns
	// RevokedToken is the token of the lease that Disable revoked.
	RevokedToken int64 `json:"revokedToken,omitempty"`
	// HandoffToken is the token of the lease a hand-off was requested
	// for; the request ends with that lease.
	HandoffToken int64  `json:"handoffToken,omitempty"`
	HandoffTo    string `json:"handoffTo,omitempty"`
}

// memberRecord is the value of P m/ID.
type memberRecord struct {
	Info      string   `json:"info,omitempty"`
	Locks     []string `json:"locks,omitempty"`
	LockSetID string   `json:"lockSetId,omitempty"`
	Masters   int      `json:"masters,omitempty"`
	Weight    float64  `json:"weight,omitempty"`
	WrittenAt int64    `json:"writtenAt,omitempty"` // writer's wall clock, Unix ns
}

// eventRecord is the value of P e/NAME/ID.
type eventRecord struct {
	Lock     string `json:"lock"`
	Kind     string `json:"kind"`
	Instance string `json:"instance,omitempty"`
	Token    int64  `json:"token,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Remote   string `json:"remote,omitempty"`
	At       int64  `json:"at"` // writer's wall clock, Unix ns
	Index    int64  `json:"i"`  // position in its transaction
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("etcd: cannot encode a record: " + err.Error())
	}
	return string(b)
}

// lockKeys is what a read found of one lock's keys.
type lockKeys struct {
	name                      string
	lease, holder, ctl, resrv *mvccpb.KeyValue
}

func (k *lockKeys) known() bool {
	return k.lease != nil || k.holder != nil || k.ctl != nil || k.resrv != nil
}

func (k *lockKeys) holderRec() holderRecord {
	var r holderRecord
	if k.holder != nil {
		_ = json.Unmarshal(k.holder.Value, &r)
		if r.Token == 0 {
			r.Token = k.holder.ModRevision
		}
	}
	return r
}

func (k *lockKeys) controlRec() controlRecord {
	var r controlRecord
	if k.ctl != nil {
		_ = json.Unmarshal(k.ctl.Value, &r)
	}
	return r
}

// token is the token of the current lease, or of the last one: the
// revision that wrote the holder record of the lease (holderRec), which an
// acquisition writes beside the lease key it creates and a transfer beside
// the lease key it gives. A holder record missing beside a lease key (only
// a hand-made one) leaves the lease key's create revision.
func (k *lockKeys) token() int64 {
	if k.holder != nil {
		return k.holderRec().Token
	}
	if k.lease != nil {
		return k.lease.CreateRevision
	}
	return 0
}

func modRev(kv *mvccpb.KeyValue) int64 {
	if kv == nil {
		return 0
	}
	return kv.ModRevision
}

func wallTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
