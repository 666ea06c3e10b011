//go:build linux

package bench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
)

// BuildPackage builds the package pkg (an import path in this module) to
// out with the go tool.
func BuildPackage(out, pkg string) error {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = "go"
	}
	if b, err := exec.Command(goTool, "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Build builds the masterjob command, the instrumented child and etcd's
// election runner into dir with the go tool, from the workspace that
// contains this package (the working directory must be inside it).
func Build(dir string) (Binaries, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goTool); err != nil {
		goTool = "go"
	}
	b := Binaries{Masterjob: filepath.Join(dir, "masterjob"), Child: filepath.Join(dir, "masterjob-bench-child"),
		Election: filepath.Join(dir, "masterjob-bench-etcd-election")}
	for _, t := range []struct{ out, pkg string }{
		{b.Masterjob, "github.com/masterjob/masterjob/cmd/masterjob"},
		{b.Child, "github.com/masterjob/masterjob/bench/cmd/masterjob-bench-child"},
		{b.Election, "github.com/masterjob/masterjob/bench/cmd/masterjob-bench-etcd-election"},
	} {
		out, err := exec.Command(goTool, "build", "-o", t.out, t.pkg).CombinedOutput()
		if err != nil {
			return Binaries{}, fmt.Errorf("go build %s: %v\n%s", t.pkg, err, out)
		}
	}
	return b, nil
}
