//go:build linux

package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/internal/chaos"
	"github.com/masterjob/masterjob/store"
)

// The chaos harness on MySQL/MariaDB: the driver (this test) runs
// instances that are this test binary again (chaos.EnvInstance), each
// reaching the server through a proxy of its own, on tables of the run's
// own prefix. The server is the shared one of the other tests
// (MASTERJOB_TEST_MYSQL), which the test may not restart: the store-restart
// fault ends every server connection of one instance (KILL CONNECTION, as
// PostgreSQL's runs use pg_terminate_backend). The server cannot tell whose
// a connection is (all come from the proxies, and performance_schema, which
// would show connection attributes, is usually off), so each instance
// connection records its CONNECTION_ID() in a table of the run when it
// opens. The CI run is short; the long one:
//
//	cd store/mysql && go test -run TestChaosMySQL -chaos.faults=1000 -chaos.seed=1 -timeout 60m -v
var (
	chaosFaults = flag.Int("chaos.faults", 0, "faults per TestChaosMySQL run (default 30)")
	// chaosRunnerFaults sizes the runner-mode run of TestChaosMySQL.
	chaosRunnerFaults = flag.Int("chaos.runner-faults", 0, "faults per runner-mode run of TestChaosMySQL (default 15)")
	chaosSeed         = flag.Uint64("chaos.seed", 0, "seed of TestChaosMySQL's fault schedule (0: random, logged)")
	chaosDir          = flag.String("chaos.dir", "", "work directory of TestChaosMySQL's run, kept (default: a temporary one, kept only on failure)")
)

// chaosRun is what the driver process knows of the run under way.
var chaosRun struct {
	sync.Mutex
	raw, prefix string
}

func init() {
	chaos.RegisterEngine(chaos.Engine{
		Scheme: "mysql",
		Upstream: func(raw string) (string, error) {
			cfg, _, err := ParseURL(raw)
			if err != nil {
				return "", err
			}
			if cfg.Net != "tcp" {
				return "", fmt.Errorf("the chaos harness proxies TCP: the store URL names a %s socket", cfg.Net)
			}
			return cfg.Addr, nil
		},
		Open:     chaosOpen,
		Drop:     chaosDrop,
		Restart:  chaosRestart,
		EndLease: chaosEndLease,
		// Restart ends the connections of the instances' own handles,
		// which a runner's store, opened by URL, is not: runner mode
		// leaves it out.
		RunnerURL: chaosRunnerURL,
	})
	// TestMain runs the driver's processes: this init runs before the one
	// that registers the URL schemes that a runner and its last will open.
	runChaosInstance = chaos.RunIfInstance
}

// chaosPrefix returns the table prefix of namespace ns under the URL's
// prefix parameter.
func chaosPrefix(raw, ns string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	p := u.Query().Get("prefix")
	if p == "" {
		p = u.Query().Get("masterjob_prefix")
	}
	return p + ns + "_", nil
}

// connTable is the table where instance connections record their ids.
func connTable(prefix string) string { return quoteIdent(prefix + "chaos_conns") }

// chaosDB opens a pool of the URL's server without the proxy, for the
// driver's own statements.
func chaosDB(raw string) (*sql.DB, error) {
	cfg, _, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// taggingConnector records each new connection's CONNECTION_ID() as
// instance index's before handing it to the pool.
type taggingConnector struct {
	driver.Connector
	insert string
}

func (c taggingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("chaos: the MySQL connection cannot execute statements")
	}
	if _, err := ex.ExecContext(ctx, c.insert, nil); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("chaos: recording the connection's id: %w", err)
	}
	return conn, nil
}

// ownedStore closes the pool it was opened on with the store.
type ownedStore struct {
	*Store
	db *sql.DB
}

func (s ownedStore) Close() error {
	err := s.Store.Close()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

func chaosOpen(ctx context.Context, raw, ns, via string) (store.Store, error) {
	cfg, opts, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	prefix, err := chaosPrefix(raw, ns)
	if err != nil {
		return nil, err
	}
	opts = append(opts, WithTablePrefix(prefix))
	index, instance := chaos.Slot()
	if !instance {
		// The driver's own handle: it creates the run's tables, the
		// connection table among them, and remembers the run for Restart.
		st, err := OpenConfig(ctx, cfg, opts...)
		if err != nil {
			return nil, err
		}
		if _, err := st.db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+connTable(prefix)+
			" (conn_id BIGINT UNSIGNED NOT NULL PRIMARY KEY, idx INT NOT NULL, KEY (idx)) ENGINE=InnoDB"); err != nil {
			_ = st.Close()
			return nil, err
		}
		chaosRun.Lock()
		chaosRun.raw, chaosRun.prefix = raw, prefix
		chaosRun.Unlock()
		return st, nil
	}
	cfg = cfg.Clone()
	if via != "" {
		cfg.Addr = via
	}
	cfg.Timeout = 2 * time.Second
	cfg.MultiStatements = true
	conn, err := mysqldrv.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(taggingConnector{Connector: conn,
		insert: fmt.Sprintf("REPLACE INTO %s (conn_id, idx) VALUES (CONNECTION_ID(), %d)", connTable(prefix), index)})
	db.SetMaxIdleConns(4)
	st, err := New(ctx, db, opts...)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return ownedStore{Store: st, db: db}, nil
}

func chaosDrop(ctx context.Context, raw, ns string) error {
	prefix, err := chaosPrefix(raw, ns)
	if err != nil {
		return err
	}
	db, err := chaosDB(raw)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		if strings.HasPrefix(n, prefix) {
			names = append(names, quoteIdent(n))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(names) == 0 {
		return nil
	}
	_, err = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", "))
	return err
}

