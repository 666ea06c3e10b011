package changehint

import (
	"testing"

	"github.com/masterjob/masterjob/store"
)

func TestRoundTrip(t *testing.T) {
	for _, c := range []store.Change{
		{Kind: store.ChangeLease, Lock: "L"},
		{Kind: store.ChangeLease, Lock: "L", Holder: "host-1-abc", Token: 42},
		{Kind: store.ChangeLease, Lock: "L", ReservedFor: "host-2-def"},
		{Kind: store.ChangeControl, Lock: "L"},
		{Kind: store.ChangeControl, Lock: "L", Revoked: 9},
		{Kind: store.ChangeMember},
	} {
		if got := Parse(Kind(c), c.Lock); got != c {
			t.Errorf("Parse(Kind(%+v)) = %+v", c, got)
		}
	}
}

// TestUnsayableLeftOut: an instance id holding a separator is not cut
// short: the hint is left out whole.
func TestUnsayableLeftOut(t *testing.T) {
	for _, c := range []store.Change{
		{Kind: store.ChangeLease, Lock: "L", Holder: "a\x1eb", Token: 1},
		{Kind: store.ChangeLease, Lock: "L", Holder: "a\x1fb", Token: 1},
		{Kind: store.ChangeLease, Lock: "L", ReservedFor: "a\x1eb"},
	} {
		if k := Kind(c); k != string(store.ChangeLease) {
			t.Errorf("Kind(%+v) = %q, want the kind alone", c, k)
		}
	}
}

// TestParseMalformed: hints that do not parse say nothing, and a kind
// field with separators this version cannot read is a lease change.
func TestParseMalformed(t *testing.T) {
	for in, want := range map[string]store.Change{
		"lease\x1eb\x1ex\x1e":        {Kind: store.ChangeLease, Lock: "L"},
		"lease\x1eb\x1e-3\x1e":       {Kind: store.ChangeLease, Lock: "L"},
		"lease\x1e\x1e5\x1e":         {Kind: store.ChangeLease, Lock: "L"},
		"lease\x1eb\x1e5":            {Kind: store.ChangeLease, Lock: "L"},
		"future\x1ea\x1eb\x1ec\x1ed": {Kind: store.ChangeLease, Lock: "L"},
		"control\x1ea\x1e5\x1e":      {Kind: store.ChangeControl, Lock: "L"},
		"control\x1e\x1e5\x1eb":      {Kind: store.ChangeControl, Lock: "L"},
		"control\x1e\x1e0\x1e":       {Kind: store.ChangeControl, Lock: "L"},
	} {
		if got := Parse(in, "L"); got != want {
			t.Errorf("Parse(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestMerge(t *testing.T) {
	acq := store.Change{Kind: store.ChangeLease, Lock: "L", Holder: "b", Token: 7}
	for _, tc := range []struct{ a, b, want store.Change }{
		{acq, acq, acq},
		{acq, store.Change{Kind: store.ChangeLease, Lock: "L", Holder: "c", Token: 8}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
		{acq, store.Change{Kind: store.ChangeLease, Lock: "L"}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
		{store.Change{Kind: store.ChangeControl, Lock: "L"}, store.Change{Kind: store.ChangeControl, Lock: "L"}, store.Change{Kind: store.ChangeControl, Lock: "L"}},
		// An Enable, then the acquisition it brought: the acquisition.
		{store.Change{Kind: store.ChangeControl, Lock: "L"}, acq, acq},
		// The other order, or a Disable that revoked a lease: look again.
		{acq, store.Change{Kind: store.ChangeControl, Lock: "L"}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
		{store.Change{Kind: store.ChangeControl, Lock: "L", Revoked: 6}, acq, store.Change{Kind: store.ChangeLease, Lock: "L"}},
		{store.Change{Kind: store.ChangeControl, Lock: "L"}, store.Change{Kind: store.ChangeLease, Lock: "L"}, store.Change{Kind: store.ChangeLease, Lock: "L"}},
	} {
		if got := Merge(tc.a, tc.b); got != tc.want {
			t.Errorf("Merge(%+v, %+v) = %+v, want %+v", tc.a, tc.b, got, tc.want)
		}
	}
}
