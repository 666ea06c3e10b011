package redis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/storetest"
)

// The tests run against a real server: MASTERJOB_TEST_REDIS, or the local
// default. The server is shared: every test works under a key prefix of its
// own and deletes its keys when it ends. Nothing here runs FLUSHALL or
// FLUSHDB, or changes the server's configuration.
const defaultTestURL = "redis://127.0.0.1:6379/0"

func testURL() string {
	if u := os.Getenv("MASTERJOB_TEST_REDIS"); u != "" {
		return u
	}
	return defaultTestURL
}

// runChaosInstance runs this process as one of the chaos driver's
// processes and exits, when it is one (chaos.RunIfInstance, on Linux).
var runChaosInstance = func() {}

func TestMain(m *testing.M) {
	runChaosInstance()
	code := m.Run()
	if admin.client != nil {
		_ = admin.client.Close()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var admin struct {
	once   sync.Once
	client *goredis.Client
	err    error
}

// adminClient returns a client for the tests' own commands. When the
// server cannot be reached the test is skipped, or fails when the CI
// environment variable is set: CI must not pass by skipping.
func adminClient(t testing.TB) *goredis.Client {
	t.Helper()
	admin.once.Do(func() {
		u, err := ParseURL(testURL())
		if err != nil {
			admin.err = err
			return
		}
		c := goredis.NewClient(u.Options)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Ping(ctx).Err(); err != nil {
			_ = c.Close()
			admin.err = err
			return
		}
		admin.client = c
	})
	if admin.err != nil {
		msg := fmt.Sprintf("Redis not reachable at MASTERJOB_TEST_REDIS=%q: %v", Redact(testURL()), admin.err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return admin.client
}

// testPrefix returns a key prefix of the test's own and deletes every key
// under it when the test ends.
func testPrefix(t testing.TB) string {
	t.Helper()
	c := adminClient(t)
	p := randomPrefix()
	t.Cleanup(func() { deleteKeys(t, c, p) })
	return p
}

// randomPrefix returns a new key prefix for a test: "mjtest:" and twelve
// random hex digits.
func randomPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "mjtest:" + hex.EncodeToString(b) + ":"
}

// deleteKeys deletes every key under prefix, which must not be empty.
func deleteKeys(t testing.TB, c goredis.UniversalClient, prefix string) {
	t.Helper()
	if prefix == "" {
		t.Fatal("deleteKeys: empty prefix")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	scan := func(ctx context.Context, node *goredis.Client) error {
		iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var batch []string
		flush := func() error {
			// One UNLINK per key, pipelined: in a cluster the keys of a
			// batch lie in many slots.
			_, err := node.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for _, k := range batch {
					p.Unlink(ctx, k)
				}
				return nil
			})
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return flush()
	}
	var err error
	switch c := c.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *goredis.Client:
		err = scan(ctx, c)
	}
	if err != nil {
		t.Errorf("deleting the test's keys under %q: %v", prefix, err)
	}
}

// quietLogger discards the store's warnings (the shared server keeps
// nothing on disk; TestDurabilityWarning checks that warning).
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// historyLimit is the retention of the stores under test: above
// store.MaxEventsLimit, so that the suite checks the cap on Limit too.
const historyLimit = 1200

func openTest(t testing.TB, prefix string, opts ...Option) *Store {
	t.Helper()
	return openTestVia(t, prefix, "", opts...)
}

// openTestVia is openTest reaching the server through addr (host:port),
// when not empty.
func openTestVia(t testing.TB, prefix, addr string, opts ...Option) *Store {
	t.Helper()
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		o := *u.Options
		o.Addr = addr
		u.Options = &o
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := u.Open(ctx, append([]Option{WithPrefix(prefix), WithHistoryLimit(historyLimit), WithLogger(quietLogger)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func deleteRecords(t *testing.T, c goredis.Cmdable, k keys, locks ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range locks {
		stem := strings.TrimSuffix(k.lease(l), suffixLease)
		// The token counter (stem+"tok") stays, as the store says it must.
		for _, key := range []string{stem + "lease", stem + "rec", stem + "resv"} {
			if err := c.Del(ctx, key).Err(); err != nil {
				t.Fatalf("DEL %s: %v", key, err)
			}
		}
	}
}

// testServer returns the host:port of the test server.
func testServer(t testing.TB) string {
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	return u.Options.Addr
}

// TestConformance runs the shared conformance suite on the server, each
// subtest under a prefix of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		p := testPrefix(t)
		return storetest.Harness{
			Open: func(t *testing.T) store.Store { return openTest(t, p) },
			DeleteRecords: func(t *testing.T, locks ...string) {
				deleteRecords(t, adminClient(t), keys{prefix: p}, locks...)
			},
			HistoryLimit: historyLimit,
			Server:       testServer(t),
			OpenVia:      func(t *testing.T, addr string) store.Store { return openTestVia(t, p, addr) },
		}
	})
}

// TestDurabilityWarning: opening on a server that keeps nothing on disk
// logs one warning saying what a restart loses; the check reads the
// server's real settings.
func TestDurabilityWarning(t *testing.T) {
	c := adminClient(t)
	cfg, err := c.ConfigGet(t.Context(), "*").Result()
	if err != nil {
		t.Skipf("CONFIG GET refused by the server: %v", err)
	}
	var buf bytes.Buffer
	s := openTest(t, testPrefix(t), WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	defer s.Close()
	d := s.Durability()
	if !d.Known || d.AppendOnly != cfg["appendonly"] || d.Save != cfg["save"] || d.AppendFsync != cfg["appendfsync"] {
		t.Errorf("Durability() = %+v, the server says appendonly=%q save=%q appendfsync=%q",
			d, cfg["appendonly"], cfg["save"], cfg["appendfsync"])
	}
	volatile := cfg["appendonly"] == "no" && cfg["save"] == ""
	warned := strings.Count(buf.String(), "keeps nothing on disk")
	switch {
	case volatile && warned != 1:
		t.Errorf("server without persistence: %d warnings, want 1; log:\n%s", warned, buf.String())
	case !volatile && warned != 0:
		t.Errorf("server with persistence warned: %s", buf.String())
	}
	t.Logf("server: appendonly=%q save=%q appendfsync=%q; log: %s", cfg["appendonly"], cfg["save"], cfg["appendfsync"], buf.String())
}

// TestEscapedNames: names holding the characters the key layout escapes
// are distinct locks (on one server; TestCluster checks a cluster).
func TestEscapedNames(t *testing.T) {
	s := openTest(t, testPrefix(t))
	defer s.Close()
	checkEscapedNames(t, s)
}
