package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/storeurl"
)

// timing is a fast, valid configuration for runs in tests.
var timing = []string{
	"--init-delay", "0", "--heartbeat-interval", "100ms", "--tolerance", "1s",
	"--check-master-interval", "200ms",
}

func args(parts ...any) []string {
	var out []string
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			out = append(out, v)
		case []string:
			out = append(out, v...)
		}
	}
	return out
}

func sqliteURL(t *testing.T) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "mj.db")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHelp(t *testing.T) {
	precedence := []string{"1. defaults", "2. the \"masterJobExecutor\" section", "3. environment", "4. flags",
		"MASTERJOB_CONFIG", "MASTERJOB_STORE", "sqlite:masterjob.db"}
	for _, a := range [][]string{{"help"}, {"-h"}, {"--help"}, {"-help"}} {
		r := mainEnv(nil, a...)
		if r.code != ExitOK {
			t.Fatalf("%v: exit %d, stderr %q", a, r.code, r.stderr)
		}
		for _, w := range append(precedence, "run", "serve", "status", "disable", "enable", "history", "version",
			"MASTERJOB_SERVER", "MASTERJOB_HTTP_TOKEN", "--http-allow-insecure", "/api/mastercontrols", "/metrics", "/readyz") {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%v: usage lacks %q:\n%s", a, w, r.stdout)
			}
		}
	}
	for _, a := range [][]string{{"help", "run"}, {"run", "-h"}, {"run", "--help"}} {
		r := mainEnv(nil, a...)
		if r.code != ExitOK {
			t.Fatalf("%v: exit %d, stderr %q", a, r.code, r.stderr)
		}
		for _, w := range []string{"usage: masterjob run --lock NAME", "-heartbeat-interval", "MASTER_JOB_HEARTBEAT_INTERVAL",
			"-on-exit", "-restart-delay", "-log-format", "-config", "defaults", "environment", "SIGTERM",
			"-http ADDR", "-http-token", "-http-allow-insecure", "MASTERJOB_HTTP_TOKEN", "/metrics", "/readyz", "http_addr"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%v: help lacks %q:\n%s", a, w, r.stdout)
			}
		}
	}
	for _, a := range [][]string{{"help", "serve"}, {"serve", "-h"}} {
		r := mainEnv(nil, a...)
		if r.code != ExitOK {
			t.Fatalf("%v: exit %d, stderr %q", a, r.code, r.stderr)
		}
		for _, w := range []string{"usage: masterjob serve --http ADDR", "-http ADDR", "-http-token", "-http-allow-insecure",
			"-store", "-log-format", "MASTERJOB_HTTP_TOKEN", "MASTERJOB_STORE", "/api/mastercontrols", "/metrics",
			"/healthz", "/readyz", "SIGTERM", "refuses to start without a token"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%v: help lacks %q:\n%s", a, w, r.stdout)
			}
		}
	}
	for _, c := range []string{"status", "disable", "enable", "history", "version"} {
		r := mainEnv(nil, c, "-h")
		if r.code != ExitOK || !strings.Contains(r.stdout, "usage: masterjob "+c) {
			t.Errorf("%s -h: exit %d, stdout %q", c, r.code, r.stdout)
		}
		if c != "version" {
			for _, w := range []string{"-server URL", "-token TOKEN", "-store URL", "MASTERJOB_SERVER", "MASTERJOB_HTTP_TOKEN"} {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("%s -h lacks %q:\n%s", c, w, r.stdout)
				}
			}
		}
	}
}

func TestVersion(t *testing.T) {
	r := mainEnv(nil, "version")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "masterjob ") || !strings.Contains(r.stdout, "go1") {
		t.Fatalf("version: exit %d, stdout %q", r.code, r.stdout)
	}
}

