// Package changehint writes and reads the hints of a lease change
// (store.Change's Holder, Token and ReservedFor) in the kind field of a
// backend's notification, as "<kind>\x1e<holder>\x1e<token>\x1e<reserved
// for>". A reader that predates the hints sees a kind it does not know,
// which every version reads as a lease change of the lock: so the hints
// need no new field in the backends' payloads or tables.
package changehint

import (
	"strconv"
	"strings"

	"github.com/masterjob/masterjob/store"
)

// Sep separates the kind from the hints and the hints from each other. No
// lock name or valid instance id holds it.
const Sep = "\x1e"

// unsayable reports whether id cannot stand in a payload: it holds Sep, or
// the unit separator that backends put between the kind and the lock.
func unsayable(id string) bool { return strings.ContainsAny(id, Sep+"\x1f") }

// Kind returns the kind field of c: its kind alone when it has no hints
// (or any of its instance ids holds a separator, which leaves the hints
// unsaid rather than cut short), its kind and hints otherwise. A
// control change's revoked token goes where a lease change's token goes,
// with no holder: a version that predates it reads a bare control change.
func Kind(c store.Change) string {
	if c.Kind == store.ChangeControl {
		if c.Revoked <= 0 {
			return string(c.Kind)
		}
		return string(c.Kind) + Sep + Sep + strconv.FormatInt(c.Revoked, 10) + Sep
	}
	holder, token, acquired := c.Acquisition()
	if !acquired {
		holder, token = "", 0
	}
	if (!acquired && c.ReservedFor == "") || unsayable(holder) || unsayable(c.ReservedFor) {
		return string(c.Kind)
	}
	return string(c.Kind) + Sep + holder + Sep + strconv.FormatInt(token, 10) + Sep + c.ReservedFor
}

// Parse returns the change of lock that kind (as Kind writes it) says. A
// kind field with hints that do not parse gives the kind without them.
func Parse(kind, lock string) store.Change {
	f := strings.Split(kind, Sep)
	c := store.Change{Kind: store.ChangeKind(f[0]), Lock: lock}
	if len(f) != 4 {
		if len(f) > 1 {
			c.Kind = store.ChangeLease // hints of a kind this version cannot read
		}
		return c
	}
	t, err := strconv.ParseInt(f[2], 10, 64)
	if c.Kind == store.ChangeControl {
		if err == nil && t > 0 && f[1] == "" && f[3] == "" {
			c.Revoked = t
		}
		return c
	}
	c.ReservedFor = f[3]
	if err == nil && t > 0 && f[1] != "" {
		c.Holder, c.Token = f[1], t
	}
	return c
}

// Merge returns what two changes of one lock, queued together in this
// order, say: their hints only when both say the same, since a receiver
// acts on one change per lock and a hint of one may let it skip the call
// the other needs (a release after an acquisition, say). Changes of
// different kinds merge into a bare lease change, which every receiver
// reads as "look again".
//
// One exception: a control change that revoked nothing (an Enable, most
// often) followed by an acquisition merges into that acquisition. The
// acquisition is the later state and says all a receiver needs: the lock
// is taken, by whom. A bare change would have every member but the new
// master read the lock as perhaps free, and the first in line among them
// send an acquisition at once for a lock just taken (an Enable's push and
// the acquisition it brought arrive a millisecond apart). The one thing an
// Enable tells a master, "look again", an acquisition by another holder
// tells it too (the loop renews on either). A Disable that revoked a lease
// keeps its hint out of any merge.
func Merge(a, b store.Change) store.Change {
	if a == b {
		return a
	}
	if _, _, ok := b.Acquisition(); ok && a.Kind == store.ChangeControl && a.Revoked == 0 {
		return b
	}
	kind := store.ChangeLease
	if a.Kind == b.Kind {
		kind = a.Kind
	}
	return store.Change{Kind: kind, Lock: a.Lock}
}
