package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionText(t *testing.T) {
	vcs := func(rev, at, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: at}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "5b57bbb7c042e7a566539a0b47180492484fbae5"
	for _, tc := range []struct {
		name     string
		bi       *debug.BuildInfo
		override string
		want     string
		short    string
	}{
		{"go install @v1.2.3", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}}, "",
			"masterjob v1.2.3\nbuilt with go1.26.8 linux/amd64\n", "v1.2.3"},
		{"checkout at a tag", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: vcs(rev, "2026-11-30T07:27:42Z", "false")}, "",
			"masterjob v1.2.3\nrevision " + rev + ", committed 2026-11-30T07:27:42Z\nbuilt with go1.26.8 linux/amd64\n", "v1.2.3"},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261130072742-5b57bbb7c042+dirty"},
			Settings: vcs(rev, "2026-11-30T07:27:42Z", "true")}, "",
			"masterjob v0.0.0-20261130072742-5b57bbb7c042+dirty\nrevision " + rev + ", committed 2026-11-30T07:27:42Z, modified\nbuilt with go1.26.8 linux/amd64\n",
			"v0.0.0-20261130072742-5b57bbb7c042+dirty"},
		{"devel with VCS (an older toolchain)", &debug.BuildInfo{GoVersion: "go1.23.0", Main: debug.Module{Version: "(devel)"},
			Settings: vcs(rev, "2026-11-30T07:27:42Z", "true")}, "",
			"masterjob (devel)\nrevision " + rev + ", committed 2026-11-30T07:27:42Z, modified\nbuilt with go1.23.0 linux/amd64\n",
			"(devel) 5b57bbb7c042+dirty"},
		{"go run", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "",
			"masterjob (devel)\nbuilt with go1.26.8 linux/amd64\n", "(devel)"},
		{"link-time override", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "v9.9.9",
			"masterjob v9.9.9\nbuilt with go1.26.8 linux/amd64\n", ""},
		{"no build info", nil, "", "masterjob (unknown)\nbuilt with " + runtime.Version() + " linux/amd64\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionText(tc.bi, tc.override, "linux/amd64"); got != tc.want {
				t.Errorf("versionText =\n%s\nwant\n%s", got, tc.want)
			}
			if tc.short != "" {
				if got := shortVersion(tc.bi); got != tc.short {
					t.Errorf("shortVersion = %q, want %q", got, tc.short)
				}
			}
		})
	}
}

// TestVersionStampedByBuild builds the command, as a user would, in a git
// repository of its own (a module that requires this one through a replace
// directive, with the same main.go as cmd/masterjob), and checks what
// `masterjob version` prints at a tag, and one commit past the tag with
// uncommitted changes: the version and revision come from the build
// information the go command records.
func TestVersionStampedByBuild(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("git not found on CI: %v", err)
		}
		t.Skipf("git not found (needed to stamp a build with a VCS revision): %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goSum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mainGo, err := os.ReadFile(filepath.Join(root, "cmd", "masterjob", "main.go"))
	if err != nil {
		t.Fatal(err)
	}

	repo, bin := t.TempDir(), filepath.Join(t.TempDir(), "masterjob")
	// The same requirements as this module, so that the build needs nothing
	// beyond the module cache that building this test filled.
	mod := regexp.MustCompile(`(?m)^module .*$`).ReplaceAllString(string(goMod), "module example.com/mjversion") +
		"\nrequire github.com/masterjob/masterjob v0.0.0\n\nreplace github.com/masterjob/masterjob => " + root + "\n"
	for name, data := range map[string]string{"go.mod": mod, "go.sum": string(goSum), "main.go": string(mainGo)} {
		if err := os.WriteFile(filepath.Join(repo, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GOPROXY=off", "GOFLAGS=-mod=readonly")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = repo, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	version := func() string {
		t.Helper()
		// -buildvcs=true: a go env file may say otherwise (this machine's does).
		run(goTool, "build", "-buildvcs=true", "-o", bin, ".")
		return run(bin, "version")
	}
	run(git, "init", "-q")
	run(git, "add", ".")
	run(git, "commit", "-q", "-m", "first")
	run(git, "tag", "v1.2.3")
	rev := run(git, "rev-parse", "HEAD")

	re := func(lines ...string) *regexp.Regexp {
		return regexp.MustCompile(`^` + strings.Join(lines, `\n`) + `\nbuilt with go\S+ \S+/\S+$`)
	}
	const when = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	if got, want := version(), re(`masterjob v1\.2\.3`, `revision `+rev+`, committed `+when); !want.MatchString(got) {
		t.Errorf("at tag v1.2.3, clean: version printed\n%s\nwant it to match %s", got, want)
	}

	// One commit past the tag, and a change not yet committed.
	run(git, "commit", "-q", "--allow-empty", "-m", "second")
	rev = run(git, "rev-parse", "HEAD")
	if err := os.WriteFile(filepath.Join(repo, "main.go"), append(mainGo, "\n// changed\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := version(), re(`masterjob v1\.2\.4-0\.\d{14}-`+rev[:12]+`\+dirty`, `revision `+rev+`, committed `+when+`, modified`); !want.MatchString(got) {
		t.Errorf("one commit past v1.2.3, modified: version printed\n%s\nwant it to match %s", got, want)
	}
}
