package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/masterjob/masterjob/cli"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// builtWith names the engines of other modules this build links (set by
// engine_*_test.go, which carry the same build tags as engine_*.go).
var builtWith = map[string]bool{}

// TestEnginesRegistered: the command opens every engine's URLs, except
// those of an engine left out with its build tag, which it refuses with a
// message that names the tag.
func TestEnginesRegistered(t *testing.T) {
	got := storeurl.Schemes()
	for _, want := range []string{"sqlite", "postgres", "postgresql"} {
		if !slices.Contains(got, want) {
			t.Errorf("storeurl.Schemes() = %v: %q missing", got, want)
		}
	}
	urls := map[string]string{
		"etcd":  "etcd://127.0.0.1:2379,127.0.0.1:22379?prefix=app/",
		"mysql": "mysql://root@127.0.0.1:3306/test",
		"redis": "redis://127.0.0.1:6379/0",
	}
	for engine, u := range urls {
		_, err := storeurl.Parse(u)
		switch {
		case builtWith[engine] && err != nil:
			t.Errorf("%s URL: %v (an engine's blank import in engine_%s.go?)", engine, err, engine)
		case !builtWith[engine] && (err == nil || !strings.Contains(err.Error(), "-tags masterjob_no"+engine)):
			t.Errorf("%s URL in a build without it: %v, want a refusal naming the tag masterjob_no%s", engine, err, engine)
		}
	}
}

// TestGoModInstallable: go install .../cmd/masterjob@VERSION refuses a
// module whose go.mod has replace directives; the workspace (go.work)
// resolves the modules during development instead.
func TestGoModInstallable(t *testing.T) {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*replace\b`).Match(b) {
		t.Error("cmd/masterjob/go.mod has a replace directive: go install ...@VERSION would refuse the module; put it in go.work")
	}
}

// TestHelpNamesEveryEngine: `masterjob help` shows the URL form of every
// engine this build links, not only the built-in ones.
func TestHelpNamesEveryEngine(t *testing.T) {
	var out, errOut strings.Builder
	cli.Main(context.Background(), []string{"help"}, &out, &errOut, func(string) (string, bool) { return "", false })
	help := out.String() + errOut.String()
	for _, want := range []string{"sqlite:PATH", "postgres://"} {
		if !strings.Contains(help, want) {
			t.Errorf("help does not show %q:\n%s", want, help)
		}
	}
	forms := map[string]string{"etcd": "etcd://HOST:PORT", "mysql": "mysql://USER", "redis": "redis://"}
	for engine, form := range forms {
		if got := strings.Contains(help, form); got != builtWith[engine] {
			t.Errorf("help shows %s's form %q: %v, want %v (linked: %v):\n%s", engine, form, got, builtWith[engine], builtWith[engine], help)
		}
	}
	if strings.Contains(help, "{{") {
		t.Errorf("help has an unfilled placeholder:\n%s", help)
	}
}

// TestOpenGivesUpWithoutADeadline: opening a store whose server is down
// (a closed port) or does not answer (a listener that accepts and says
// nothing) fails with store.ErrUnavailable by the engine's own bounds,
// even for a caller without a deadline, as the read commands are. etcd's
// open once waited for ever on a closed port.
func TestOpenGivesUpWithoutADeadline(t *testing.T) {
	for _, raw := range unreachableURLs(t) {
		t.Run(raw, func(t *testing.T) {
			t.Parallel()
			done := make(chan error, 1)
			go func() {
				st, err := storeurl.Open(context.Background(), raw)
				if err == nil {
					st.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("open %s: %v, want store.ErrUnavailable", raw, err)
				}
			case <-time.After(time.Minute):
				t.Errorf("open %s with no deadline: no answer after a minute", raw)
			}
		})
	}
}

// unreachableURLs returns, for every engine this build links, a URL of a
// closed port and one of a listener that accepts connections and never
// answers. The listener lives until t's cleanups (after its parallel
// subtests).
func unreachableURLs(t *testing.T) []string {
	t.Helper()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	forms := map[string]string{
		"postgres": "postgres://u@%s/db?sslmode=disable",
		"etcd":     "etcd://%s/?dial_timeout=2s",
		"mysql":    "mysql://u@%s/db",
		"redis":    "redis://%s/0",
	}
	var urls []string
	for engine, form := range forms {
		if engine == "postgres" || builtWith[engine] {
			urls = append(urls, fmt.Sprintf(form, closedAddr), fmt.Sprintf(form, silent.Addr().String()))
		}
	}
	slices.Sort(urls)
	return urls
}
