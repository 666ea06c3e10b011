//go:build linux && !masterjob_noredis

package main

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/masterjob/masterjob/cli"
)

// TestNoClientLinesOnStderr: a command whose Redis is down says so in
// one line of its own, with none of the Redis client library's lines
// (which it writes to the process's standard error, not to the writers
// cli.Main is given) around it: they would break --log-format json.
func TestNoClientLinesOnStderr(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	// The process's standard error, descriptor 2, into a pipe for the call.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	code := cli.Main(context.Background(), []string{"status", "--store", "redis://" + closed + "/0"}, &out, &errOut,
		func(string) (string, bool) { return "", false })
	if err := syscall.Dup3(saved, 2, 0); err != nil {
		t.Fatal(err)
	}
	syscall.Close(saved)
	w.Close()
	leaked, _ := io.ReadAll(r)
	r.Close()

	if code != cli.ExitFailure || !strings.Contains(errOut.String(), "store: unavailable") {
		t.Errorf("status with Redis down: exit %d, stderr %q", code, errOut.String())
	}
	if len(leaked) > 0 {
		t.Errorf("the process's standard error got lines the command did not write:\n%s", leaked)
	}
}
