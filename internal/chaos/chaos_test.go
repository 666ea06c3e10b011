//go:build linux

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/masterjob/masterjob/internal/racereport"
)

// The full chaos runs are long; the tests run a short version unless told
// otherwise:
//
//	go test ./internal/chaos/ -run Chaos -chaos.faults=1000 -timeout 60m -v
var (
	chaosFaults       = flag.Int("chaos.faults", 0, "faults per chaos test (default 50, 20 with -short)")
	chaosRunnerFaults = flag.Int("chaos.runner-faults", 0, "faults per runner-mode chaos test (default 20, 8 with -short)")
	chaosSeed         = flag.Uint64("chaos.seed", 0, "seed of the chaos tests' fault schedules (0: random, logged)")
	chaosInstances    = flag.Int("chaos.instances", 3, "instances per chaos test")
	chaosLocks        = flag.Int("chaos.locks", 2, "locks per chaos test")
)

func chaosConfig(t *testing.T, storeURL string) Config {
	faults := *chaosFaults
	if faults == 0 {
		faults = 50
		if testing.Short() {
			faults = 20
		}
	}
	return Config{
		StoreURL:  storeURL,
		Instances: *chaosInstances,
		Locks:     *chaosLocks,
		Faults:    faults,
		Seed:      *chaosSeed,
		// The test binary is the instance: TestMain runs it.
		Command: []string{os.Args[0]},
	}
}

// runnerConfig is chaosConfig in runner mode: real `masterjob run` runners
// (in the test binary) whose child runs under sh -c, one lock.
func runnerConfig(t *testing.T, storeURL string) Config {
	cfg := chaosConfig(t, storeURL)
	cfg.Runner, cfg.Locks = true, 1
	cfg.Faults = *chaosRunnerFaults
	if cfg.Faults == 0 {
		cfg.Faults = 20
		if testing.Short() {
			cfg.Faults = 8
		}
	}
	return cfg
}

func runChaos(t *testing.T, cfg Config) {
	t.Helper()
	RunT(t, cfg, "chaos run")
}

func TestChaosSQLite(t *testing.T) {
	db := filepath.Join(t.TempDir(), "chaos.db")
	cfg := chaosConfig(t, "sqlite:"+db)
	cfg.Dir, cfg.Keep = t.TempDir(), true
	runChaos(t, cfg)
	checkTraceMarks(t, cfg.Dir)
}

