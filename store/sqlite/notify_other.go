//go:build !linux

package sqlite

import (
	"context"
	"errors"
)

// ring does nothing where no subscription watches the file.
func ring(string) {}

// newWaker fails: without inotify, subscriptions poll at their full rate.
func newWaker(context.Context, string) (waker, error) {
	return nil, errors.New("no file watch on this system")
}
