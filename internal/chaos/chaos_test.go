//go:build linux

package chaos

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The full chaos runs are long; the tests run a short version unless told
// otherwise:
//
//	go test ./internal/chaos/ -run Chaos -chaos.faults=1000 -timeout 60m -v
var (
	chaosFaults    = flag.Int("chaos.faults", 0, "faults per chaos test (default 50, 20 with -short)")
	chaosSeed      = flag.Uint64("chaos.seed", 0, "seed of the chaos tests' fault schedules (0: random, logged)")
	chaosInstances = flag.Int("chaos.instances", 3, "instances per chaos test")
	chaosLocks     = flag.Int("chaos.locks", 2, "locks per chaos test")
)

func chaosConfig(t *testing.T, storeURL string) Config {
	faults := *chaosFaults
	if faults == 0 {
		faults = 50
		if testing.Short() {
			faults = 20
		}
	}
	var log bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver log:\n%s", log.String())
		}
	})
	return Config{
		StoreURL:  storeURL,
		Instances: *chaosInstances,
		Locks:     *chaosLocks,
		Faults:    faults,
		Seed:      *chaosSeed,
		// The test binary is the instance: TestMain runs it.
		Command: []string{os.Args[0]},
		Log:     &log,
	}
}

func runChaos(t *testing.T, cfg Config) {
	t.Helper()
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sum bytes.Buffer
	rep.WriteSummary(&sum)
	t.Log("\n" + sum.String())
	if !rep.OK() {
		t.Errorf("%d violations (seed %d); work dir kept: %s", len(rep.Violations), rep.Seed, rep.Dir)
	}
	if rep.FaultsTotal != cfg.Faults {
		t.Errorf("injected %d faults, want %d", rep.FaultsTotal, cfg.Faults)
	}
	if rep.SinkAccepted == 0 || rep.Masterships == 0 {
		t.Errorf("no mastership or write seen: %d masterships, %d writes", rep.Masterships, rep.SinkAccepted)
	}
}

func TestChaosSQLite(t *testing.T) {
	db := filepath.Join(t.TempDir(), "chaos.db")
	runChaos(t, chaosConfig(t, "sqlite:"+db))
}

// testPostgresURL is the server of the PostgreSQL tests, as in store/postgres.
func testPostgresURL() string {
	if dsn := os.Getenv("MASTERJOB_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func TestChaosPostgres(t *testing.T) {
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
	runChaos(t, chaosConfig(t, dsn))
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
}
