package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/masterjob/masterjob/store"
)

// wrapErr turns err, the failure of a call whose context is ctx, into the
// store's errors: store.ErrClosed after Close, store.ErrUnavailable (with
// the original error also wrapped) when the server could not be reached or
// did not answer in time.
func (s *Store) wrapErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case s.closed.Load():
		return fmt.Errorf("store/postgres: %s: %w: %w", op, store.ErrClosed, err)
	case errors.Is(ctx.Err(), context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		// The caller gave up: not the store's fault.
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("store/postgres: %s: %w: %w", op, context.Canceled, err)
		}
		return fmt.Errorf("store/postgres: %s: %w", op, err)
	case isUnavailable(err):
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			// Keep the deadline visible to errors.Is whatever pgx made of it.
			err = fmt.Errorf("%w: %w", err, ctxErr)
		}
		return fmt.Errorf("store/postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	case isMissingStatement(err):
		return fmt.Errorf("store/postgres: %s: %w (%s)", op, err, missingStatementHint)
	case ctx.Err() != nil:
		// The call's deadline passed while pgx reported something else.
		return fmt.Errorf("store/postgres: %s: %w: %w: %w", op, store.ErrUnavailable, ctx.Err(), err)
	default:
		return fmt.Errorf("store/postgres: %s: %w", op, err)
	}
}

// missingStatementHint says why a connection may not find a statement it
// prepared, and what to do.
const missingStatementHint = "the server does not know a statement this connection prepared: behind a pooler " +
	"in transaction mode (PgBouncer before 1.21, or without max_prepared_statements), add " +
	"default_query_exec_mode=exec to the URL"

// isMissingStatement reports that the server does not know a prepared
// statement the connection prepared (invalid_sql_statement_name).
func isMissingStatement(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "26000"
}

// isConflict reports a failure the server resolved by aborting this
// statement in favour of a concurrent one: retrying is safe and likely to
// succeed.
func isConflict(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", // serialization_failure
		"40P01": // deadlock_detected
		return true
	}
	return false
}

// isUnavailable reports whether err means the server could not be reached,
// went away, refused work for now, or did not answer in time.
func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		code := pgErr.Code
		switch {
		case strings.HasPrefix(code, "08"), // connection_exception
			strings.HasPrefix(code, "53"),  // insufficient_resources (too many connections, disk full, out of memory)
			strings.HasPrefix(code, "57P"), // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped
			code == "57014",                // query_canceled (statement_timeout)
			code == "55P03",                // lock_not_available (lock_timeout)
			code == "25006",                // read_only_sql_transaction: a standby after fail-over
			code == "40001", code == "40P01":
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		pgconn.Timeout(err),
		pgconn.SafeToRetry(err),
		errors.As(err, &connectErr),
		errors.As(err, &netErr),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	// pgx reports a connection it closed after a fatal error as "conn closed"
	// without a type to match.
	return strings.Contains(err.Error(), "conn closed")
}
