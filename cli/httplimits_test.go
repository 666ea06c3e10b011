package cli

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// openFDs counts this process's open file descriptors (Linux).
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// slowBody opens a connection to addr and sends the headers of a POST
// whose body never comes.
func slowBody(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	_, err = fmt.Fprintf(c, "POST /api/mastercontrols/disable HTTP/1.1\r\nHost: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr)
	if err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	return c
}

// isClosed reads what the server sent on c and reports whether it closed
// the connection (false: c is still open after wait).
func isClosed(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadByte(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// waitAtMost polls f until it is at most want, and returns its last value.
func waitAtMost(f func() int, want int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := f()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The listener of run and serve cuts a client that sent its headers and
// withholds the body once the read timeout passes, and answers /healthz
// meanwhile; the goroutines and file descriptors the connections held
// come back.
func TestHTTPCutsSlowBodies(t *testing.T) {
	const conns = 500
	readTimeout := 2 * time.Second
	saved := httpLimits
	httpLimits.ReadTimeout = readTimeout
	t.Cleanup(func() { httpLimits = saved })

	s := startMain(t, nil, "serve", "--http", "127.0.0.1:0", "--store", sqliteURL(t), "--http-token", "slow-body-test-token")
	base := s.url(t)
	addr := strings.TrimPrefix(base, "http://")
	waitHTTP(t, base+"/readyz", 200, 10*time.Second)
	testClient.CloseIdleConnections()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)

	start := time.Now()
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		cs = append(cs, slowBody(t, addr))
	}
	opened := time.Since(start)
	// The server holds them: one goroutine each.
	gOpen := waitAtMost(func() int { return -runtime.NumGoroutine() }, -(g0 + conns*9/10), 5*time.Second)
	t.Logf("%d slow connections opened in %v: goroutines %d -> %d, fds %d -> %d",
		conns, opened.Round(time.Millisecond), g0, -gOpen, fd0, openFDs(t))

	// /healthz answers meanwhile, on a connection of its own.
	hstart := time.Now()
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the attack: %d %s", code, body)
	}
	t.Logf("/healthz answered in %v during the attack", time.Since(hstart).Round(time.Millisecond))

	// Every connection is cut within the read timeout, counted from when
	// the last one was opened, plus slack for a loaded machine (the server
	// may start reading a connection late, and its read timeout counts
	// from then).
	deadline := start.Add(opened + readTimeout + 5*time.Second)
	open := 0
	for _, c := range cs {
		if !isClosed(c, max(10*time.Millisecond, time.Until(deadline))) {
			open++
		}
	}
	t.Logf("the last connection was cut %v after the first was opened (read timeout %v)",
		time.Since(start).Round(time.Millisecond), readTimeout)
	if open > 0 {
		t.Errorf("%d of %d slow-body connections still open %v after the first was opened (read timeout %v)",
			open, conns, time.Since(start).Round(time.Millisecond), readTimeout)
	}
	// The server's goroutines and descriptors are gone (the client's
	// descriptors are still open until closed below).
	g1 := waitAtMost(runtime.NumGoroutine, g0+5, 5*time.Second)
	fd1 := waitAtMost(func() int { return openFDs(t) }, fd0+conns+5, 5*time.Second)
	for _, c := range cs {
		c.Close()
	}
	cs = nil
	fd2 := waitAtMost(func() int { return openFDs(t) }, fd0+5, 5*time.Second)
	t.Logf("after the cut: goroutines %d, fds %d with the %d client ends open, %d once closed", g1, fd1, conns, fd2)
	if g1 > g0+5 || fd1 > fd0+conns+5 || fd2 > fd0+5 {
		t.Errorf("after the cut: goroutines %d (before %d), fds %d and %d (before %d)", g1, g0, fd1, fd2, fd0)
	}
}
