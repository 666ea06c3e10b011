//go:build linux

package main

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/masterjob/masterjob/cli"
)

// TestNoClientLinesOnStderr: a command whose store is down (a closed
// port) or silent (a listener that accepts and says nothing) says so in a
// line of its own, with nothing from the engines' client libraries on the
// process's standard error (where go-redis and the MySQL driver write by
// default, not to the writers cli.Main is given): such lines break a
// runner's --log-format json.
func TestNoClientLinesOnStderr(t *testing.T) {
	type result struct {
		url, stderr string
		code        int
	}
	var results []result

	leaked := captureStderr(t, func() {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, url := range unreachableURLs(t) {
			wg.Go(func() {
				var out, errOut strings.Builder
				code := cli.Main(context.Background(), []string{"status", "--store", url}, &out, &errOut,
					func(string) (string, bool) { return "", false })
				mu.Lock()
				results = append(results, result{url, errOut.String(), code})
				mu.Unlock()
			})
		}
		wg.Wait()
	})
	if len(leaked) > 0 {
		t.Errorf("the process's standard error got lines the commands did not write:\n%s", leaked)
	}
	for _, res := range results {
		if res.code != cli.ExitFailure || !strings.Contains(res.stderr, "store: unavailable") {
			t.Errorf("status --store %s: exit %d, stderr %q", res.url, res.code, res.stderr)
		}
	}
	if len(results) < 2 {
		t.Fatalf("%d commands ran", len(results))
	}
}

// captureStderr runs f with the process's standard error, descriptor 2,
// going into a pipe, and returns what was written there.
func captureStderr(t *testing.T, f func()) []byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(saved)
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Dup3(saved, 2, 0); err != nil {
			t.Fatal(err)
		}
	}()
	func() {
		defer w.Close()
		f()
	}()
	// Descriptor 2 still holds the pipe: put it back before reading.
	if err := syscall.Dup3(saved, 2, 0); err != nil {
		t.Fatal(err)
	}
	return <-got
}
