package redis

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	u, err := ParseURL("redis://app:s3cret@cache.example:6380/3?prefix=jobs:&call_timeout=250&history_limit=50&expiry_events=false&dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	o := u.Options
	if o.Addr != "cache.example:6380" || o.Username != "app" || o.Password != "s3cret" || o.DB != 3 || o.DialTimeout != 2*time.Second || o.TLSConfig != nil {
		t.Errorf("client options: addr %q user %q db %d dial %v tls %v", o.Addr, o.Username, o.DB, o.DialTimeout, o.TLSConfig != nil)
	}
	if u.Prefix == nil || *u.Prefix != "jobs:" || u.CallTimeout != 250*time.Millisecond || u.HistoryLimit != 50 || !u.NoExpiryEvents {
		t.Errorf("store parameters: %+v", u)
	}
	if s := u.String(); strings.Contains(s, "s3cret") || !strings.Contains(s, "app:xxxxx@") {
		t.Errorf("String() = %q, want the password redacted", s)
	}
	if len(u.StoreOptions()) != 4 {
		t.Errorf("StoreOptions: %d options, want 4", len(u.StoreOptions()))
	}

	tls, err := ParseURL("rediss://:pw@secure.example")
	if err != nil {
		t.Fatal(err)
	}
	if tls.Options.TLSConfig == nil || tls.Options.TLSConfig.ServerName != "secure.example" || tls.Options.Addr != "secure.example:6379" {
		t.Errorf("rediss: TLS %v addr %q", tls.Options.TLSConfig, tls.Options.Addr)
	}
	if tls.Prefix != nil || tls.CallTimeout != 0 || tls.HistoryLimit != 0 || tls.NoExpiryEvents {
		t.Errorf("defaults: %+v", tls)
	}
}

// TestParseURLErrors: each bad URL fails wrapping ErrInvalidURL, names
// what is wrong, and never shows the password.
func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"postgres://u:hunter2@h/db", `scheme "postgres"`},
		{"redis://u:hunter2@h/db?prefix=a{b}", "prefix"},
		{"redis://u:hunter2@h/0?call_timeout=soon", "call_timeout"},
		{"redis://u:hunter2@h/0?call_timeout=0", "call_timeout"},
		{"redis://u:hunter2@h/0?history_limit=0", "history_limit"},
		{"redis://u:hunter2@h/0?expiry_events=maybe", "expiry_events"},
		{"redis://u:hunter2@h/0?prefx=x", "prefx"},
		{"redis://u:hunter2@h/zero", "database"},
		{"redis://u:hunter2@h:port/0", "port"},
		{"redis://u:hunter2@h/0?password=hunter2", "password"},
		{"redis://u:hunter2@h/0?%zz", "query"},
	} {
		_, err := ParseURL(tc.url)
		if !errors.Is(err, ErrInvalidURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrInvalidURL", tc.url, err)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "hunter2") || !strings.Contains(msg, tc.want) {
			t.Errorf("ParseURL(%q): %q, want it to name %q and hide the password", tc.url, msg, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:pw@h:1/0":            "redis://u:xxxxx@h:1/0",
		"rediss://:pw@h":                "rediss://:xxxxx@h",
		"redis://h/0?password=pw&a=b":   "redis://h/0?a=b&password=xxxxx",
		"redis://u:p w@h:port/0":        "redis://xxxxx",
		"redis://h:6379/0?prefix=jobs:": "redis://h:6379/0?prefix=jobs:",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSlotOf(t *testing.T) {
	// Vectors from the Redis Cluster specification; TestCluster compares
	// with a real server's CLUSTER KEYSLOT.
	for key, want := range map[string]int{
		"123456789":        12739,
		"{user1000}.foo":   slotOf("user1000"),
		"foo{}{bar}":       slotOf("foo{}{bar}"),
		"foo{{bar}}zap":    slotOf("{bar"),
		"foo{bar}{zap}":    slotOf("bar"),
		"mj:{JOB}:lease":   slotOf("JOB"),
		"mj:{a%7Db}:lease": slotOf("a%7Db"),
	} {
		if got := slotOf(key); got != want {
			t.Errorf("slotOf(%q) = %d, want %d", key, got, want)
		}
	}
	k := keys{prefix: "mj:"}
	for _, lock := range []string{"a}b", "%", "x", "{y}"} {
		if got, ok := k.lockOfKey(k.lease(lock)); !ok || got != lock {
			t.Errorf("lockOfKey(lease(%q)) = %q, %v", lock, got, ok)
		}
	}
	for _, key := range []string{k.history(), k.member("x"), "other:{x}:lease", "mj:{x}:rec"} {
		if l, ok := k.lockOfKey(key); ok {
			t.Errorf("lockOfKey(%q) = %q, want none", key, l)
		}
	}
}
