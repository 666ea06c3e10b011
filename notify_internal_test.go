package masterjob

import (
	"testing"

	"github.com/masterjob/masterjob/store"
)

// TestInboxMergesHintsConservatively: two pushes of one lock taken at once
// keep their hints only when they say the same; otherwise the loop gets a
// bare change and reads the lock, since a hint of one change may let it
// skip the call the other needs (a release after an acquisition, say).
func TestInboxMergesHintsConservatively(t *testing.T) {
	acq := store.Change{Kind: store.ChangeLease, Lock: "L", Holder: "b", Token: 7}
	rel := store.Change{Kind: store.ChangeLease, Lock: "L", ReservedFor: "c"}
	for _, tc := range []struct {
		name string
		in   []store.Change
		want store.Change
	}{
		{"one", []store.Change{acq}, acq},
		{"the same twice", []store.Change{acq, acq}, acq},
		{"acquired then released", []store.Change{acq, rel}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
		{"released then acquired", []store.Change{rel, acq}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
		{"a control change beside", []store.Change{acq, {Kind: store.ChangeControl, Lock: "L"}}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
	} {
		b := newInbox()
		for _, c := range tc.in {
			b.notify(c)
		}
		got, _, _, _ := b.take()
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: took %+v, want [%+v]", tc.name, got, tc.want)
		}
	}
}
