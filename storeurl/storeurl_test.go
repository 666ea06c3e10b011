package storeurl

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/masterjob/masterjob/store"
)

func ptr(s string) *string { return &s }

func TestParse(t *testing.T) {
	tests := []struct {
		raw  string
		want URL
	}{
		{"sqlite:masterjob.db", URL{Scheme: "sqlite", Path: "masterjob.db"}},
		{"SQLite:masterjob.db", URL{Scheme: "sqlite", Path: "masterjob.db"}},
		{"sqlite:/var/lib/mj.db", URL{Scheme: "sqlite", Path: "/var/lib/mj.db"}},
		{"sqlite://rel/mj.db", URL{Scheme: "sqlite", Path: "rel/mj.db"}},
		{"sqlite:///abs/mj.db", URL{Scheme: "sqlite", Path: "/abs/mj.db"}},
		{"sqlite:mj.db?prefix=x_", URL{Scheme: "sqlite", Path: "mj.db", TablePrefix: ptr("x_")}},
		{"sqlite:mj.db?prefix=", URL{Scheme: "sqlite", Path: "mj.db", TablePrefix: ptr("")}},
		{"sqlite:mj.db?masterjob_prefix=y_&busy_timeout=250", URL{Scheme: "sqlite", Path: "mj.db", TablePrefix: ptr("y_"), Timeout: 250 * time.Millisecond}},
		{"sqlite:mj.db?busy_timeout=2s&migrate=false", URL{Scheme: "sqlite", Path: "mj.db", Timeout: 2 * time.Second, NoMigrate: true}},
		{"postgres://u@h:5432/db?sslmode=disable", URL{Scheme: "postgres", DSN: "postgres://u@h:5432/db?sslmode=disable"}},
		{"postgresql://u@h/db", URL{Scheme: "postgresql", DSN: "postgresql://u@h/db"}},
		{
			"postgres://u@h/db?sslmode=disable&masterjob_schema=Jobs&masterjob_prefix=p_&masterjob_call_timeout=3s&masterjob_migrate=false&application_name=x",
			URL{Scheme: "postgres", DSN: "postgres://u@h/db?application_name=x&sslmode=disable",
				Schema: "Jobs", TablePrefix: ptr("p_"), Timeout: 3 * time.Second, NoMigrate: true},
		},
		// The names every other engine's URL takes mean the same here, and
		// do not reach the server (which refuses "prefix" as a setting).
		{
			"postgres://u@h/db?sslmode=disable&schema=Jobs&prefix=p_&call_timeout=3s&history_limit=50&migrate=false&application_name=x",
			URL{Scheme: "postgres", DSN: "postgres://u@h/db?application_name=x&sslmode=disable",
				Schema: "Jobs", TablePrefix: ptr("p_"), Timeout: 3 * time.Second, HistoryLimit: 50, NoMigrate: true},
		},
		{"sqlite:mj.db?history_limit=7&masterjob_mode=ro", URL{Scheme: "sqlite", Path: "mj.db", HistoryLimit: 7, ReadOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.want.raw = tt.raw
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || got.Path != tt.want.Path || got.DSN != tt.want.DSN ||
				got.Schema != tt.want.Schema || got.Timeout != tt.want.Timeout || got.NoMigrate != tt.want.NoMigrate ||
				got.HistoryLimit != tt.want.HistoryLimit || got.ReadOnly != tt.want.ReadOnly ||
				got.Scheme != tt.want.Scheme || (got.TablePrefix == nil) != (tt.want.TablePrefix == nil) ||
				got.TablePrefix != nil && *got.TablePrefix != *tt.want.TablePrefix {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		raw      string
		sentinel error
		wants    []string // substrings of the message
	}{
		{"redis://localhost:6379", ErrUnknownScheme, []string{`"redis"`, "sqlite:PATH", "postgres://"}},
		{"etcd:foo", ErrUnknownScheme, []string{`"etcd"`}},
		{"masterjob.db", ErrUnknownScheme, []string{"no scheme", "masterjob.db"}},
		{"", ErrUnknownScheme, []string{"no scheme"}},
		{"/var/lib/x.db", ErrUnknownScheme, []string{"no scheme"}},
		{"sqlite:", ErrInvalidURL, []string{"no file path"}},
		{"sqlite://", ErrInvalidURL, []string{"no file path"}},
		{"sqlite:x.db?prefx=a", ErrInvalidURL, []string{`unknown parameter "prefx"`}},
		{"sqlite:x.db?prefix=Bad-Prefix", ErrInvalidURL, []string{"prefix", "[a-z0-9_]"}},
		{"sqlite:x.db?busy_timeout=soon", ErrInvalidURL, []string{"busy_timeout", "soon"}},
		{"sqlite:x.db?busy_timeout=0", ErrInvalidURL, []string{"busy_timeout", "less than a millisecond"}},
		{"sqlite:x.db?migrate=maybe", ErrInvalidURL, []string{"migrate", "maybe"}},
		{"sqlite:x.db?%zz", ErrInvalidURL, []string{"query"}},
		{"postgres://u@h/db?masterjob_scheme=x", ErrInvalidURL, []string{`"masterjob_scheme"`, "known: schema,", "masterjob_ prefix"}},
		{"postgres://u@h/db?prefix=a_&masterjob_prefix=b_", ErrInvalidURL, []string{"masterjob_prefix and prefix", "give one"}},
		{"postgres://u@h/db?prefix=a_&prefix=b_", ErrInvalidURL, []string{"prefix given 2 times"}},
		{"postgres://u@h/db?prefix=A", ErrInvalidURL, []string{"prefix", "[a-z0-9_]"}},
		{"postgres://u@h/db?history_limit=0", ErrInvalidURL, []string{"history_limit", "at least 1"}},
		{"postgres://u@h/db?call_timeout=soon", ErrInvalidURL, []string{"call_timeout", "soon"}},
		{"sqlite:x.db?history_limit=many", ErrInvalidURL, []string{"history_limit", "many"}},
		{"sqlite:x.db?busy_timeout=1s&masterjob_busy_timeout=2s", ErrInvalidURL, []string{"give one"}},
		{"postgres://u@h/db?masterjob_schema=", ErrInvalidURL, []string{"empty schema"}},
		{"postgres://u@h/db?masterjob_schema=" + strings.Repeat("s", 64), ErrInvalidURL, []string{"longer than 63"}},
		{"postgres://u@h/db?masterjob_prefix=A", ErrInvalidURL, []string{"masterjob_prefix"}},
		{"postgres://u@h/db?masterjob_call_timeout=-1s", ErrInvalidURL, []string{"masterjob_call_timeout"}},
		{"postgres://u@h/db?sslmode=bogus", ErrInvalidURL, []string{"sslmode"}},
		{"postgres://u:secret@h:notaport/db", ErrInvalidURL, []string{"postgres://"}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			_, err := Parse(tt.raw)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("Parse = %v, want an error wrapping %v", err, tt.sentinel)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestStringRedactsPassword(t *testing.T) {
	u, err := Parse("postgres://user:hunter2@db:5432/app?sslmode=disable&password=hunter3")
	if err != nil {
		t.Fatal(err)
	}
	if s := u.String(); strings.Contains(s, "hunter") || !strings.Contains(s, "user:xxxxx@db:5432/app") {
		t.Fatalf("String() = %q, want the password hidden", s)
	}
	// The DSN keeps it for the driver.
	if !strings.Contains(u.DSN, "hunter2") {
		t.Fatalf("DSN = %q lost the password", u.DSN)
	}
}

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mj.db")
	st, err := Open(ctx, "sqlite:"+path+"?prefix=t_&busy_timeout=1s&history_limit=2")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Disable(ctx, "L", "test", "storeurl_test"); err != nil {
		t.Fatal(err)
	}
	historyKeeps(t, st, 2)
	// Another prefix in the same file is another namespace.
	other, err := Open(ctx, "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	states, err := other.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 0 {
		t.Fatalf("default prefix sees %d locks of prefix t_", len(states))
	}
	// Reopening with the same prefix sees the lock.
	again, err := Open(ctx, "sqlite:"+path+"?prefix=t_&migrate=false")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	states, err = again.Locks(ctx, "L")
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || !states[0].Disabled {
		t.Fatalf("Locks = %+v, want L disabled", states)
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	_, err := Open(context.Background(), "mysql://localhost/db")
	if !errors.Is(err, ErrUnknownScheme) {
		t.Fatalf("Open = %v, want ErrUnknownScheme", err)
	}
}

// postgresURL returns the test server's URL, skipping the test (failing it
// on CI) when the server cannot be reached.
func postgresURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("MASTERJOB_TEST_POSTGRES")
	if u == "" {
		u = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at MASTERJOB_TEST_POSTGRES is unreachable on CI: %v", err)
		}
		t.Skipf("PostgreSQL unreachable (set MASTERJOB_TEST_POSTGRES): %v", err)
	}
	return u
}

// Both spellings of the parameters reach the store: the schema and the
// prefix of its tables, and the history's retention.
func TestOpenPostgres(t *testing.T) {
	base := postgresURL(t)
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	for _, form := range []string{"masterjob_", ""} {
		t.Run("params="+form+"prefix", func(t *testing.T) {
			schema := fmt.Sprintf("storeurl_test_%d_%d", os.Getpid(), rand.IntN(1e6))
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				conn, err := pgx.Connect(ctx, base)
				if err != nil {
					t.Logf("drop schema: %v", err)
					return
				}
				defer conn.Close(ctx)
				if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
					t.Logf("drop schema: %v", err)
				}
			})
			ctx := context.Background()
			st, err := Open(ctx, base+sep+form+"schema="+schema+"&"+form+"prefix=u_&"+form+"call_timeout=5s&"+
				form+"history_limit=2")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Disable(ctx, "L", "test", "storeurl_test"); err != nil {
				t.Fatal(err)
			}
			// The table is where the URL said.
			conn, err := pgx.Connect(ctx, base)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "u_locks"}.Sanitize()).Scan(&n); err != nil {
				t.Fatalf("table %s.u_locks: %v", schema, err)
			}
			if n != 1 {
				t.Fatalf("%s.u_locks has %d rows, want 1", schema, n)
			}
			historyKeeps(t, st, 2)
		})
	}
}