// checkTraceMarks requires the run in dir to have left the instances'
// trace marks: what each asked the store and when it answered, on the
// clock of events.jsonl, for a violation's diagnosis.
func checkTraceMarks(t *testing.T, dir string) {
	t.Helper()
	started := map[string]bool{} // the instances' pids
	events, err := os.ReadFile(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(events)) {
		var e struct {
			Kind string `json:"kind"`
			V    struct {
				PID int `json:"pid"`
			} `json:"v"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == "started" {
			started[strconv.Itoa(e.V.PID)] = true
		}
	}
	marks, err := os.ReadFile(filepath.Join(dir, "trace.log"))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]map[string]bool{} // event -> instance pids that marked it
	for line := range strings.Lines(string(marks)) {
		f := strings.Fields(line)
		if len(f) == 4 && started[f[1]] {
			if by[f[2]] == nil {
				by[f[2]] = map[string]bool{}
			}
			by[f[2]][f[1]] = true
		}
	}
	for _, ev := range []string{"acquire.sent", "acquire.done", "renew.sent", "renew.done"} {
		if len(by[ev]) < 2 {
			t.Errorf("trace.log: %q marked by %d instances, want at least 2 (of %d started)", ev, len(by[ev]), len(started))
		}
	}
}

// testPostgresURL is the server of the PostgreSQL tests, as in store/postgres.
func testPostgresURL() string {
	if dsn := os.Getenv("MASTERJOB_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func TestChaosPostgres(t *testing.T) {
	runChaos(t, chaosConfig(t, postgresOrSkip(t)))
}

// TestChaosRunnerSQLite and TestChaosRunnerPostgres run the runner mode:
// the CLI's half of issue 7 item 1 (a loss while the child stops) and item
// 5 (what the child started must die with a SIGKILLed runner).
func TestChaosRunnerSQLite(t *testing.T) {
	db := filepath.Join(t.TempDir(), "chaos.db")
	runChaos(t, runnerConfig(t, "sqlite:"+db))
}

func TestChaosRunnerPostgres(t *testing.T) {
	runChaos(t, runnerConfig(t, postgresOrSkip(t)))
}

// postgresOrSkip returns the test server's URL, or skips the test (fails it
// when CI is set) if the server cannot be reached.
func postgresOrSkip(t *testing.T) string {
	t.Helper()
	dsn := testPostgresURL()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		_ = conn.Close(ctx)
	}
	cancel()
	if err != nil {
		msg := "PostgreSQL not reachable at MASTERJOB_TEST_POSTGRES=" + redactURL(dsn) + ": " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: the chaos test must run on PostgreSQL)")
		}
		t.Skip(msg + " (set MASTERJOB_TEST_POSTGRES to a reachable server to run it)")
	}
	return dsn
}

func TestParseFlags(t *testing.T) {
	var errOut bytes.Buffer
	if _, _, err := parseFlags(nil, &errOut); err == nil {
		t.Error("no --store: no error")
	}
	cfg, js, err := parseFlags([]string{"--store", "sqlite:/tmp/x.db", "--faults", "7", "--seed", "9", "--json", "r.json"}, &errOut)
	if err != nil || cfg.Faults != 7 || cfg.Seed != 9 || js != "r.json" || cfg.StoreURL != "sqlite:/tmp/x.db" {
		t.Errorf("parseFlags: %+v %q %v", cfg, js, err)
	}
	bad := Config{StoreURL: "mysql://x", Instances: 1}
	bad.applyDefaults()
	bad.Instances = 1
	if err := bad.validate(); err == nil {
		t.Error("validate accepted a bad store URL and one instance")
	}

	cfg, _, err = parseFlags([]string{"--store", "sqlite:/tmp/x.db", "--runner", "--locks", "1", "--slow-stop", "0"}, &errOut)
	if err != nil || !cfg.Runner || cfg.SlowStop >= 0 {
		t.Errorf("parseFlags runner: %+v %v", cfg, err)
	}
	cfg.applyDefaults()
	if cfg.SlowStop != 0 || cfg.SlowStopMax != 900*time.Millisecond || cfg.Timing.ShutdownTimeout != 3100*time.Millisecond {
		t.Errorf("defaults: slow stop %v up to %v, shutdown timeout %v; want 0, 900ms, 3.1s", cfg.SlowStop, cfg.SlowStopMax, cfg.Timing.ShutdownTimeout)
	}
	if err := cfg.validate(); err != nil {
		t.Errorf("validate runner: %v", err)
	}
	for _, args := range [][]string{
		{"--runner", "--locks", "2"},                   // a runner runs one command
		{"--runner", "--locks", "1", "--kinds", "cut"}, // no network between a runner and SQLite
		{"--kinds", "nonsense"},
		{"--slow-stop", "1.5"},
	} {
		cfg, _, err := parseFlags(append([]string{"--store", "sqlite:/tmp/x.db"}, args...), &errOut)
		if err == nil {
			cfg.applyDefaults()
			err = cfg.validate()
		}
		if err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// TestRaceInAnInstanceIsAViolation: a process of a run that commits a data
// race (every instance here, on purpose) makes the run report a data-race
// violation when the binary is built with -race, as in CI and the README's
// test command; without -race the same run is clean.
func TestRaceInAnInstanceIsAViolation(t *testing.T) {
	t.Setenv(envRaceOnPurpose, "1")
	cfg := chaosConfig(t, "sqlite:"+filepath.Join(t.TempDir(), "chaos.db"))
	cfg.Instances, cfg.Locks, cfg.Faults = 2, 1, 2
	var log bytes.Buffer
	cfg.Log = &log
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	races := 0
	for _, v := range rep.Violations {
		if v.Kind == VRace {
			races++
		}
	}
	switch {
	case racereport.Enabled && races == 0:
		t.Fatalf("no data-race violation; violations %+v\ndriver log:\n%s", rep.Violations, log.String())
	case !racereport.Enabled && !rep.OK():
		t.Fatalf("violations without -race: %+v\ndriver log:\n%s", rep.Violations, log.String())
	}
	t.Logf("race detector on: %v; data-race violations: %d of %d", racereport.Enabled, races, len(rep.Violations))
}
