package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
)

// wrapErr turns err, the failure of a call whose context is ctx, into the
// store's errors: store.ErrClosed after Close, store.ErrUnavailable (with
// the original error also wrapped) when the server could not be reached,
// did not answer in time, or refused work for now.
func (s *Store) wrapErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case s.closed.Load():
		return fmt.Errorf("store/redis: %s: %w: %w", op, store.ErrClosed, err)
	case errors.Is(ctx.Err(), context.Canceled) && !errors.Is(err, context.DeadlineExceeded):
		// The caller gave up: not the store's fault.
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("store/redis: %s: %w: %w", op, context.Canceled, err)
		}
		return fmt.Errorf("store/redis: %s: %w", op, err)
	case isUnavailable(err):
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w: %w", err, ctxErr)
		}
		return fmt.Errorf("store/redis: %s: %w: %w", op, store.ErrUnavailable, err)
	case ctx.Err() != nil:
		return fmt.Errorf("store/redis: %s: %w: %w: %w", op, store.ErrUnavailable, ctx.Err(), err)
	default:
		return fmt.Errorf("store/redis: %s: %w", op, err)
	}
}

// isUnavailable reports whether err means the server could not be reached,
// went away, did not answer in time, or refused work for now (loading its
// data, a read-only replica after a fail-over, a cluster reconfiguring, a
// script or memory limit).
func isUnavailable(err error) bool {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, goredis.ErrClosed),
		errors.Is(err, goredis.ErrPoolTimeout),
		errors.Is(err, goredis.ErrPoolExhausted),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		goredis.IsLoadingError(err),
		goredis.IsReadOnlyError(err),
		goredis.IsClusterDownError(err),
		goredis.IsTryAgainError(err),
		goredis.IsMasterDownError(err),
		goredis.IsMaxClientsError(err),
		goredis.IsOOMError(err),
		goredis.HasErrorPrefix(err, "BUSY"),
		goredis.HasErrorPrefix(err, "NOREPLICAS"):
		return true
	}
	return false
}