// historyKeeps fails t unless st's history keeps its last n entries only.
func historyKeeps(t *testing.T, st store.Store, n int) {
	t.Helper()
	ctx := context.Background()
	h := st.(store.History)
	for i := range n + 1 {
		ev := store.Event{Lock: "L", Kind: store.EventDisabled, Instance: "storeurl_test", Reason: strconv.Itoa(i)}
		if err := h.AppendEvents(ctx, []store.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := h.Events(ctx, store.EventFilter{Lock: "L"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != n || evs[0].Reason != strconv.Itoa(n) {
		t.Fatalf("history after %d appends with history_limit=%d: %+v, want the last %d", n+1, n, evs, n)
	}
}

func TestOpenPostgresUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Port 1 on localhost refuses connections.
	_, err := Open(ctx, "postgres://u:pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("Open succeeded on a closed port")
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open = %v, want an error wrapping store.ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "pw@") {
		t.Errorf("error %q shows the password", err)
	}
}

// An engine registered under two schemes (mysql and mariadb, say) is named
// once in the message about an unknown scheme.
func TestUnknownSchemeNamesEachFormOnce(t *testing.T) {
	e := Engine{
		Usage: "twin://HOST (or twins://)",
		Check: func(string) error { return nil },
		Open:  func(context.Context, string) (store.Store, error) { return nil, errors.New("not opened") },
	}
	Register("twin", e)
	Register("twins", e)
	_, err := Parse("nosuch://x")
	if !errors.Is(err, ErrUnknownScheme) {
		t.Fatalf("Parse = %v, want ErrUnknownScheme", err)
	}
	if n := strings.Count(err.Error(), e.Usage); n != 1 {
		t.Fatalf("the form %q appears %d times in %q, want once", e.Usage, n, err)
	}
}

// A URL marked WithoutMigrate opens an engine through its OpenExisting,
// and through Open where the engine has none; SQLite and PostgreSQL get
// their WithoutMigrate option (NoMigrate).
func TestWithoutMigrate(t *testing.T) {
	opened := func(name string) func(context.Context, string) (store.Store, error) {
		return func(context.Context, string) (store.Store, error) { return nil, errors.New(name) }
	}
	Register("tabled", Engine{Usage: "tabled://X", Check: func(string) error { return nil },
		Open: opened("Open"), OpenExisting: opened("OpenExisting")})
	Register("untabled", Engine{Usage: "untabled://X", Check: func(string) error { return nil }, Open: opened("Open")})
	for _, tc := range []struct {
		raw     string
		without bool
		want    string
	}{
		{"tabled://x", false, "Open"},
		{"tabled://x", true, "OpenExisting"},
		{"untabled://x", true, "Open"},
	} {
		u, err := Parse(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		if tc.without {
			u = u.WithoutMigrate()
		}
		if _, err := u.Open(context.Background()); err == nil || !strings.HasSuffix(err.Error(), ": "+tc.want) {
			t.Errorf("%s (WithoutMigrate %v): %v, want %s", tc.raw, tc.without, err, tc.want)
		}
	}
	u, err := Parse("sqlite:/x.db")
	if err != nil {
		t.Fatal(err)
	}
	if w := u.WithoutMigrate(); !w.NoMigrate || u.NoMigrate {
		t.Errorf("WithoutMigrate: %+v from %+v, want NoMigrate on the copy only", w, u)
	}
}