// Every bad input exits 2 with a message that names the problem.
func TestBadInput(t *testing.T) {
	badConfig := writeFile(t, "bad.json", `{"masterJobExecutor": {"heartbeatInterval": -5}}`)
	notJSON := writeFile(t, "notjson.json", `{"masterJobExecutor": `)
	long := strings.Repeat("x", 201)
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		wants []string
	}{
		{"no arguments", nil, nil, []string{"Usage:"}},
		{"unknown command", nil, args("frobnicate"), []string{`unknown command "frobnicate"`}},
		{"help for an unknown command", nil, args("help", "frobnicate"), []string{`unknown command "frobnicate"`}},
		{"unknown flag", nil, args("run", "--bogus", "--lock", "L", "--", "true"), []string{"flag provided but not defined: -bogus"}},
		{"missing --lock", nil, args("run", "--", "true"), []string{"missing --lock"}},
		{"empty lock name", nil, args("run", "--lock", "", "--", "true"), []string{"--lock", "empty"}},
		{"over-long lock name", nil, args("run", "--lock", long, "--", "true"), []string{"--lock", "longer than 200"}},
		{"control character in lock name", nil, args("run", "--lock", "a\nb", "--", "true"), []string{"--lock", "control character"}},
		{"missing command", nil, args("run", "--lock", "L"), []string{"missing command after --"}},
		{"missing command after --", nil, args("run", "--lock", "L", "--"), []string{"missing command after --"}},
		{"command not found", nil, args("run", "--lock", "L", "--", "masterjob-no-such-command"), []string{`command "masterjob-no-such-command"`, "not found"}},
		{"heartbeat not shorter than tolerance", nil, args("run", "--lock", "L", "--heartbeat-interval", "5s", "--tolerance", "1s", "--", "true"),
			[]string{"invalid configuration", "flag --heartbeat-interval", "flag --tolerance"}},
		{"negative interval", nil, args("run", "--lock", "L", "--check-master-interval", "-1s", "--", "true"),
			[]string{"flag --check-master-interval", "negative"}},
		{"negative retry count", nil, args("run", "--lock", "L", "--max-heartbeat-retry-count", "-1", "--", "true"),
			[]string{"flag --max-heartbeat-retry-count"}},
		{"malformed duration flag", nil, args("run", "--lock", "L", "--tolerance", "soon", "--", "true"),
			[]string{"-tolerance", `"soon"`}},
		{"malformed count flag", nil, args("run", "--lock", "L", "--max-heartbeat-retry-count", "many", "--", "true"),
			[]string{"-max-heartbeat-retry-count", `"many"`}},
		{"invalid environment", map[string]string{masterjob.EnvHeartbeatInterval: "abc"}, args("run", "--lock", "L", "--", "true"),
			[]string{"MASTER_JOB_HEARTBEAT_INTERVAL", `"abc"`}},
		{"environment against flag", map[string]string{masterjob.EnvTolerance: "500"}, args("run", "--lock", "L", "--heartbeat-interval", "1s", "--", "true"),
			[]string{"flag --heartbeat-interval", "MASTER_JOB_TOLERANCE"}},
		{"invalid config file value", nil, args("run", "--lock", "L", "--config", badConfig, "--", "true"),
			[]string{"heartbeatInterval", badConfig}},
		{"config file not JSON", nil, args("run", "--lock", "L", "--config", notJSON, "--", "true"),
			[]string{notJSON}},
		{"missing config file", nil, args("run", "--lock", "L", "--config", "/nonexistent/mj.json", "--", "true"),
			[]string{"/nonexistent/mj.json", "flag --config"}},
		{"missing config file from environment", map[string]string{masterjob.EnvConfigFile: "/nonexistent/env.json"}, args("run", "--lock", "L", "--", "true"),
			[]string{"/nonexistent/env.json", "MASTERJOB_CONFIG"}},
		{"unknown store scheme", nil, args("run", "--lock", "L", "--store", "redis://localhost:6379", "--", "true"),
			[]string{"--store", "unknown store URL scheme", `"redis"`, "sqlite:PATH"}},
		{"unknown store scheme from environment", map[string]string{EnvStore: "etcd://x"}, args("run", "--lock", "L", "--", "true"),
			[]string{"unknown store URL scheme", `"etcd"`}},
		{"store URL without scheme", nil, args("run", "--lock", "L", "--store", "mj.db", "--", "true"),
			[]string{"--store", "no scheme"}},
		{"bad store parameter", nil, args("run", "--lock", "L", "--store", "sqlite:mj.db?prefix=Bad-", "--", "true"),
			[]string{"--store", "prefix"}},
		{"bad --on-exit", nil, args("run", "--lock", "L", "--on-exit", "explode", "--", "true"),
			[]string{"-on-exit", "release, restart"}},
		{"bad --log-format", nil, args("run", "--lock", "L", "--log-format", "xml", "--", "true"),
			[]string{"-log-format", "text, json"}},
		{"negative --restart-delay", nil, args("run", "--lock", "L", "--restart-delay", "-1s", "--", "true"),
			[]string{"--restart-delay", "negative"}},
		{"a bare number below the floor", nil, args("run", "--lock", "L", "--heartbeat-interval", "5", "--", "true"),
			[]string{`invalid value "5" for flag -heartbeat-interval`, "a bare number is milliseconds: 5 would be 5ms, shorter than 10ms", "such as 5s"}},
		{"a bare number below the floor on --init-delay", nil, args("run", "--lock", "L", "--init-delay", "3", "--", "true"),
			[]string{`invalid value "3" for flag -init-delay`, "such as 3s"}},
		{"a duration below the floor", nil, args("run", "--lock", "L", "--check-master-interval", "2ms", "--", "true"),
			[]string{"checkMasterInterval 2ms (flag --check-master-interval) is shorter than 10ms"}},
		{"a bare number below the floor from the environment", map[string]string{masterjob.EnvHeartbeatInterval: "5"}, args("run", "--lock", "L", "--", "true"),
			[]string{"heartbeatInterval 5ms (environment MASTER_JOB_HEARTBEAT_INTERVAL) is shorter than 10ms", `such as "5s"`}},

		{"status: unknown flag", nil, args("status", "--verbose"), []string{"-verbose"}},
		{"status: unknown store scheme", nil, args("status", "--store", "zk://x"), []string{"unknown store URL scheme", `"zk"`}},
		{"status: bad lock name", nil, args("status", long), []string{"longer than 200"}},

		{"disable: missing --lock", nil, args("disable", "--reason", "r"), []string{"missing --lock"}},
		{"disable: missing --reason", nil, args("disable", "--lock", "L"), []string{"missing --reason"}},
		{"disable: empty lock name", nil, args("disable", "--lock", "", "--reason", "r"), []string{"empty"}},
		{"disable: over-long lock name", nil, args("disable", "--lock", long, "--reason", "r"), []string{"longer than 200"}},
		{"disable: unknown store scheme", nil, args("disable", "--lock", "L", "--reason", "r", "--store", "consul://x"), []string{`"consul"`}},
		{"disable: stray argument", nil, args("disable", "--lock", "L", "--reason", "r", "extra"), []string{`unexpected argument "extra"`}},
		{"enable: missing --lock", nil, args("enable"), []string{"missing --lock"}},
		{"enable: --reason is not a flag of enable", nil, args("enable", "--lock", "L", "--reason", "r"), []string{"-reason"}},
		{"enable: unknown store scheme", nil, args("enable", "--lock", "L", "--store", "x:y"), []string{`"x"`}},
		{"version: stray argument", nil, args("version", "now"), []string{`unexpected argument "now"`}},

		// The HTTP listener of run and serve.
		{"run: every interface without a token", nil, args("run", "--lock", "L", "--http", ":8080", "--", "true"),
			[]string{`--http ":8080"`, "--http-token", "MASTERJOB_HTTP_TOKEN", "--http-allow-insecure", "loopback"}},
		{"run: a public address without a token", nil, args("run", "--lock", "L", "--http", "192.0.2.1:8080", "--", "true"),
			[]string{`--http "192.0.2.1:8080"`, "--http-token", "--http-allow-insecure"}},
		{"run: a host name without a token", nil, args("run", "--lock", "L", "--http", "example.com:80", "--", "true"),
			[]string{"--http-token", "--http-allow-insecure"}},
		{"run: empty token from the environment counts as none", map[string]string{EnvHTTPToken: ""},
			args("run", "--lock", "L", "--http", "0.0.0.0:0", "--", "true"), []string{"--http-allow-insecure"}},
		{"run: --http without a port", nil, args("run", "--lock", "L", "--http", "127.0.0.1", "--", "true"),
			[]string{`--http "127.0.0.1"`, "missing port", "HOST:PORT"}},
		{"run: --http not an address", nil, args("run", "--lock", "L", "--http", "nonsense", "--", "true"),
			[]string{`--http "nonsense"`, "missing port"}},
		{"run: --http with a bad port", nil, args("run", "--lock", "L", "--http", "127.0.0.1:99999", "--", "true"),
			[]string{`--http "127.0.0.1:99999"`, "port"}},
		{"run: --http empty", nil, args("run", "--lock", "L", "--http", "", "--", "true"),
			[]string{"--http", "missing port"}},
		{"run: --http-token without --http", nil, args("run", "--lock", "L", "--http-token", "t", "--", "true"),
			[]string{"--http-token needs --http"}},
		{"run: --http-allow-insecure without --http", nil, args("run", "--lock", "L", "--http-allow-insecure", "--", "true"),
			[]string{"--http-allow-insecure needs --http"}},
		{"run: empty --http-token", nil, args("run", "--lock", "L", "--http", "127.0.0.1:0", "--http-token", "", "--", "true"),
			[]string{"--http-token", "empty token"}},
		{"run: --http-token with a space", nil, args("run", "--lock", "L", "--http", "127.0.0.1:0", "--http-token", "a b", "--", "true"),
			[]string{"--http-token", "printable ASCII"}},
		{"run: bad token in the environment", map[string]string{EnvHTTPToken: "tok\n"},
			args("run", "--lock", "L", "--http", "127.0.0.1:0", "--", "true"), []string{"$MASTERJOB_HTTP_TOKEN", "printable ASCII"}},
		{"serve: missing --http", nil, args("serve"), []string{"missing --http ADDR"}},
		{"serve: every interface without a token", nil, args("serve", "--http", ":0"),
			[]string{`--http ":0"`, "--http-token", "--http-allow-insecure"}},
		{"serve: bad address", nil, args("serve", "--http", "localhost"), []string{"missing port"}},
		{"serve: stray argument", nil, args("serve", "--http", "127.0.0.1:0", "x"), []string{`unexpected argument "x"`}},
		{"serve: unknown store scheme", nil, args("serve", "--http", "127.0.0.1:0", "--store", "zk://x"), []string{`"zk"`}},
		{"serve: bad --log-format", nil, args("serve", "--http", "127.0.0.1:0", "--log-format", "xml"), []string{"-log-format"}},

		// --server and --token of status, disable, enable and history.
		{"status: --server and --store", nil, args("status", "--server", "http://127.0.0.1:1", "--store", "sqlite:x.db"),
			[]string{"--server and --store exclude each other"}},
		{"status: --server not http", nil, args("status", "--server", "ftp://host"), []string{"--server", "http://"}},
		{"status: --server empty", nil, args("status", "--server", ""), []string{"--server", "empty"}},
		{"status: --server with a password", nil, args("status", "--server", "http://u:pw@host:1"), []string{"--server", "--token"}},
		{"status: --server with a query", nil, args("status", "--server", "http://host:1/?a=b"), []string{"--server", "query"}},
		{"status: bad $MASTERJOB_SERVER", map[string]string{EnvServer: "gopher://x"}, args("status"), []string{"--server", "gopher://x"}},
		{"status: --token without a server", nil, args("status", "--token", "t"), []string{"--token needs --server"}},
		{"status: --token with a space", nil, args("status", "--server", "http://127.0.0.1:1", "--token", "a b"),
			[]string{"--token", "printable ASCII"}},
		{"disable: --token without a server", nil, args("disable", "--lock", "L", "--reason", "r", "--token", "t"),
			[]string{"--token needs --server"}},
		{"disable: over-long reason", nil, args("disable", "--lock", "L", "--reason", strings.Repeat("r", 1025)),
			[]string{"--reason", "longer than 1024"}},
		{"disable: control character in the reason", nil, args("disable", "--lock", "L", "--reason", "a\x00b"),
			[]string{"--reason", "control character"}},
		{"enable: --server not a URL", nil, args("enable", "--lock", "L", "--server", "http://[::1"), []string{"--server"}},
		{"history: --limit 0", nil, args("history", "--limit", "0"), []string{"--limit", "1 to 1000"}},
		{"history: --limit too large", nil, args("history", "--limit", "1001"), []string{"--limit", "1 to 1000"}},
		{"history: --limit not a number", nil, args("history", "--limit", "ten"), []string{"-limit", `"ten"`}},
		{"history: empty --lock", nil, args("history", "--lock", ""), []string{"--lock", "empty"}},
		{"history: stray argument", nil, args("history", "L"), []string{`unexpected argument "L"`, "(to name the lock: --lock L)"}},
		// A lock's name where --lock is wanted gets a hint; other
		// arguments do not.
		{"disable: the lock as an argument", nil, args("disable", "nightly", "--reason", "r"),
			[]string{`unexpected argument "nightly"`, "(to name the lock: --lock nightly, before any other argument)"}},
		{"enable: the lock as an argument", nil, args("enable", "nightly"), []string{"(to name the lock: --lock nightly)"}},
		{"instances: a lock with a space as an argument", nil, args("instances", "a b"), []string{`--lock "a b"`}},
		{"run: the lock as an argument", nil, args("run", "nightly", "--", "true"),
			[]string{"missing --lock NAME (to name the lock: --lock nightly, before any other argument)"}},
		{"history: --server and --store", nil, args("history", "--server", "h:1", "--store", "sqlite:x.db"),
			[]string{"exclude each other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mainEnv(tt.env, tt.args...)
			if r.code != ExitUsage {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, ExitUsage, r.stderr)
			}
			for _, w := range tt.wants {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty: %q", r.stdout)
			}
		})
	}
}

