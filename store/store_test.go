package store_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
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

// TestValidateLockName: names of 1 to 200 bytes of UTF-8 are valid unless
// they hold a control character (Cc) or a format character (Cf: the
// bidirectional overrides and isolates, zero-width characters, the byte
// order mark), which would make one name display as another.
func TestValidateLockName(t *testing.T) {
	for _, name := range []string{"JOB", "a/b c?d#e%f", "ü", "日本語", "emoji 🙂", "x", strings.Repeat("n", store.MaxLockNameLen), "א-שם"} {
		if err := store.ValidateLockName(name); err != nil {
			t.Errorf("ValidateLockName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{
		"", strings.Repeat("n", store.MaxLockNameLen+1), "bad\xff", "nul\x00", "tab\t", "nl\n", "del\x7f", "c1\u0085",
		"gnp-\u202Egnillib",                                                                    // RIGHT-TO-LEFT OVERRIDE: shows as "gnp-billing" reversed
		"\u202Ax", "\u202Bx", "\u202Cx", "\u202Dx", "\u2066x", "\u2067x", "\u2068x", "\u2069x", // embeddings, isolates
		"\u200Ex", "\u200Fx", "\u061Cx", // marks
		"zero\u200Bwidth", "zw\u200Cnj", "zw\u200Dj", "word\u2060joiner", "\uFEFFbom", "soft\u00ADhyphen",
		"tag\U000E0041", "interlinear\uFFF9",
	} {
		err := store.ValidateLockName(name)
		if !errors.Is(err, store.ErrInvalidLockName) {
			t.Errorf("ValidateLockName(%q) = %v, want ErrInvalidLockName", name, err)
			continue
		}
		// The message shows the name escaped: it does not garble the
		// terminal or the log it is printed to.
		if msg := err.Error(); strings.ContainsFunc(msg, func(r rune) bool { return unicode.Is(unicode.Cf, r) || unicode.IsControl(r) }) {
			t.Errorf("ValidateLockName(%q): message %q holds the character raw", name, msg)
		}
	}
	if err := store.ValidateLockName("gnp-\u202Egnillib"); err == nil || !strings.Contains(err.Error(), "U+202E") {
		t.Errorf("the message %v does not name U+202E", err)
	}
}

// FuzzValidateLockName: a name it accepts is 1 to MaxLockNameLen bytes of
// valid UTF-8 without control or format characters.
func FuzzValidateLockName(f *testing.F) {
	for _, s := range []string{"JOB-SCHEDULER", "gnp-\u202Egnillib", "\u2066x\u2069", "a\u200Bb", "\uFEFF", "\U000E0001", "ü/🙂", "\x00", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if store.ValidateLockName(name) != nil {
			return
		}
		if name == "" || len(name) > store.MaxLockNameLen || !utf8.ValidString(name) {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("accepted %q with %U", name, r)
			}
		}
	})
}
