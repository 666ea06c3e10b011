package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
	"github.com/masterjob/masterjob/store/storetest"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helperProcess(path))
	}
	if path := os.Getenv(writerEnv); path != "" {
		os.Exit(frozenWriter(path))
	}
	goleak.VerifyTestMain(m)
}

const testPrefix = "mj_test_"

// historyLimit is the retention of the conformance suite's stores: above
// store.MaxEventsLimit, so that the suite checks the cap on Limit too.
const historyLimit = 1200

// rawDB opens the file without the store, as an operator's tool would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func openStore(t *testing.T, path string, opts ...sqlite.Option) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the shared suite with a fresh file per subtest.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		path := filepath.Join(t.TempDir(), "masterjob.db")
		return storetest.Harness{
			Open: func(t *testing.T) store.Store {
				s, err := sqlite.Open(path, sqlite.WithTablePrefix(testPrefix), sqlite.WithHistoryLimit(historyLimit))
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return s
			},
			HistoryLimit: historyLimit,
			Hints:        true,
			ControlHints: true,
			DeleteRecords: func(t *testing.T, locks ...string) {
				db := rawDB(t, path)
				for _, l := range locks {
					if _, err := db.Exec(`DELETE FROM "`+testPrefix+`locks" WHERE lock_name = ?`, l); err != nil {
						t.Fatalf("delete %q: %v", l, err)
					}
				}
			},
		}
	})
}

// contendBusyTimeout is the busy timeout of the contention tests. SQLite's
// busy wait is not fair: a waiter polls the lock at growing intervals (up
// to 100ms) while the others, in tight loops, take it again at once, so on
// a loaded machine (load 13 to 17 on 2 cores, -race) a process starved past
// the default 5s in 5 to 9 runs of 32. The tests are about contention being
// waited out, not about how long a saturated file takes.
const contendBusyTimeout = 60 * time.Second