// The store is --store, else $MASTERJOB_STORE, else the default.
func TestStoreURLPrecedence(t *testing.T) {
	e := &cmdEnv{lookupEnv: envFunc(map[string]string{EnvStore: "sqlite:env.db"})}
	if got := storeURL(e, "sqlite:flag.db", storeurl.DefaultURL); got != "sqlite:flag.db" {
		t.Errorf("flag: got %q", got)
	}
	if got := storeURL(e, "", storeurl.DefaultURL); got != "sqlite:env.db" {
		t.Errorf("env: got %q", got)
	}
	e.lookupEnv = envFunc(nil)
	if got := storeURL(e, "", storeurl.DefaultURL); got != storeurl.DefaultURL {
		t.Errorf("default: got %q", got)
	}
}

// Flags become options labelled with their flag, and win over the
// environment and the config file.
func TestRunFlagsPrecedence(t *testing.T) {
	cfgFile := writeFile(t, "mj.json", `{"masterJobExecutor": {"heartbeatInterval": 2000, "checkMasterInterval": 4000, "initDelay": 50}}`)
	f := newRunFlags()
	if err := f.fs.Parse(args("--lock", "L", "--config", cfgFile, "--heartbeat-interval", "300ms",
		"--tolerance", "1500", "--max-heartbeat-retry-count", "5", "--", "true")); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{masterjob.EnvHeartbeatInterval: "700", masterjob.EnvCheckMasterInterval: "900"}
	cfg, err := masterjob.LoadConfig(append([]masterjob.Option{masterjob.WithLookupEnv(envFunc(env))}, f.options()...)...)
	if err != nil {
		t.Fatal(err)
	}
	want := masterjob.Config{
		InitDelay:              50 * time.Millisecond,  // file
		CheckMasterInterval:    900 * time.Millisecond, // environment over file
		HeartbeatInterval:      300 * time.Millisecond, // flag over environment and file
		Tolerance:              1500 * time.Millisecond,
		MaxHeartbeatRetryCount: 5,
	}
	if cfg.InitDelay != want.InitDelay || cfg.CheckMasterInterval != want.CheckMasterInterval ||
		cfg.HeartbeatInterval != want.HeartbeatInterval || cfg.Tolerance != want.Tolerance ||
		cfg.MaxHeartbeatRetryCount != want.MaxHeartbeatRetryCount {
		t.Fatalf("config = %+v, want %+v", cfg, want)
	}
	if got := f.fs.Args(); len(got) != 1 || got[0] != "true" {
		t.Fatalf("command = %q", got)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"250ms": 250 * time.Millisecond, "8000": 8 * time.Second, "2s": 2 * time.Second, "-1s": -time.Second, "0": 0,
		"10": 10 * time.Millisecond, "5ms": 5 * time.Millisecond, "-5": -5 * time.Millisecond} { // below the floor with a unit, or negative: validation names the setting
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "1e3", "99999999999999999999", "5", "9"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
		}
	}
}

