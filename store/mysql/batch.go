package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// A call is one batch: a single query text holding every statement of the
// call (setting its inputs as user variables, START TRANSACTION, the
// statements, the SELECTs of its results, COMMIT), sent with no
// placeholders so that the driver sends it as one COM_QUERY packet and
// reads every result from the same reply: one round trip, whatever the
// number of locks. Values enter the text only as hexadecimal or base64
// literals (or formatted integers), which no sql_mode or character set can
// make the server read as anything but data.

// quoteIdent quotes a table name made of the validated prefix and a fixed
// suffix.
func quoteIdent(name string) string { return "`" + name + "`" }

// quoteString returns s as a binary string literal.
func quoteString(s string) string { return "X'" + hex.EncodeToString([]byte(s)) + "'" }

// jsonLiteral returns the JSON encoding of v as a utf8mb4 string
// expression: base64 keeps the text a third larger than the document
// rather than twice (hexadecimal).
func jsonLiteral(v any) (string, error) {
	doc, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return "CONVERT(FROM_BASE64('" + base64.StdEncoding.EncodeToString(doc) + "') USING utf8mb4)", nil
}

// vars builds the SET statement that gives a batch its inputs.
type vars struct {
	names []string
	exprs []string
}

func (v *vars) str(name, val string) { v.set(name, quoteString(val)) }
func (v *vars) int(name string, n int64) {
	v.set(name, strconv.FormatInt(n, 10))
}
func (v *vars) float(name string, f float64) {
	v.set(name, strconv.FormatFloat(f, 'g', -1, 64))
}
func (v *vars) null(name string) { v.set(name, "NULL") }
func (v *vars) json(name string, val any) error {
	lit, err := jsonLiteral(val)
	if err != nil {
		return err
	}
	v.set(name, lit)
	return nil
}
func (v *vars) set(name, expr string) {
	v.names = append(v.names, name)
	v.exprs = append(v.exprs, expr)
}

// lockWaitSeconds is the server-side bound on lock waits for a call
// timeout: whole seconds, at least 1.
func lockWaitSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// batchText assembles a call: the prologue (saving the session's lock wait
// timeouts and setting the call's, the store's now, the inputs), body, and
// the epilogue that restores the session and clears every variable, so
// that a connection of the application's pool is handed back as it came.
// temps lists the variables body sets itself.
func (s *Store) batchText(in vars, temps []string, body string) batch {
	temps = append([]string{"mj_need", "mj_base", "mj_nmax"}, temps...)
	var b strings.Builder
	b.Grow(len(body) + 256 + sumLen(in.exprs))
	b.WriteString("SET @mj_lwt = @@SESSION.innodb_lock_wait_timeout, @mj_mdl = @@SESSION.lock_wait_timeout;\n")
	lw := lockWaitSeconds(s.cfg.callTimeout)
	fmt.Fprintf(&b, "SET SESSION innodb_lock_wait_timeout = %d, SESSION lock_wait_timeout = %d, @mj_now = UTC_TIMESTAMP(6)", lw, lw)
	for i, n := range in.names {
		b.WriteString(", @")
		b.WriteString(n)
		b.WriteString(" = ")
		b.WriteString(in.exprs[i])
	}
	for _, n := range temps {
		b.WriteString(", @")
		b.WriteString(n)
		b.WriteString(" = NULL")
	}
	b.WriteString(";\n")
	b.WriteString(body)
	b.WriteString("\n")
	restore := restoreText(in.names, temps)
	b.WriteString(restore)
	return batch{text: b.String(), restore: restore}
}

// batch is the text of a call and the statement that restores the session
// if it fails part way.
type batch struct {
	text, restore string
}

// restoreText restores the session's lock wait timeouts and clears the
// batch's variables.
func restoreText(names, temps []string) string {
	var b strings.Builder
	b.WriteString("SET SESSION innodb_lock_wait_timeout = COALESCE(@mj_lwt, @@GLOBAL.innodb_lock_wait_timeout), " +
		"SESSION lock_wait_timeout = COALESCE(@mj_mdl, @@GLOBAL.lock_wait_timeout), @mj_now = NULL, @mj_lwt = NULL, @mj_mdl = NULL")
	for _, list := range [][]string{names, temps} {
		for _, n := range list {
			b.WriteString(", @")
			b.WriteString(n)
			b.WriteString(" = NULL")
		}
	}
	b.WriteString(";")
	return b.String()
}

func sumLen(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	return n
}

// scanFunc reads one row of result set i of a batch.
type scanFunc func(set int, rows *sql.Rows) error

// maxAttempts bounds the retries of a call that lost a deadlock or a lock
// wait; the call's context bounds them too.
const maxAttempts = 10

// run sends a batch and hands each row of each result set to scan, which
// must expect to be called again from the first row after a retry. It
// checks that the batch produced wantSets result sets. A deadlock or lock
// wait timeout (the server rolled the transaction or statement back) is
// retried within the call's context, after a short jittered pause.
func (s *Store) run(ctx context.Context, op string, b batch, wantSets int, reset func(), scan scanFunc) error {
	var err error
	for attempt := 1; ; attempt++ {
		if reset != nil {
			reset()
		}
		err = s.runOnce(ctx, b, wantSets, scan)
		if err == nil || !isConflict(err) || attempt >= maxAttempts || ctx.Err() != nil {
			break
		}
		pause := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 5)))
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return s.wrapErr(ctx, op, err)
}

func (s *Store) runOnce(ctx context.Context, b batch, wantSets int, scan scanFunc) (err error) {
	defer func() {
		if s.afterAttempt != nil {
			s.afterAttempt(err)
		}
	}()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, b.text)
	if err == nil {
		err = readSets(rows, wantSets, scan)
	}
	if err != nil {
		s.abandon(ctx, conn, err, b.restore)
	}
	return err
}

// readSets reads every result set of rows.
func readSets(rows *sql.Rows, wantSets int, scan scanFunc) error {
	sets := 0
	var scanErr error
	for scanErr == nil {
		if rows.Err() != nil {
			break
		}
		cols, err := rows.Columns()
		if err != nil || len(cols) == 0 {
			// No result set at all: every statement returned OK packets.
			break
		}
		for rows.Next() {
			if err := scan(sets, rows); err != nil {
				scanErr = err
				break
			}
		}
		sets++
		if scanErr != nil || !rows.NextResultSet() {
			break
		}
	}
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = scanErr
	}
	if err == nil && sets != wantSets {
		err = fmt.Errorf("the batch returned %d result sets, want %d", sets, wantSets)
	}
	return err
}

// abandon leaves a connection whose batch failed part way in a clean state:
// the server stops a batch at the failing statement, which may leave its
// transaction open (a lock wait timeout rolls back only the statement).
// When the server answered, a ROLLBACK and the restoration of the session
// go in one more round trip; otherwise, or if that fails, the connection is
// discarded.
func (s *Store) abandon(ctx context.Context, conn *sql.Conn, cause error, restore string) {
	var me *mysqlError
	if errors.As(cause, &me) && ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.callTimeout)
		defer cancel()
		_, err := conn.ExecContext(rctx, "ROLLBACK; "+restore)
		if err == nil {
			return
		}
	}
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
}
