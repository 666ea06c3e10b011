package mysql

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

type mysqlError = mysqldrv.MySQLError

// Server error numbers the store tells apart.
const (
	erLockWaitTimeout     = 1205 // ER_LOCK_WAIT_TIMEOUT
	erLockDeadlock        = 1213 // ER_LOCK_DEADLOCK
	erCheckRead           = 1020 // ER_CHECKREAD: MariaDB's innodb_snapshot_isolation conflict
	erXADeadlock          = 1614 // ER_XA_RBDEADLOCK
	erConCount            = 1040 // ER_CON_COUNT_ERROR: too many connections
	erServerShutdown      = 1053 // ER_SERVER_SHUTDOWN
	erHostIsBlocked       = 1129 // ER_HOST_IS_BLOCKED
	erAbortingConnection  = 1152 // ER_ABORTING_CONNECTION
	erNetReadError        = 1158 // ER_NET_READ_ERROR (1158-1161: network errors)
	erNetErrorOnWrite     = 1160
	erNetWriteInterrupted = 1161
	erTooManyUserConns    = 1203 // ER_TOO_MANY_USER_CONNECTIONS
	erUserLimitReached    = 1226 // ER_USER_LIMIT_REACHED
	erOptionPreventsStmt  = 1290 // ER_OPTION_PREVENTS_STATEMENT: --read-only, a replica after a fail-over
	erQueryInterrupted    = 1317 // ER_QUERY_INTERRUPTED: KILL QUERY
	erReadOnlyTx          = 1792 // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
	erInnodbReadOnly      = 1836 // ER_READ_ONLY_MODE
	erConnectionKilled    = 1927 // MariaDB ER_CONNECTION_KILLED: KILL of this connection
	erStatementTimeout    = 1969 // MariaDB ER_STATEMENT_TIMEOUT: max_statement_time
	erQueryTimeout        = 3024 // MySQL ER_QUERY_TIMEOUT: max_execution_time
	erClientInteraction   = 4031 // MySQL ER_CLIENT_INTERACTION_TIMEOUT: idle connection closed by the server
)

// wrapErr turns err, the failure of a call whose context is ctx, into the
// store's errors: store.ErrClosed after Close, store.ErrUnavailable (with
// the original error also wrapped) when the server could not be reached,
// refused work for now or did not answer in time.
func (s *Store) wrapErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case s.closed.Load():
		return fmt.Errorf("store/mysql: %s: %w: %w", op, store.ErrClosed, err)
	case errors.Is(ctx.Err(), context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		// The caller gave up: not the store's fault.
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("store/mysql: %s: %w: %w", op, context.Canceled, err)
		}
		return fmt.Errorf("store/mysql: %s: %w", op, err)
	case isUnavailable(err):
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w: %w", err, ctxErr)
		}
		return fmt.Errorf("store/mysql: %s: %w: %w", op, store.ErrUnavailable, err)
	case ctx.Err() != nil:
		// The call's deadline passed while the driver reported something
		// else.
		return fmt.Errorf("store/mysql: %s: %w: %w: %w", op, store.ErrUnavailable, ctx.Err(), err)
	default:
		return fmt.Errorf("store/mysql: %s: %w", op, err)
	}
}

// isConflict reports a failure the server resolved by rolling back this
// transaction (or statement) in favour of a concurrent one: retrying is
// safe and likely to succeed.
func isConflict(err error) bool {
	var me *mysqlError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case erLockDeadlock, erLockWaitTimeout, erCheckRead, erXADeadlock:
		return true
	}
	return false
}

// isUnavailable reports whether err means the server could not be reached,
// went away, refused work for now, or did not answer in time.
func isUnavailable(err error) bool {
	var me *mysqlError
	if errors.As(err, &me) {
		switch me.Number {
		case erLockDeadlock, erLockWaitTimeout, erCheckRead, erXADeadlock,
			erConCount, erServerShutdown, erHostIsBlocked, erAbortingConnection,
			erNetReadError, 1159, erNetErrorOnWrite, erNetWriteInterrupted,
			erTooManyUserConns, erUserLimitReached, erOptionPreventsStmt,
			erQueryInterrupted, erReadOnlyTx, erInnodbReadOnly, erConnectionKilled,
			erStatementTimeout, erQueryTimeout, erClientInteraction:
			return true
		}
		return false
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, mysqldrv.ErrInvalidConn),
		errors.Is(err, mysqldrv.ErrPktSync),
		errors.Is(err, mysqldrv.ErrPktSyncMul),
		errors.As(err, &netErr),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	return false
}
