package store_test

import (
	"testing"
	"unicode/utf8"

	"github.com/masterjob/masterjob/store"
)

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"plain":                   "plain",
		"ünïcødé 🙂\n\t'\"\\":      "ünïcødé 🙂\n\t'\"\\",
		"nul\x00byte":             "nul\uFFFDbyte",
		"bad\xffbyte":             "bad\uFFFDbyte",
		"\xc3":                    "\uFFFD",
		"\x00\x00":                "\uFFFD\uFFFD",
		"mixed\x00and\xe2\x82end": "mixed\uFFFDand\uFFFDend",
		"already \uFFFD replaced": "already \uFFFD replaced",
	} {
		got := store.CleanText(in)
		if got != want {
			t.Errorf("CleanText(%q) = %q, want %q", in, got, want)
		}
		if !utf8.ValidString(got) || store.CleanText(got) != got {
			t.Errorf("CleanText(%q) = %q is not clean", in, got)
		}
	}
}

func TestEventsLimit(t *testing.T) {
	for in, want := range map[int]int{
		-5: store.DefaultEventsLimit, 0: store.DefaultEventsLimit, 1: 1, 999: 999,
		store.MaxEventsLimit: store.MaxEventsLimit, store.MaxEventsLimit + 1: store.MaxEventsLimit, 1 << 40: store.MaxEventsLimit,
	} {
		if got := store.EventsLimit(in); got != want {
			t.Errorf("EventsLimit(%d) = %d, want %d", in, got, want)
		}
	}
}
