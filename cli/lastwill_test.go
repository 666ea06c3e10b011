package cli

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/internal/childproc"
	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/sqlite"
	"github.com/masterjob/masterjob/storeurl"
)

// The will's entries name the store the runner opened (--store, not
// $MASTERJOB_STORE) and its settings, once each; the lease and the
// runner's pid come from the command's environment, to which the
// supervisor adds them, replacing entries of the same names (childproc's
// TestLastWillRunsOnceEverythingIsDead).
func TestLastWillEnvironment(t *testing.T) {
	t.Setenv(EnvStore, "sqlite:/elsewhere.db")
	u, err := storeurl.Parse("sqlite:/flag.db")
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{store: u, logFormat: "json", cfg: masterjob.Config{Tolerance: 3 * time.Second}}
	w := r.lastWill()
	if len(w.Args) != 1 || w.Args[0] != LastWillArg {
		t.Errorf("args %q", w.Args)
	}
	want := map[string]string{EnvStore: "sqlite:/flag.db", envWillLogFormat: "json", envWillTimeout: "3s"}
	for name, v := range want {
		var got []string
		for _, kv := range w.Env {
			if val, ok := strings.CutPrefix(kv, name+"="); ok {
				got = append(got, val)
			}
		}
		if len(got) != 1 || got[0] != v {
			t.Errorf("%s in the will's environment: %q, want only %q", name, got, v)
		}
	}
	if len(w.Env) != len(want) {
		t.Errorf("the will's entries are %q, want only %v", w.Env, want)
	}
}

// The will releases the lease its environment names when that instance
// still holds it with that token, records it and removes the member; it
// leaves a lease that has moved on alone.
func TestRunLastWill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mj.db")
	st, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	held, err := st.Acquire(ctx, store.Holder{ID: "dead"}, []string{"L", "M"}, time.Minute)
	if err != nil || len(held) != 2 || !held[0].Acquired || !held[1].Acquired {
		t.Fatalf("acquire: %v %+v", err, held)
	}
	tokens := map[string]int64{}
	for _, s := range held {
		tokens[s.Lock] = s.Token
	}
	will := func(lock string, token int64) (int, string) {
		env := map[string]string{EnvStore: "sqlite:" + path, childproc.EnvLock: lock,
			childproc.EnvInstance: "dead", childproc.EnvToken: strconv.FormatInt(token, 10), childproc.EnvRunnerPID: "4242"}
		var stderr syncbuf.Buffer
		code := runLastWill(ctx, envFunc(env), &stderr)
		return code, stderr.String()
	}

	// A token that is not the lease's: nothing happens.
	if code, out := will("M", tokens["M"]+1); code != ExitOK || !strings.Contains(out, "already ended") {
		t.Errorf("stale token: exit %d, %s", code, out)
	}
	if code, out := will("L", tokens["L"]); code != ExitOK || !strings.Contains(out, "released its lease") {
		t.Errorf("exit %d, %s", code, out)
	}
	states, err := st.Locks(ctx, "L", "M")
	if err != nil {
		t.Fatal(err)
	}
	if states[0].Holder != "" {
		t.Errorf("L is held by %q after the will", states[0].Holder)
	}
	if states[1].Holder != "dead" || states[1].Token != tokens["M"] {
		t.Errorf("M: %+v; a will with another token must leave it", states[1])
	}
	events, err := st.Events(ctx, store.EventFilter{Lock: "L"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[0].Kind != store.EventReleased || !strings.Contains(events[0].Reason, "pid 4242") {
		t.Errorf("history of L: %+v", events)
	}

	// Without the lease's variables it refuses, as a usage error.
	if code := runLastWill(ctx, envFunc(map[string]string{EnvStore: "sqlite:" + path}), &syncbuf.Buffer{}); code != ExitUsage {
		t.Errorf("incomplete will: exit %d, want %d", code, ExitUsage)
	}
}

// A will whose store was removed after its runner died (a schema dropped,
// a file deleted) fails to open it and creates nothing: it opens the store
// without migrating. Before, a will recreated an empty schema, which CI
// found left over after TestProcessLossWhileStoppingPostgres had dropped
// its own.
func TestLastWillCreatesNothing(t *testing.T) {
	ctx := context.Background()
	will := func(storeURL string) (int, string) {
		env := map[string]string{EnvStore: storeURL, childproc.EnvLock: "L",
			childproc.EnvInstance: "dead", childproc.EnvToken: "1", childproc.EnvRunnerPID: "4242"}
		var stderr syncbuf.Buffer
		code := runLastWill(ctx, envFunc(env), &stderr)
		return code, stderr.String()
	}

	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "removed.db")
		if code, out := will("sqlite:" + path); code != ExitFailure || !strings.Contains(out, "lease expires by itself") {
			t.Errorf("exit %d, %s", code, out)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the will left %s behind (stat: %v)", path, err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		u := postgresSchemaURL(t) // a schema that no one has created
		schema := u[strings.LastIndex(u, "masterjob_schema=")+len("masterjob_schema="):]
		if code, out := will(u); code != ExitFailure || !strings.Contains(out, "lease expires by itself") {
			t.Errorf("exit %d, %s", code, out)
		}
		conn, err := pgx.Connect(ctx, postgresURL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema).Scan(&n); err != nil || n != 0 {
			t.Errorf("schema %s after the will: %d (%v), want none", schema, n, err)
		}
	})
}
