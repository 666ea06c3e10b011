package mysql

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

// userDB returns a *sql.DB the test owns (as an application's), with the
// DSN edited by edit.
func userDB(t *testing.T, edit func(*mysqldrv.Config)) *sql.DB {
	t.Helper()
	adminDB(t)
	db, err := sql.Open("mysql", dsnWith(t, edit))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newStoreOn(t *testing.T, db *sql.DB, opts ...Option) *Store {
	t.Helper()
	s, err := New(t.Context(), db, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestNewRequiresMultiStatements: a *sql.DB that cannot send several
// statements per query is refused with a message naming the DSN parameter.
func TestNewRequiresMultiStatements(t *testing.T) {
	db := userDB(t, func(c *mysqldrv.Config) { c.MultiStatements = false })
	_, err := New(t.Context(), db, WithTablePrefix(newPrefix(t)))
	if !errors.Is(err, errNoMultiStatements) || !strings.Contains(err.Error(), "multiStatements=true") {
		t.Fatalf("New on a pool without multiStatements: %v", err)
	}
}

// TestNewLeavesPoolAndSessionsAsTheyWere: a Store on the application's pool
// gives its connection back with the session's lock wait timeouts and no
// user variable of its own, closes nothing on Close, and a batch that fails
// part way leaves no transaction open.
func TestNewLeavesPoolAndSessionsAsTheyWere(t *testing.T) {
	db := userDB(t, func(c *mysqldrv.Config) {
		c.MultiStatements = true
		c.Params = map[string]string{"innodb_lock_wait_timeout": "37", "lock_wait_timeout": "41"}
	})
	db.SetMaxOpenConns(1) // every call below uses the same session
	prefix := newPrefix(t)
	s := newStoreOn(t, db, WithTablePrefix(prefix))
	ctx := t.Context()
	checkSession := func(after string) {
		t.Helper()
		var lwt, mdl int
		var req, now, base sql.NullString
		err := db.QueryRowContext(ctx, "SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.lock_wait_timeout, @mj_req, @mj_now, @mj_base").
			Scan(&lwt, &mdl, &req, &now, &base)
		if err != nil {
			t.Fatal(err)
		}
		if lwt != 37 || mdl != 41 || req.Valid || now.Valid || base.Valid {
			t.Errorf("after %s: session has innodb_lock_wait_timeout=%d lock_wait_timeout=%d @mj_req=%v @mj_now=%v @mj_base=%v, want 37, 41 and no variables",
				after, lwt, mdl, req, now, base)
		}
		var inTx int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID()").Scan(&inTx); err != nil {
			t.Fatal(err)
		}
		if inTx != 0 {
			t.Errorf("after %s: the session has an open transaction", after)
		}
	}
	st, err := s.Acquire(ctx, holderA, []string{"SESSION"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	checkSession("Acquire")

	// A release that fails after it updated the row: the notify table is
	// gone. The release must be rolled back and the session restored.
	if _, err := adminDB(t).ExecContext(ctx, "DROP TABLE "+quoteIdent(prefix+"notify")); err != nil {
		t.Fatal(err)
	}
	err = s.Release(ctx, holderA.ID, []store.LeaseRef{{Lock: "SESSION", Token: st[0].Token}})
	var me *mysqlError
	if !errors.As(err, &me) {
		t.Fatalf("Release without its notify table: %v, want the server's error", err)
	}
	checkSession("a batch that failed part way")
	got, err := s.Locks(ctx, "SESSION")
	if err != nil || got[0].Holder != holderA.ID {
		t.Errorf("the failed release was not rolled back: %v %+v", err, got)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(ctx); err != nil {
		t.Errorf("Close closed the application's pool: %v", err)
	}
}

// TestCallTimeoutBoundsStarvation: on a pool the application has
// exhausted, a call fails with ErrUnavailable after the call timeout
// instead of waiting for a connection.
func TestCallTimeoutBoundsStarvation(t *testing.T) {
	db := userDB(t, func(c *mysqldrv.Config) { c.MultiStatements = true })
	db.SetMaxOpenConns(1)
	s := newStoreOn(t, db, WithTablePrefix(newPrefix(t)), WithCallTimeout(300*time.Millisecond))
	conn, err := db.Conn(t.Context()) // the application holds the only connection
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_, err = s.Renew(context.Background(), holderA.ID, []store.LeaseRef{{Lock: "STARVED", Token: 1}}, time.Minute)
	elapsed := time.Since(start)
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Renew on an exhausted pool: %v, want ErrUnavailable wrapping the deadline", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("Renew on an exhausted pool took %v, want about the 300ms call timeout", elapsed)
	}
}

// TestLockWaitBoundedByServer: a call that waits for a row lock longer
// than the call timeout gives up, and the server gives up the wait too
// (innodb_lock_wait_timeout set from the call timeout), so that the row
// locks the abandoned transaction took are not held for the server's
// default 50s.
func TestLockWaitBoundedByServer(t *testing.T) {
	prefix := newPrefix(t)
	s := openStore(t, WithTablePrefix(prefix), WithCallTimeout(time.Second))
	ctx := t.Context()
	got, err := s.Acquire(ctx, holderA, []string{"W1", "W2"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	release := holdRowLocks(t, "SELECT lock_name FROM "+quoteIdent(prefix+"locks")+" WHERE lock_name = 'W2'")
	refs := []store.LeaseRef{{Lock: got[0].Lock, Token: got[0].Token}, {Lock: got[1].Lock, Token: got[1].Token}}
	_, err = s.Renew(ctx, holderA.ID, refs, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Renew while W2's row is locked: %v, want ErrUnavailable", err)
	}
	// The abandoned renewal held W1 while it waited for W2, which is still
	// locked: W1 must be free again once the server gives up that wait
	// (1s here), not after its default 50s.
	other := openStore(t, WithTablePrefix(prefix), WithCallTimeout(10*time.Second))
	start := time.Now()
	res, err := other.Renew(ctx, holderA.ID, refs[:1], time.Minute)
	if err != nil || !res[0].Renewed {
		t.Fatalf("Renew of W1 afterwards: %v %+v", err, res)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("W1 stayed locked %v after the call gave up", d)
	}
	release()
}

// TestServerKillsConnection: KILL of the store's connection (a server
// restart seen from one connection) costs at most the call that was using
// it; the next call uses a new connection.
func TestServerKillsConnection(t *testing.T) {
	prefix := newPrefix(t)
	s := openStore(t, WithTablePrefix(prefix))
	s.db.SetMaxOpenConns(1)
	ctx := t.Context()
	var id int64
	if err := s.db.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	st, err := s.Acquire(ctx, holderA, []string{"KILLED"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminDB(t).ExecContext(ctx, "KILL CONNECTION ?", id); err != nil {
		t.Fatal(err)
	}
	res, err := s.Renew(ctx, holderA.ID, []store.LeaseRef{{Lock: "KILLED", Token: st[0].Token}}, time.Minute)
	if err != nil || !res[0].Renewed {
		t.Fatalf("Renew after KILL of the store's connection: %v %+v", err, res)
	}
}

// TestOutageAndRecovery: while the network to the server is cut, every
// call fails with ErrUnavailable within the call timeout; once it is back,
// calls succeed again without reopening the store.
func TestOutageAndRecovery(t *testing.T) {
	prefix := newPrefix(t)
	p := newProxy(t)
	dsn := dsnWith(t, func(c *mysqldrv.Config) { c.Addr = p.addr })
	s := openStoreDSN(t, dsn, WithTablePrefix(prefix), WithCallTimeout(500*time.Millisecond))
	ctx := t.Context()
	st, err := s.Acquire(ctx, holderA, []string{"OUTAGE"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ref := []store.LeaseRef{{Lock: "OUTAGE", Token: st[0].Token}}

	p.frozen.Store(true) // a silent network: nothing answers
	start := time.Now()
	_, err = s.Renew(ctx, holderA.ID, ref, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Renew on a silent network: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Renew on a silent network took %v, want about the 500ms call timeout", d)
	}
	p.frozen.Store(false)
	p.down() // connections cut, nothing listens
	if _, err := s.Locks(ctx, "OUTAGE"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Locks while the server is unreachable: %v, want ErrUnavailable", err)
	}
	p.up()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := s.Renew(ctx, holderA.ID, ref, time.Minute)
		if err == nil && res[0].Renewed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the outage: %v %+v", err, res)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy forwards TCP connections to the test server and can cut them all,
// simulating a network outage.
type proxy struct {
	t      *testing.T
	target string
	addr   string

	frozen atomic.Bool // while set, bytes are swallowed: a silent network

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t *testing.T) *proxy {
	cfg, err := mysqldrv.ParseDSN(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: cfg.Addr, addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = struct{}{}, struct{}{}
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer dst.Close()
				defer src.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 && !p.frozen.Load() {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			p.wg.Go(func() { pipe(u, c) })
			p.wg.Go(func() { pipe(c, u) })
		}
	})
}

// down stops accepting and cuts every open connection.
func (p *proxy) down() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
