//go:build linux

package sqlite

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ring is the doorbell: after a transaction that wrote notifications has
// committed, the writer sets the database file's times to now. That is an
// IN_ATTRIB event for every subscription watching the file (newWaker), sent
// once the commit is visible to other connections. A write permission is
// enough for it (times are not chosen, so no ownership is needed), and
// nothing reads these times: SQLite does not. A failure is ignored:
// subscribers then see the commit at their next safety poll.
func ring(path string) {
	_ = unix.UtimesNanoAt(unix.AT_FDCWD, path, nil, 0)
}

// fileWaker waits on an inotify watch of the database file: a subscription
// wakes when a writer rings (ring), and otherwise at its safety poll.
type fileWaker struct {
	f    *os.File // the inotify descriptor, non-blocking: Go's poller waits on it
	path string
	stop func() bool // unregisters the context.AfterFunc that ends a wait
	buf  [4096]byte
}

// newWaker watches the database file at path. It fails where inotify
// cannot be used (no more inotify instances or watches for this user, a
// file system that refuses watches); the subscription then polls at its
// full rate. Waits end when ctx is done.
func newWaker(ctx context.Context, path string) (waker, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, wakeMask); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("inotify_add_watch %s: %w", path, err)
	}
	w := &fileWaker{f: os.NewFile(uintptr(fd), "inotify"), path: path}
	// A past deadline ends a Read at once, or the next one.
	w.stop = context.AfterFunc(ctx, func() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) })
	return w, nil
}

// wakeMask is what wakes a subscription: the doorbell (IN_ATTRIB), and the
// file going away (IN_DELETE_SELF, IN_MOVE_SELF; the kernel then also
// sends IN_IGNORED when the watch is gone). Writes (IN_MODIFY) are not in
// it: of a commit they come before its fsync and before other connections
// can see it, and every renewal would wake every subscriber of the host.
const wakeMask = unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// wait blocks until the file is rung, d has passed or ctx is done (the
// caller checks ctx). rung is false when d passed. An error means the
// watch is unusable from now on.
func (w *fileWaker) wait(ctx context.Context, d time.Duration) (rung bool, err error) {
	if err := w.f.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	// After the deadline is set: a cancellation from now on sets it in the
	// past, one before is seen here.
	if ctx.Err() != nil {
		return false, nil
	}
	n, err := w.f.Read(w.buf[:])
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Events are read only for the watch's end; any event is a wake-up.
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		mask := binary.NativeEndian.Uint32(w.buf[off+4:])
		nameLen := int(binary.NativeEndian.Uint32(w.buf[off+12:]))
		off += unix.SizeofInotifyEvent + nameLen
		if mask&unix.IN_IGNORED != 0 {
			// The file was deleted or its file system unmounted: the
			// store is broken anyway; polling is what is left.
			return true, fmt.Errorf("inotify watch of %s removed", w.path)
		}
	}
	return true, nil
}

func (w *fileWaker) close() error {
	w.stop()
	return w.f.Close()
}