func TestKillSlack(t *testing.T) {
	for _, tt := range []struct{ margin, want time.Duration }{
		{250 * time.Millisecond, 125 * time.Millisecond},
		{2 * time.Second, time.Second},
		{10 * time.Second, 5 * time.Second},
	} {
		if got := killSlack(masterjob.Config{SafetyMargin: tt.margin}); got != tt.want {
			t.Errorf("killSlack(margin %v) = %v, want %v", tt.margin, got, tt.want)
		}
	}
}

func TestControlCommandsSQLite(t *testing.T) { testControlCommands(t, sqliteURL(t)) }

func TestControlCommandsPostgres(t *testing.T) { testControlCommands(t, postgresSchemaURL(t)) }

func testControlCommands(t *testing.T, store string) {
	env := map[string]string{EnvStore: store}
	// The read commands create nothing (no file, no table, no migration):
	// on a store nothing has used they fail, saying so, twice in a row.
	for _, cmd := range [][]string{{"status"}, {"history"}, {"status"}} {
		r := mainEnv(env, cmd...)
		if r.code != ExitFailure || !strings.Contains(r.stderr, "store: not initialized") ||
			!strings.Contains(r.stderr, "this command creates nothing") {
			t.Fatalf("%s on a store nothing has used: exit %d, stdout %q, stderr %q", cmd[0], r.code, r.stdout, r.stderr)
		}
	}
	// A write creates the store; an Enable of a lock nobody used records
	// no lock.
	if r := mainEnv(env, "enable", "--lock", "JOB-SCHEDULER"); r.code != ExitOK {
		t.Fatalf("enable: exit %d, stderr %q", r.code, r.stderr)
	}
	r := mainEnv(env, "status")
	if r.code != ExitOK || !strings.Contains(r.stdout, "no locks") {
		t.Fatalf("status on an empty store: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r = mainEnv(env, "disable", "--lock", "JOB-SCHEDULER", "--reason", "maintenance window")
	if r.code != ExitOK || !strings.Contains(r.stdout, `disabled lock "JOB-SCHEDULER": maintenance window`) {
		t.Fatalf("disable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(env, "disable", "--lock", "JOB-SCHEDULER", "--reason", "again")
	if r.code != ExitOK || !strings.Contains(r.stdout, "already disabled: maintenance window (by cli@") {
		t.Fatalf("disable again: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r = mainEnv(env, "status")
	if r.code != ExitOK {
		t.Fatalf("status: exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "LOCK") || !strings.Contains(lines[0], "DISABLED") {
		t.Fatalf("status table:\n%s", r.stdout)
	}
	checkStatusRow(t, r.stdout, "JOB-SCHEDULER", map[string]string{
		"MASTER": "-", "TOKEN": "0", "DISABLED": "yes", "CHANGED-BY": "cli@*", "CHANGED-AT": "20*", "REASON": "maintenance window",
	})

	r = mainEnv(nil, "status", "--store", store, "--json", "JOB-SCHEDULER", "OTHER")
	if r.code != ExitOK {
		t.Fatalf("status --json: exit %d, stderr %q", r.code, r.stderr)
	}
	var locks []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &locks); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if len(locks) != 2 || locks[0]["lockName"] != "JOB-SCHEDULER" || locks[0]["disabled"] != true ||
		locks[0]["reason"] != "maintenance window" || !strings.HasPrefix(locks[0]["changedBy"].(string), "cli@") ||
		locks[1]["lockName"] != "OTHER" || locks[1]["disabled"] != false {
		t.Fatalf("status --json = %s", r.stdout)
	}

	r = mainEnv(env, "enable", "--lock", "JOB-SCHEDULER")
	if r.code != ExitOK || !strings.Contains(r.stdout, `enabled lock "JOB-SCHEDULER"`) {
		t.Fatalf("enable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(env, "enable", "--lock", "JOB-SCHEDULER")
	if r.code != ExitOK || !strings.Contains(r.stdout, "already enabled") {
		t.Fatalf("enable again: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// The changes, not the repeats, are in the history, newest first.
	r = mainEnv(env, "history", "--json")
	if r.code != ExitOK {
		t.Fatalf("history: exit %d, stderr %q", r.code, r.stderr)
	}
	var events []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &events); err != nil {
		t.Fatalf("history --json: %v\n%s", err, r.stdout)
	}
	if len(events) != 2 || events[0]["kind"] != "enabled" || events[1]["kind"] != "disabled" ||
		events[1]["reason"] != "maintenance window" || !strings.HasPrefix(events[1]["instance"].(string), "cli@") {
		t.Fatalf("history --json = %s", r.stdout)
	}
	r = mainEnv(env, "history", "--lock", "OTHER")
	if r.code != ExitOK || strings.TrimSpace(r.stdout) != "no history" {
		t.Fatalf("history of another lock: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = mainEnv(env, "history", "--limit", "1")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != ExitOK || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[1], "enabled") {
		t.Fatalf("history --limit 1: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// checkStatusRow checks the row of lock in a status table: each column
// named in want has that value, or starts with its prefix when it ends
// with "*". The last column (REASON) may hold spaces.
func checkStatusRow(t *testing.T, table, lock string, want map[string]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	header := strings.Fields(lines[0])
	if len(header) == 0 || header[0] != "LOCK" || header[len(header)-1] != "REASON" {
		t.Fatalf("status table header %q", lines[0])
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != lock {
			continue
		}
		if len(f) < len(header) {
			t.Fatalf("status row %q has %d columns, want %d", line, len(f), len(header))
		}
		got := map[string]string{}
		for i, h := range header[:len(header)-1] {
			got[h] = f[i]
		}
		got["REASON"] = strings.Join(f[len(header)-1:], " ")
		for col, w := range want {
			if p, ok := strings.CutSuffix(w, "*"); ok && strings.HasPrefix(got[col], p) || got[col] == w {
				continue
			}
			t.Errorf("status row of %s: %s = %q, want %q\n%s", lock, col, got[col], w, table)
		}
		return
	}
	t.Fatalf("no status row for %s:\n%s", lock, table)
}

// With --on-exit release (the default) the run ends with the command's exit
// code and releases the lease; the child sees the lease in its environment.
func TestRunOnExitRelease(t *testing.T) {
	store := sqliteURL(t)
	r := mainEnv(nil, args("run", "--lock", "L", "--store", store, timing, "--",
		"sh", "-c", `echo "$MASTERJOB_LOCK|$MASTERJOB_TOKEN|$MASTERJOB_INSTANCE"; exit 3`)...)
	if r.code != 3 {
		t.Fatalf("exit code %d, want the command's 3; stderr:\n%s", r.code, r.stderr)
	}
	parts := strings.Split(strings.TrimSpace(r.stdout), "|")
	if len(parts) != 3 || parts[0] != "L" || parts[1] != "1" || parts[2] == "" {
		t.Fatalf("child printed %q, want L|1|<instance>", r.stdout)
	}
	if !strings.Contains(r.stderr, "instance="+parts[2]) || !strings.Contains(r.stderr, "pid=") {
		t.Errorf("logs lack the instance id or the child pid:\n%s", r.stderr)
	}
	s := mainEnv(nil, "status", "--store", store, "--json", "L")
	var locks []map[string]any
	if err := json.Unmarshal([]byte(s.stdout), &locks); err != nil || len(locks) != 1 {
		t.Fatalf("status: %v %q", err, s.stdout)
	}
	if locks[0]["master"] != "" {
		t.Fatalf("lease not released after the command exited: %s", s.stdout)
	}

	// A command killed by a signal: 128+N.
	r = mainEnv(nil, args("run", "--lock", "L", "--store", store, "--log-format", "json", timing, "--", "sh", "-c", `kill -9 $$`)...)
	if r.code != 128+9 {
		t.Fatalf("exit code %d, want 137; stderr:\n%s", r.code, r.stderr)
	}
	// JSON logs.
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("--log-format json wrote a non-JSON line %q", line)
		}
	}
}

// With --on-exit restart the command runs again while still master, and a
// cancellation stops it gracefully with exit code 0.
func TestRunOnExitRestart(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- mainCtx(ctx, nil, args("run", "--lock", "L", "--store", sqliteURL(t), timing,
			"--on-exit", "restart", "--restart-delay", "20ms", "--",
			"sh", "-c", `echo "$MASTERJOB_TOKEN" >> "$0"`, count)...)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(count)
		if lines := strings.Fields(string(b)); len(lines) >= 3 {
			for _, l := range lines {
				if l != "1" {
					t.Fatalf("restarted command saw token %q, want the same mastership's 1", l)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command not restarted 3 times; ran %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case r := <-done:
		if r.code != ExitOK {
			t.Fatalf("exit code %d after cancellation; stderr:\n%s", r.code, r.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
}

// Cancelling Main's context stops the child with SIGTERM and exits 0.
func TestRunGracefulStop(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- mainCtx(ctx, nil, args("run", "--lock", "L", "--store", sqliteURL(t), timing, "--",
			"sh", "-c", `echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 600`, pidFile)...)
	}()
	pid := waitPidFile(t, pidFile, 10*time.Second)
	cancel()
	select {
	case r := <-done:
		if r.code != ExitOK {
			t.Fatalf("exit code %d; stderr:\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stderr, "pid="+strconv.Itoa(pid)) {
			t.Errorf("logs lack the child pid %d:\n%s", pid, r.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	if alive(pid) {
		t.Fatalf("child %d still alive after run returned", pid)
	}
}

// An unreachable store is retried, with a clear log, until the run is
// stopped; it is not a crash. The error is logged once at error level,
// and each further attempt, with the same error, only at debug level.
func TestRunUnreachableStore(t *testing.T) {
	for _, level := range []string{"info", "debug"} {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		r := mainCtx(ctx, nil, args("run", "--lock", "L", timing, "--log-level", level,
			"--store", "postgres://nobody:pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=1", "--", "true")...)
		cancel()
		if r.code != ExitOK {
			t.Fatalf("%s: exit code %d; stderr:\n%s", level, r.code, r.stderr)
		}
		n := strings.Count(r.stderr, "cannot open the store; retrying")
		if level == "info" && n != 1 {
			t.Fatalf("log level info: want the retried error logged once, got %d:\n%s", n, r.stderr)
		}
		if level == "debug" && n < 2 {
			t.Fatalf("log level debug: want every attempt logged (at least 2), got %d:\n%s", n, r.stderr)
		}
		if strings.Contains(r.stderr, ":pw@") {
			t.Fatalf("logs show the password:\n%s", r.stderr)
		}
	}
}

func waitPidFile(t *testing.T, path string, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s after %v", path, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie: the children of
// SIGKILLed runners are reparented to PID 1, which does not reap them in
// every container.
func alive(pid int) bool {
	switch state := procState(pid); state {
	case 0:
		return syscall.Kill(pid, 0) == nil && !procAvailable()
	default:
		return state != 'Z' && state != 'X'
	}
}

// procState returns the scheduling state of pid from /proc ('R', 'S',
// 'T', ...), or 0 when it is gone.
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// parentOf returns the parent pid of pid from /proc.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func procAvailable() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// The kill time is now when the lease has expired or is another's, and the
// safety margin minus the slack for a context no executor made.
func TestKillAt(t *testing.T) {
	cfg := masterjob.Config{Tolerance: time.Second, SafetyMargin: 400 * time.Millisecond, ShutdownTimeout: time.Second}
	r := &runner{cfg: cfg}
	for _, cause := range []error{masterjob.ErrLeaseExpired, masterjob.ErrLeaseLost} {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		if at := r.killAt(ctx)(); time.Until(at) > 0 {
			t.Errorf("cause %v: kill time %v from now, want now", cause, time.Until(at))
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(masterjob.ErrShutdown)
	left := time.Until(r.killAt(ctx)())
	if want := cfg.SafetyMargin - killSlack(cfg); left > want || left < want-100*time.Millisecond {
		t.Errorf("kill time %v from now, want about %v", left, want)
	}
}

// A graceful stop logs one line per transition, each with its reason under
// one key, and durations as Go duration strings in JSON (issue 8, item 17):
// before, one stop wrote 4-5 INFO lines with the same idea under "reason"
// and "cause", and JSON durations were nanoseconds.
func TestRunLogsOneLinePerTransition(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- mainCtx(ctx, nil, args("run", "--lock", "L", "--store", sqliteURL(t), timing, "--log-format", "json", "--",
			"sh", "-c", `echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 600`, pidFile)...)
	}()
	waitPidFile(t, pidFile, 10*time.Second)
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	var stopLines []string
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		if _, ok := rec["cause"]; ok {
			t.Errorf("a line still says \"cause\": %s", line)
		}
		for k, v := range rec {
			if f, ok := v.(float64); ok && (strings.HasSuffix(k, "_in") || k == "ttl" || k == "took") && f > 1e6 {
				t.Errorf("duration %s logged as a number (nanoseconds?): %s", k, line)
			}
		}
		if rec["level"] != "INFO" {
			continue
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, "stop") {
			stopLines = append(stopLines, msg)
		}
	}
	want := []string{"stopping job", "job stopped", "stopped"}
	if !slices.Equal(stopLines, want) {
		t.Fatalf("INFO lines about the stop: %q, want %q; stderr:\n%s", stopLines, want, r.stderr)
	}
}
