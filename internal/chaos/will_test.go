//go:build linux

package chaos

import (
	"path/filepath"
	"testing"

	"github.com/masterjob/masterjob/internal/childproc"
)

func TestWillRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wills.jsonl")
	env := func(slot, token string) func(string) string {
		m := map[string]string{envWills: path, envSlot: slot, childproc.EnvLock: "L", childproc.EnvToken: token}
		return func(k string) string { return m[k] }
	}
	done := recordWill(env("2.3", "41"))
	recordWill(env("0.1", "42")) // never ends: killed
	done(0)
	got, err := readWills(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d wills read, want 2: %+v", len(got), got)
	}
	a, b := got[0], got[1]
	if a.Index != 2 || a.Gen != 3 || a.Lock != "L" || a.Token != 41 || a.Exit != 0 || a.End < a.Start || a.Start == 0 {
		t.Errorf("first will %+v; want runner 2 gen 3, L token 41, exit 0, an end after its start", a)
	}
	if b.Index != 0 || b.Gen != 1 || b.Token != 42 || b.Exit != -1 || b.End != 0 {
		t.Errorf("second will %+v; want runner 0 gen 1, token 42, no end (exit -1)", b)
	}
	// Not under a driver: nothing is written, and nothing fails.
	recordWill(func(string) string { return "" })(0)
	if got, err := readWills(filepath.Join(t.TempDir(), "none")); err != nil || got != nil {
		t.Errorf("readWills of no file = %v, %v; want nothing", got, err)
	}
}