// chaosRestart ends every server connection instance index holds (KILL
// CONNECTION of each id its connections recorded); the server and the
// data stay, and the instance's pool reconnects at its next call.
func chaosRestart(ctx context.Context, index int) (string, bool, error) {
	chaosRun.Lock()
	raw, prefix := chaosRun.raw, chaosRun.prefix
	chaosRun.Unlock()
	if prefix == "" {
		return "", false, errors.New("no chaos run under way")
	}
	db, err := chaosDB(raw)
	if err != nil {
		return "", false, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT conn_id FROM "+connTable(prefix)+" WHERE idx = ?", index)
	if err != nil {
		return "", false, err
	}
	var ids []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return "", false, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", false, err
	}
	killed, gone := 0, 0
	for _, id := range ids {
		_, err := db.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id))
		var me *mysqldrv.MySQLError
		switch {
		case err == nil:
			killed++
		case errors.As(err, &me) && me.Number == 1094: // unknown thread id: closed already
			gone++
		default:
			return "", false, err
		}
		if _, err := db.ExecContext(ctx, "DELETE FROM "+connTable(prefix)+" WHERE conn_id = ?", id); err != nil {
			return "", false, err
		}
	}
	return fmt.Sprintf("KILL CONNECTION ended %d connections of instance %d (%d recorded ones were closed already; the server stays up)",
		killed, index, gone), false, nil
}

// chaosEndLease ends lock's current lease in the locks table behind its
// holder's back, in one transaction: delete removes the lock's row unless
// the lock is disabled (the row holds the control); expire sets the
// lease's expiry 1 ms in the past (the server's clock), keeping the row.
func chaosEndLease(ctx context.Context, raw, ns, lock, mode string) (int64, string, error) {
	prefix, err := chaosPrefix(raw, ns)
	if err != nil {
		return 0, "", err
	}
	locks := quoteIdent(prefix + "locks")
	var change, extra string
	switch mode {
	case chaos.LossDelete:
		change, extra = "DELETE FROM "+locks+" WHERE lock_name = ?", " AND NOT disabled"
	case chaos.LossExpire:
		change = "UPDATE " + locks + " SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1000 MICROSECOND WHERE lock_name = ?"
	default:
		return 0, "", fmt.Errorf("store-side loss: no mode %q on mysql", mode)
	}
	db, err := chaosDB(raw)
	if err != nil {
		return 0, "", err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, "", err
	}
	defer tx.Rollback()
	var token int64
	var holder []byte
	err = tx.QueryRowContext(ctx, "SELECT token, holder FROM "+locks+
		" WHERE lock_name = ? AND holder IS NOT NULL AND expires_at > UTC_TIMESTAMP(6)"+extra+" FOR UPDATE", []byte(lock)).Scan(&token, &holder)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	if _, err := tx.ExecContext(ctx, change, []byte(lock)); err != nil {
		return 0, "", err
	}
	if err := tx.Commit(); err != nil {
		return 0, "", err
	}
	return token, string(holder), nil
}

func TestChaosMySQL(t *testing.T) {
	db := adminDB(t) // skips, or fails in CI, when the server is unreachable
	dcfg, err := mysqldrv.ParseDSN(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	if dcfg.Net != "tcp" {
		msg := fmt.Sprintf("MASTERJOB_TEST_MYSQL reaches the server over %s: the chaos harness proxies TCP", dcfg.Net)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var version string
	if err := db.QueryRowContext(t.Context(), "SELECT VERSION()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	// The run's tables are prefixed <prefix><run namespace>_: the test's
	// own prefix keeps them apart from any other test's.
	prefix := "mjc" + randomHex(4) + "_"
	u := url.URL{Scheme: "mysql", Host: dcfg.Addr, Path: "/" + dcfg.DBName, RawQuery: "prefix=" + prefix}
	if dcfg.Passwd != "" {
		u.User = url.UserPassword(dcfg.User, dcfg.Passwd)
	} else {
		u.User = url.User(dcfg.User)
	}
	t.Cleanup(func() {
		chaosRun.Lock()
		chaosRun.raw, chaosRun.prefix = "", ""
		chaosRun.Unlock()
	})
	faults := *chaosFaults
	if faults == 0 {
		faults = 30
	}
	cfg := chaos.Config{
		StoreURL:  u.String(),
		Instances: 3,
		Locks:     2,
		Faults:    faults,
		Seed:      *chaosSeed,
		// The default timing (heartbeat 100 ms, lease 600 ms, check
		// 300 ms): the server keeps expiries in microseconds. Every kind.
		Command: []string{os.Args[0]},
		Dir:     *chaosDir,
	}
	title := fmt.Sprintf("%s at %s", version, dcfg.Addr)
	chaos.RunT(t, cfg, title)
	chaos.RunRunnerT(t, cfg, *chaosRunnerFaults, title)
	// Nothing of the run is left.
	var left int
	if err := db.QueryRowContext(context.Background(),
		"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND LEFT(table_name, ?) = ?",
		len(prefix), prefix).Scan(&left); err != nil || left > 0 {
		t.Errorf("%d tables left under prefix %q (%v)", left, prefix, err)
	}
}

// chaosRunnerURL is the mysql:// URL of namespace ns through via, for
// `masterjob run` (runner mode).
func chaosRunnerURL(raw, ns, via string) (string, error) {
	prefix, err := chaosPrefix(raw, ns)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Del("masterjob_prefix")
	q.Set("prefix", prefix)
	u.Host, u.RawQuery = via, q.Encode()
	return u.String(), nil
}
