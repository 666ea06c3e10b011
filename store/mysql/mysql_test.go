package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/storetest"
)

// The tests run against a real server: MASTERJOB_TEST_MYSQL (a DSN in the
// driver's format), or the machine's MariaDB. Each test works on its own
// table prefix, whose tables it drops when it ends.
const defaultTestDSN = "root@tcp(127.0.0.1:3306)/test"

func testDSN() string {
	if dsn := os.Getenv("MASTERJOB_TEST_MYSQL"); dsn != "" {
		return dsn
	}
	return defaultTestDSN
}

var admin struct {
	once sync.Once
	db   *sql.DB
	err  error
}

// runChaosInstance runs this process as one of the chaos driver's
// processes and exits, when it is one (chaos.RunIfInstance, on Linux).
var runChaosInstance = func() {}

func TestMain(m *testing.M) {
	runChaosInstance()
	code := m.Run()
	if admin.db != nil {
		admin.db.Close()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// adminDB returns a pool for the tests' own SQL (multiStatements on). When
// the server cannot be reached the test is skipped, or fails when the CI
// environment variable is set: CI must not pass by skipping.
func adminDB(t testing.TB) *sql.DB {
	t.Helper()
	admin.once.Do(func() {
		cfg, err := mysqldrv.ParseDSN(testDSN())
		if err != nil {
			admin.err = err
			return
		}
		cfg.MultiStatements = true
		conn, err := mysqldrv.NewConnector(cfg)
		if err != nil {
			admin.err = err
			return
		}
		db := sql.OpenDB(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			admin.err = err
			return
		}
		admin.db = db
	})
	if admin.err != nil {
		msg := fmt.Sprintf("MySQL/MariaDB not reachable at MASTERJOB_TEST_MYSQL=%q: %v", testDSN(), admin.err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: the MySQL tests must run)")
		}
		t.Skip(msg + " (set MASTERJOB_TEST_MYSQL to a reachable server to run these tests)")
	}
	return admin.db
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newPrefix returns a fresh table prefix whose tables are dropped when the
// test ends.
func newPrefix(t testing.TB) string {
	t.Helper()
	prefix := "mjt" + randomHex(4) + "_"
	db := adminDB(t)
	t.Cleanup(func() { dropTables(t, db, prefix) })
	return prefix
}

func dropTables(t testing.TB, db *sql.DB, prefix string) {
	var names []string
	for _, n := range tableNames {
		names = append(names, quoteIdent(prefix+n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", ")); err != nil {
		t.Errorf("dropping the tables of prefix %q: %v", prefix, err)
	}
}

// dsnWith returns the test DSN changed by edit.
func dsnWith(t testing.TB, edit func(*mysqldrv.Config)) string {
	t.Helper()
	cfg, err := mysqldrv.ParseDSN(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	return cfg.FormatDSN()
}

// openStore opens a Store with its own pool, closed when the test ends.
func openStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	return openStoreDSN(t, testDSN(), opts...)
}

func openStoreDSN(t testing.TB, dsn string, opts ...Option) *Store {
	t.Helper()
	adminDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var (
	holderA = store.Holder{ID: "holder-a", Info: `{"host":"a"}`}
	holderB = store.Holder{ID: "holder-b", Info: `{"host":"b"}`}
)

// historyLimit is the retention of the conformance suite's stores: above
// store.MaxEventsLimit, so that the suite checks the cap on Limit too.
const historyLimit = 1200

// isolationDSN returns the test DSN with every session at the isolation
// level iso ("REPEATABLE-READ", "READ-COMMITTED"), set through the
// variable MariaDB and MySQL 5.7 call tx_isolation (MySQL 8 and MariaDB
// 11.1 call it transaction_isolation, and accept tx_isolation only on
// MariaDB).
func isolationDSN(t testing.TB, iso string) string {
	return dsnWith(t, func(c *mysqldrv.Config) {
		if c.Params == nil {
			c.Params = map[string]string{}
		}
		c.Params[isolationVar(t)] = "'" + iso + "'"
	})
}

var isoVar struct {
	once sync.Once
	name string
}

// isolationVar is the name of the session variable of the isolation level
// on the test server.
func isolationVar(t testing.TB) string {
	isoVar.once.Do(func() {
		isoVar.name = "tx_isolation"
		var v sql.NullString
		err := adminDB(t).QueryRowContext(context.Background(), "SELECT @@SESSION.transaction_isolation").Scan(&v)
		if err == nil && v.Valid {
			isoVar.name = "transaction_isolation"
		}
	})
	return isoVar.name
}

func conformance(t *testing.T, dsn string) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		prefix := newPrefix(t)
		opts := []Option{WithTablePrefix(prefix), WithHistoryLimit(historyLimit), WithNotifyPoll(10 * time.Millisecond)}
		cfg, err := mysqldrv.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Harness{
			Open: func(t *testing.T) store.Store {
				s, err := Open(t.Context(), dsn, opts...)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return s
			},
			Server: cfg.Addr,
			OpenVia: func(t *testing.T, addr string) store.Store {
				via := cfg.Clone()
				via.Addr = addr
				s, err := OpenConfig(t.Context(), via, opts...)
				if err != nil {
					t.Fatalf("OpenConfig: %v", err)
				}
				return s
			},
			DeleteRecords: func(t *testing.T, locks ...string) {
				var lits []string
				for _, l := range locks {
					lits = append(lits, quoteString(l))
				}
				_, err := adminDB(t).ExecContext(t.Context(), "DELETE FROM "+quoteIdent(prefix+"locks")+
					" WHERE lock_name IN ("+strings.Join(lits, ", ")+")")
				if err != nil {
					t.Fatalf("deleting records: %v", err)
				}
			},
			HistoryLimit: historyLimit,
		}
	})
}

// TestConformance runs the store conformance suite with sessions at
// REPEATABLE READ (the default of MySQL and MariaDB) and READ COMMITTED.
func TestConformance(t *testing.T) {
	adminDB(t)
	for _, iso := range []string{"REPEATABLE-READ", "READ-COMMITTED"} {
		t.Run(iso, func(t *testing.T) { conformance(t, isolationDSN(t, iso)) })
	}
}