// TestHandlesContend: two Stores on one file (as two processes would have)
// hammer the same locks from several goroutines each. Contention must be
// waited out, never reported (SQLITE_BUSY), and every acquisition must get
// its own token.
func TestHandlesContend(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "contend.db")
	busy := sqlite.WithBusyTimeout(contendBusyTimeout)
	handles := []*sqlite.Store{openStore(t, path, busy), openStore(t, path, busy)}
	const (
		workers = 4
		cycles  = 40
	)
	locks := []string{"L0", "L1", "L2"}
	var (
		mu     sync.Mutex
		tokens = map[int64]string{}
		wg     sync.WaitGroup
	)
	errs := make(chan error, len(handles)*workers)
	for hi, s := range handles {
		for w := range workers {
			wg.Go(func() {
				h := store.Holder{ID: fmt.Sprintf("h%d-w%d", hi, w)}
				ctx := t.Context()
				for i := range cycles {
					lock := locks[(i+w)%len(locks)]
					got, err := s.Acquire(ctx, h, []string{lock, "SHARED"}, time.Minute)
					if err != nil {
						errs <- fmt.Errorf("%s: Acquire: %w", h.ID, err)
						return
					}
					var mine []store.LeaseRef
					for _, st := range got {
						if st.Acquired {
							mu.Lock()
							if prev, dup := tokens[st.Token]; dup {
								errs <- fmt.Errorf("token %d issued twice (%s and %s)", st.Token, prev, h.ID)
							}
							tokens[st.Token] = h.ID + "/" + st.Lock
							mu.Unlock()
							mine = append(mine, store.LeaseRef{Lock: st.Lock, Token: st.Token})
						}
					}
					if _, err := s.Renew(ctx, h.ID, mine, time.Minute); err != nil {
						errs <- fmt.Errorf("%s: Renew: %w", h.ID, err)
						return
					}
					if _, err := s.Locks(ctx); err != nil {
						errs <- fmt.Errorf("%s: Locks: %w", h.ID, err)
						return
					}
					if i%10 == 0 {
						if _, err := s.Disable(ctx, "CTL", "flip", h.ID); err != nil {
							errs <- fmt.Errorf("%s: Disable: %w", h.ID, err)
							return
						}
						if _, err := s.Enable(ctx, "CTL", h.ID); err != nil {
							errs <- fmt.Errorf("%s: Enable: %w", h.ID, err)
							return
						}
					}
					if err := s.Release(ctx, h.ID, mine); err != nil {
						errs <- fmt.Errorf("%s: Release: %w", h.ID, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(tokens) == 0 {
		t.Error("no acquisition succeeded")
	}
}

const helperEnv = "MASTERJOB_SQLITE_HELPER_DB"

// helperProcess is a child process of TestProcessesContend: it cycles
// through acquire, renew and release on shared locks and prints one line per
// acquisition ("token lock"), or the error that stopped it.
func helperProcess(path string) int {
	s, err := sqlite.Open(path, sqlite.WithBusyTimeout(contendBusyTimeout))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer s.Close()
	ctx := context.Background()
	h := store.Holder{ID: fmt.Sprintf("pid-%d", os.Getpid())}
	for i := range 100 {
		lock := []string{"P0", "P1"}[i%2]
		got, err := s.Acquire(ctx, h, []string{lock}, time.Minute)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		if !got[0].Acquired {
			continue
		}
		fmt.Println(got[0].Token, lock)
		ref := []store.LeaseRef{{Lock: lock, Token: got[0].Token}}
		res, err := s.Renew(ctx, h.ID, ref, time.Minute)
		if err != nil || !res[0].Renewed {
			fmt.Println("error renew", res, err)
			return 1
		}
		if err := s.Release(ctx, h.ID, ref); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	return 0
}

// TestProcessesContend runs the contention in separate processes on one
// file: no call fails with SQLITE_BUSY, and no token is issued twice.
func TestProcessesContend(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot re-execute the test binary: %v", err)
	}
	path := filepath.Join(t.TempDir(), "processes.db")
	openStore(t, path) // create the schema once, as a deployment would
	const procs = 3
	outs := make([]string, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() {
			cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+path)
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i := range procs {
		if errs[i] != nil {
			t.Errorf("process %d: %v\n%s", i, errs[i], outs[i])
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(outs[i]))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			tok, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Errorf("process %d printed %q", i, sc.Text())
				continue
			}
			if seen[tok] {
				t.Errorf("token %d issued twice", tok)
			}
			seen[tok] = true
		}
	}
	if len(seen) == 0 {
		t.Error("no process acquired anything")
	}
}

// TestBusyTimeout: a write lock held by another connection is waited for
// while it lasts less than the busy timeout, and reported as
// store.ErrUnavailable, not as a hang, when it lasts longer.
func TestBusyTimeout(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "busy.db")
	patient := openStore(t, path)
	hasty := openStore(t, path, sqlite.WithBusyTimeout(100*time.Millisecond))
	db := rawDB(t, path)
	ctx := t.Context()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	h := store.Holder{ID: "h"}

	start := time.Now()
	_, err = hasty.Acquire(ctx, h, []string{"L"}, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Acquire past the busy timeout: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Acquire with a 100ms busy timeout took %v", d)
	}

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := patient.Acquire(short, h, []string{"L"}, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire past the context deadline: %v, want context.DeadlineExceeded", err)
	}

	done := make(chan error, 1)
	go func() {
		got, err := patient.Acquire(ctx, h, []string{"L"}, time.Minute)
		if err == nil && !got[0].Acquired {
			err = fmt.Errorf("not acquired: %+v", got[0])
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the Acquire wait for the lock
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Acquire waiting out a 200ms write lock: %v", err)
	}
}

func TestOpenOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		path string
		opts []sqlite.Option
	}{
		{"uppercase prefix", "a.db", []sqlite.Option{sqlite.WithTablePrefix("Bad")}},
		{"quote in prefix", "a.db", []sqlite.Option{sqlite.WithTablePrefix(`x"; DROP`)}},
		{"long prefix", "a.db", []sqlite.Option{sqlite.WithTablePrefix(strings.Repeat("p", 41))}},
		{"zero busy timeout", "a.db", []sqlite.Option{sqlite.WithBusyTimeout(0)}},
		{"zero history limit", "a.db", []sqlite.Option{sqlite.WithHistoryLimit(0)}},
		{"empty path", "", nil},
		{"memory", ":memory:", nil},
		{"no schema", "empty.db", []sqlite.Option{sqlite.WithoutMigrate()}},
	} {
		path := tc.path
		if path != "" && path != ":memory:" {
			path = filepath.Join(dir, path)
		}
		if s, err := sqlite.Open(path, tc.opts...); err == nil {
			_ = s.Close()
			t.Errorf("%s: Open succeeded, want an error", tc.name)
		}
	}
	if _, err := sqlite.Schema("Bad"); err == nil {
		t.Error("Schema(\"Bad\") succeeded")
	}
}

// TestWithoutMigrate: a schema applied by hand (Schema's output) is used
// as is.
func TestWithoutMigrate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dba.db")
	ddl, err := sqlite.Schema("ops_")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawDB(t, path).Exec(ddl); err != nil {
		t.Fatalf("applying Schema: %v", err)
	}
	s := openStore(t, path, sqlite.WithTablePrefix("ops_"), sqlite.WithoutMigrate())
	got, err := s.Acquire(t.Context(), store.Holder{ID: "h"}, []string{"L"}, time.Minute)
	if err != nil || !got[0].Acquired {
		t.Fatalf("Acquire: %v %+v", err, got)
	}
	if _, err := sqlite.Open(path, sqlite.WithoutMigrate()); !errors.Is(err, store.ErrNotInitialized) {
		t.Errorf("WithoutMigrate with the default prefix, whose tables are missing: %v, want store.ErrNotInitialized", err)
	}
	// A missing file is an error, and stays missing: a last will whose
	// database was removed must not leave an empty one behind.
	missing := filepath.Join(t.TempDir(), "gone.db")
	if s, err := sqlite.Open(missing, sqlite.WithoutMigrate()); err == nil || !strings.Contains(err.Error(), "no database file there") ||
		!errors.Is(err, store.ErrNotInitialized) {
		if s != nil {
			_ = s.Close()
		}
		t.Errorf("WithoutMigrate on a missing file: %v, want an error naming the missing file", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WithoutMigrate on a missing file left %s behind (stat: %v)", missing, err)
	}
}

// TestMigrateAddsHistory: a database made by version 1 (no history,
// notify, lease_clock, handoff and member tables) gets them when a Store
// opens it, and keeps its data; WithoutMigrate refuses it.
func TestMigrateAddsHistory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v1.db")
	s := openStore(t, path)
	if _, err := s.Disable(t.Context(), "JOB", "kept", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	for _, q := range []string{
		`DROP TABLE masterjob_history`,
		`DROP TABLE masterjob_notify`,
		`DROP TABLE masterjob_lease_clock`,
		`DROP TRIGGER masterjob_lease_clock_gone`,
		`DROP TABLE masterjob_handoff`,
		`DROP TRIGGER masterjob_handoff_gone`,
		`DROP TABLE masterjob_members`,
		`DROP TABLE masterjob_member_locks`,
		`UPDATE masterjob_meta SET value = 1 WHERE name = 'schema_version'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := sqlite.Open(path, sqlite.WithoutMigrate()); err == nil {
		_ = s.Close()
		t.Fatal("WithoutMigrate on a version 1 database: Open succeeded")
	}
	s = openStore(t, path)
	if err := s.AppendEvents(t.Context(), []store.Event{{Lock: "JOB", Kind: store.EventEnabled}}); err != nil {
		t.Fatalf("AppendEvents after migration: %v", err)
	}
	st, err := s.Locks(t.Context(), "JOB")
	if err != nil || !st[0].Disabled || st[0].Reason != "kept" {
		t.Fatalf("lock after migration: %+v, %v; want it still disabled", st, err)
	}
	var version int
	if err := db.QueryRow(`SELECT value FROM masterjob_meta WHERE name = 'schema_version'`).Scan(&version); err != nil || version != 5 {
		t.Errorf("schema_version = %d, %v; want 5", version, err)
	}
}

// TestPrefixesAreNamespaces: two prefixes in one file do not see each
// other, and the file is in WAL mode.
func TestPrefixesAreNamespaces(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "odd ?#% name.db")
	a := openStore(t, path)
	b := openStore(t, path, sqlite.WithTablePrefix("other_"))
	ctx := t.Context()
	if got, err := a.Acquire(ctx, store.Holder{ID: "a"}, []string{"L"}, time.Minute); err != nil || !got[0].Acquired {
		t.Fatalf("Acquire on a: %v %+v", err, got)
	}
	if got, err := b.Acquire(ctx, store.Holder{ID: "b"}, []string{"L"}, time.Minute); err != nil || !got[0].Acquired {
		t.Fatalf("Acquire on b, another prefix: %v %+v", err, got)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the path given: %v", err)
	}
	var mode string
	if err := rawDB(t, filepath.Join(filepath.Dir(path), "odd %3f%23%25 name.db")).QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

// TestInvalidArguments: arguments the contract leaves to the backend get
// clear errors.
func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "args.db"))
	ctx := t.Context()
	if _, err := s.Acquire(ctx, store.Holder{}, []string{"L"}, time.Minute); err == nil {
		t.Error("Acquire with an empty holder ID succeeded")
	}
	if _, err := s.Acquire(ctx, store.Holder{ID: "h"}, []string{"L"}, 0); err == nil {
		t.Error("Acquire with a zero ttl succeeded")
	}
	if _, err := s.Locks(ctx, ""); !errors.Is(err, store.ErrInvalidLockName) {
		t.Errorf("Locks(\"\"): %v, want ErrInvalidLockName", err)
	}
	res, err := s.Renew(ctx, "h", []store.LeaseRef{{Lock: "\xff", Token: 1}}, time.Minute)
	if err != nil || len(res) != 1 || res[0].Renewed {
		t.Errorf("Renew of an invalid name: %+v, %v; want one unrenewed result", res, err)
	}
}
