//go:build unix

package cli

import (
	"context"
	"database/sql"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the user the read-only test runs status as when the tests run
// as root, for whom file permissions are not checked.
const nobody = 65534

// TestStatusReadOnlySQLiteFile: status and history read a SQLite file the
// user cannot write (mode 0444), of this version and of the previous one
// (which a read-write open would have to migrate), where disable, which
// writes, fails. As root, to whom permissions do not apply, the masterjob
// binary runs them as the user nobody.
func TestStatusReadOnlySQLiteFile(t *testing.T) {
	dir := t.TempDir()
	path, oldPath := filepath.Join(dir, "ro.db"), filepath.Join(dir, "old.db")
	st, oldSt := "sqlite:"+path, "sqlite:"+oldPath
	for _, s := range []string{st, oldSt} {
		if r := mainEnv(nil, "disable", "--store", s, "--lock", "JOB", "--reason", "kept"); r.code != ExitOK {
			t.Fatalf("disable: exit %d, stderr %q", r.code, r.stderr)
		}
	}
	downgradeToVersion3(t, oldPath)
	for _, p := range []string{path, oldPath} {
		if err := os.Chmod(p, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) result { return mainEnv(nil, args...) }
	if os.Geteuid() == 0 {
		bin := filepath.Join(dir, "masterjob")
		copyExecutable(t, buildBinary(t), bin)
		// nobody may reach the directory (t.TempDir's parent is 0700) and
		// create in it the -wal and -shm files that reading a WAL database
		// needs.
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		run = func(args ...string) result {
			var stdout, stderr strings.Builder
			cmd := exec.Command(bin, args...)
			cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, []string{"PATH=/usr/bin:/bin"}, &stdout, &stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if err != nil && code < 0 {
				t.Fatalf("running %v as uid %d: %v", args, nobody, err)
			}
			return result{code, stdout.String(), stderr.String()}
		}
	}

	// The permission check bites: a write fails.
	if r := run("disable", "--store", st, "--lock", "OTHER", "--reason", "r"); r.code != ExitFailure {
		t.Fatalf("disable on a 0444 file: exit %d, stderr %q; want a failure, else this test proves nothing", r.code, r.stderr)
	}
	for _, s := range []string{st, oldSt} {
		r := run("status", "--store", s)
		if r.code != ExitOK || !strings.Contains(r.stdout, "JOB") || !strings.Contains(r.stdout, "kept") {
			t.Errorf("status on a 0444 file %s: exit %d, stdout %q, stderr %q", s, r.code, r.stdout, r.stderr)
		}
		r = run("history", "--store", s)
		if r.code != ExitOK || !strings.Contains(r.stdout, "disabled") {
			t.Errorf("history on a 0444 file %s: exit %d, stdout %q, stderr %q", s, r.code, r.stdout, r.stderr)
		}
	}
	var version int
	db, err := sql.Open("sqlite", "file:"+oldPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT value FROM masterjob_meta WHERE name = 'schema_version'`).Scan(&version); err != nil || version != 3 {
		t.Errorf("schema_version of the old file after status: %d, %v; want 3, unchanged", version, err)
	}
}

// downgradeToVersion3 makes the database at path look as the previous
// version left it: no lease_clock table, schema version 3.
func downgradeToVersion3(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`DROP TABLE masterjob_lease_clock`,
		`UPDATE masterjob_meta SET value = 3 WHERE name = 'schema_version'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestStatusMissingSQLiteFile: status and history on a SQLite file that
// does not exist fail, naming it, and create nothing.
func TestStatusMissingSQLiteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.db")
	for _, cmd := range []string{"status", "history"} {
		r := mainEnv(nil, cmd, "--store", "sqlite:"+path)
		if r.code != ExitFailure || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, "no database file") {
			t.Errorf("%s on a missing file: exit %d, stdout %q, stderr %q; want 1 and a message naming the file", cmd, r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("%s created %s", cmd, path)
		}
	}
}

// TestStatusTakesNoWriteLock: status and history never begin a write
// transaction, so another process holding SQLite's write lock does not
// hold them up (this holds for root too).
func TestStatusTakesNoWriteLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	if r := mainEnv(nil, "disable", "--store", "sqlite:"+path, "--lock", "JOB", "--reason", "kept"); r.code != ExitOK {
		t.Fatalf("disable: exit %d, stderr %q", r.code, r.stderr)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")

	st := "sqlite:" + path + "?busy_timeout=200ms"
	for _, cmd := range []string{"status", "history"} {
		r := mainEnv(nil, cmd, "--store", st)
		if r.code != ExitOK || !strings.Contains(r.stdout, "JOB") {
			t.Errorf("%s while another connection holds the write lock: exit %d, stdout %q, stderr %q", cmd, r.code, r.stdout, r.stderr)
		}
	}
}

// TestRunMissingSQLiteDirectory: run with a SQLite file in a directory
// that does not exist exits 1 at once, saying so; it does not retry.
func TestRunMissingSQLiteDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	r := mainCtx(ctx, nil, args("run", "--lock", "L", timing, "--store", "sqlite:"+filepath.Join(dir, "x.db"), "--", "true")...)
	elapsed := time.Since(start)
	if r.code != ExitFailure || elapsed > 2*time.Second {
		t.Fatalf("run in a missing directory: exit %d after %v, want 1 at once; stderr:\n%s", r.code, elapsed.Round(time.Millisecond), r.stderr)
	}
	if !strings.Contains(r.stderr, dir) || !strings.Contains(r.stderr, "does not exist") || strings.Contains(r.stderr, "retrying") {
		t.Fatalf("run in a missing directory: stderr does not say that %s does not exist, or retries:\n%s", dir, r.stderr)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
