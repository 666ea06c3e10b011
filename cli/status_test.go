package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// holdLock acquires lock in the store at rawURL for a holder that describes
// itself as a masterjob instance does, with a lease of a minute.
func holdLock(t *testing.T, rawURL, lock string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := storeurl.Open(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := store.Holder{ID: "web-1-4242-abcd", Info: `{"host":"web-1","pid":4242,"address":"10.0.0.5:8080","version":"v1.2.0"}`}
	got, err := st.Acquire(ctx, h, []string{lock}, time.Minute)
	if err != nil || len(got) != 1 || !got[0].Acquired {
		t.Fatalf("Acquire %s: %+v, %v", lock, got, err)
	}
}

// decodeLocks decodes a JSON array of locks in the control API's shape,
// refusing fields that shape does not have.
func decodeLocks(t *testing.T, what, s string) []controlapi.Lock {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var locks []controlapi.Lock
	if err := dec.Decode(&locks); err != nil {
		t.Fatalf("%s is not an array of controlapi.Lock: %v\n%s", what, err, s)
	}
	return locks
}

// keysOf returns the field names of each object of a JSON array, by lock.
func keysOf(t *testing.T, what, s string) map[string][]string {
	t.Helper()
	var objs []map[string]any
	if err := json.Unmarshal([]byte(s), &objs); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, s)
	}
	out := map[string][]string{}
	for _, o := range objs {
		out[o["lockName"].(string)] = slices.Sorted(maps.Keys(o))
	}
	return out
}

// TestStatusOneShape: `status --json`, on the store or through a server,
// prints the locks in the shape of the control API's answers: the same
// field names, and the same values but the time left on the lease.
func TestStatusOneShape(t *testing.T) {
	store := sqliteURL(t)
	holdLock(t, store, "HELD")
	if r := mainEnv(nil, "disable", "--store", store, "--lock", "OFF", "--reason", "maintenance window"); r.code != ExitOK {
		t.Fatalf("disable: %d %s", r.code, r.stderr)
	}
	s := startMain(t, nil, "serve", "--http", "127.0.0.1:0", "--store", store)
	base := s.url(t)
	waitHTTP(t, base+"/readyz", 200, 5*time.Second)

	_, apiBody := httpGet(t, base+"/api/mastercontrols")
	var list struct {
		Locks json.RawMessage `json:"locks"`
	}
	if err := json.Unmarshal([]byte(apiBody), &list); err != nil {
		t.Fatal(err)
	}
	views := map[string]string{"GET /api/mastercontrols": string(list.Locks)}
	for what, args := range map[string][]string{
		"status --json --store":  {"status", "--json", "--store", store},
		"status --json --server": {"status", "--json", "--server", base},
	} {
		r := mainEnv(nil, args...)
		if r.code != ExitOK {
			t.Fatalf("%s: exit %d, stderr %q", what, r.code, r.stderr)
		}
		views[what] = r.stdout
	}

	api := decodeLocks(t, "GET /api/mastercontrols", views["GET /api/mastercontrols"])
	apiKeys := keysOf(t, "GET /api/mastercontrols", views["GET /api/mastercontrols"])
	for what, out := range views {
		locks := decodeLocks(t, what, out)
		if len(locks) != 2 || locks[0].LockName != "HELD" || locks[1].LockName != "OFF" {
			t.Fatalf("%s: %+v", what, locks)
		}
		held := locks[0]
		if held.Master != "web-1-4242-abcd" || held.Holder == nil || held.Holder.Host != "web-1" || held.Holder.PID != 4242 ||
			held.Token != 1 || held.Since.IsZero() || held.LastRenewal.IsZero() || held.ExpiresInMs <= 0 {
			t.Errorf("%s: held lock %+v (holder %+v)", what, held, held.Holder)
		}
		if off := locks[1]; !off.Disabled || off.Reason != "maintenance window" || off.Master != "" || off.Unknown {
			t.Errorf("%s: disabled lock %+v", what, off)
		}
		for i := range locks {
			a, b := api[i], locks[i]
			a.ExpiresInMs, b.ExpiresInMs = 0, 0 // measured at different times
			// SQLite reports the expiry as the reading's wall time plus the
			// time left on the host's boot clock: two readings may differ
			// by a millisecond of rounding.
			if d := a.ExpiresAt.Sub(b.ExpiresAt); d < -5*time.Millisecond || d > 5*time.Millisecond {
				t.Errorf("%s and the API differ on %s's expiry by %v", what, a.LockName, d)
			}
			a.ExpiresAt = b.ExpiresAt
			if ja, jb := mustJSON(t, a), mustJSON(t, b); !bytes.Equal(ja, jb) {
				t.Errorf("%s and the API differ on %s:\n%s\n%s", what, a.LockName, jb, ja)
			}
		}
		if keys := keysOf(t, what, out); !maps.EqualFunc(keys, apiKeys, slices.Equal) {
			t.Errorf("field names of %s: %v; of the API: %v", what, keys, apiKeys)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStatusUnknownLocks: a named lock the store has no record of is
// reported unknown on stderr and gets no row; status exits 1 when every
// named lock is unknown, 0 when some are known; --json marks them. On the
// store and through a server alike.
func TestStatusUnknownLocks(t *testing.T) {
	store := sqliteURL(t)
	if r := mainEnv(nil, "disable", "--store", store, "--lock", "KNOWN", "--reason", "r"); r.code != ExitOK {
		t.Fatalf("disable: %d %s", r.code, r.stderr)
	}
	s := startMain(t, nil, "serve", "--http", "127.0.0.1:0", "--store", store)
	base := s.url(t)
	for _, target := range [][]string{{"--store", store}, {"--server", base}} {
		r := mainEnv(nil, args("status", target, "NOBODY", "TYPO")...)
		if r.code != ExitFailure || r.stdout != "" || !strings.Contains(r.stderr, "unknown lock NOBODY") || !strings.Contains(r.stderr, "unknown lock TYPO") {
			t.Errorf("status %v NOBODY TYPO: exit %d, stdout %q, stderr %q; want exit 1 naming both", target, r.code, r.stdout, r.stderr)
		}
		r = mainEnv(nil, args("status", target, "NOBODY", "KNOWN")...)
		if r.code != ExitOK || strings.Contains(r.stdout, "NOBODY") || !strings.Contains(r.stderr, "unknown lock NOBODY") {
			t.Errorf("status %v NOBODY KNOWN: exit %d, stdout %q, stderr %q; want exit 0, no row for NOBODY", target, r.code, r.stdout, r.stderr)
		} else {
			checkStatusRow(t, r.stdout, "KNOWN", map[string]string{"DISABLED": "yes"})
		}
		r = mainEnv(nil, args("status", target, "--json", "NOBODY")...)
		if locks := decodeLocks(t, "status --json NOBODY", r.stdout); r.code != ExitFailure || len(locks) != 1 || !locks[0].Unknown {
			t.Errorf("status %v --json NOBODY: exit %d, %+v; want exit 1 and unknown", target, r.code, locks)
		}
	}
}
