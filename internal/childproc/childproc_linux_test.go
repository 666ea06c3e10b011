package childproc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/masterjob/masterjob/internal/proctree"
	"github.com/masterjob/masterjob/internal/racereport"
)

// helperEnv switches the test binary into a helper role (see TestMain).
const helperEnv = "CHILDPROC_TEST_HELPER"

// The main goroutine keeps the main thread, so that the goroutines of the
// tests run on threads that the runtime terminates when a locked goroutine
// exits (a locked goroutine exiting on the main thread only wedges it).
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "runner":
		runnerHelper("sleep", "600")
		return
	case "runner-tree":
		runnerHelper("sh", "-c", treeScript)
		return
	case "pid1":
		pid1Helper()
		return
	case "runner-will":
		runnerWillHelper()
		return
	case "runner-dies-at-start":
		runnerDiesAtStartHelper()
		return
	case "runner-dies-before-will":
		runnerDiesBeforeWillHelper()
		return
	case "will":
		willHelper()
		return
	}
	// The supervisors and helpers are this binary, race-enabled in CI; a
	// supervisor's report would otherwise go to its command's standard
	// error, and its syscall.Exit skips the detector's exit status.
	finish, err := racereport.Collect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if r := finish(); r != "" {
			fmt.Fprintf(os.Stderr, "FAIL: the race detector reported in a supervisor or helper process:\n%s", r)
			code = 1
		}
		os.Exit(code)
	}))
}

// runnerHelper plays a runner: it starts the command through Start from a
// goroutine that then exits, prints the child's pid, keeps the Go runtime
// creating and retiring OS threads, and waits to be killed.
func runnerHelper(path string, args ...string) {
	pids := make(chan int)
	go func() {
		runtime.LockOSThread() // this thread dies when the goroutine returns
		p, err := Start(Spec{Path: path, Args: args})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		pids <- p.Pid()
	}()
	fmt.Println(<-pids)
	for {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread() // retire a thread on return
			close(done)
		}()
		<-done
		time.Sleep(time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie (orphans are reparented
// to PID 1, which does not reap them in every container).
func alive(pid int) bool {
	info, ok := proctree.Stat(pid)
	return ok && info.Live()
}

func waitDead(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive after %v", pid, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startSh starts `sh -c script` with stdout on a pipe and returns the
// process and a reader of its output lines.
func startSh(t *testing.T, script string) (*Process, *bufio.Reader) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Spec{Path: "sh", Args: []string{"-c", script}, Stdout: w, Stderr: os.Stderr})
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		p.Wait()
		r.Close()
	})
	return p, bufio.NewReader(r)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read child output: %v (got %q)", err, line)
	}
	return strings.TrimSpace(line)
}

func readPid(t *testing.T, r *bufio.Reader) int {
	t.Helper()
	s := readLine(t, r)
	pid, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("child printed %q, want a pid", s)
	}
	return pid
}

func TestEnvAndOutput(t *testing.T) {
	t.Setenv("CHILDPROC_INHERITED", "yes")
	t.Setenv(EnvLock, "overridden")
	var out bytes.Buffer
	p, err := Start(Spec{
		Path: "sh",
		Args: []string{"-c", `printf '%s|%s|%s|%s' "$MASTERJOB_LOCK" "$MASTERJOB_TOKEN" "$MASTERJOB_INSTANCE" "$CHILDPROC_INHERITED"`},
		Env:  LeaseEnv("JOB-SCHEDULER", 42, "inst-1"),
		// A non-file writer exercises the copying path.
		Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Wait()
	if res.ExitCode != 0 || res.Err != nil || res.Signal != 0 {
		t.Fatalf("result = %+v, want exit 0", res)
	}
	if got, want := out.String(), "JOB-SCHEDULER|42|inst-1|yes"; got != want {
		t.Fatalf("child saw env %q, want %q", got, want)
	}
}

func TestExitCode(t *testing.T) {
	p, err := Start(Spec{Path: "sh", Args: []string{"-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if res := p.Wait(); res.ExitCode != 3 || res.String() != "exit status 3" {
		t.Fatalf("result = %+v (%s), want exit status 3", res, res)
	}
	// Stop after the child exited returns the same result at once.
	if res := p.Stop(time.Now().Add(time.Minute)); res.ExitCode != 3 {
		t.Fatalf("Stop after exit = %+v", res)
	}
}

func TestStartError(t *testing.T) {
	_, err := Start(Spec{Path: "/nonexistent/masterjob-no-such-command"})
	if err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Fatalf("Start = %v, want an error naming the command", err)
	}
}

func TestOwnProcessGroup(t *testing.T) {
	p, r := startSh(t, "echo ready; exec sleep 600")
	readLine(t, r)
	info, ok := proctree.Stat(p.Pid())
	if !ok || info.PGRP != p.Pid() {
		t.Fatalf("child pgrp = %d, want its own group %d", info.PGRP, p.Pid())
	}
}

// A child that traps SIGTERM gets its grace: Stop waits for its exit.
func TestStopHonoursGrace(t *testing.T) {
	p, r := startSh(t, `trap 'sleep 0.3; exit 7' TERM; echo ready; while :; do sleep 0.05; done`)
	readLine(t, r)
	start := time.Now()
	res := p.Stop(start.Add(5 * time.Second))
	took := time.Since(start)
	if res.ExitCode != 7 || res.Signal != 0 {
		t.Fatalf("result = %+v (%s), want exit status 7 from the TERM trap", res, res)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("Stop took %v, want about 300ms (the child's own shutdown)", took)
	}
}

// A child that ignores SIGTERM is SIGKILLed at the kill time, not before.
func TestStopKillsAtKillTime(t *testing.T) {
	p, r := startSh(t, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	readLine(t, r)
	start := time.Now()
	res := p.Stop(start.Add(400 * time.Millisecond))
	took := time.Since(start)
	if res.Signal != syscall.SIGKILL || res.ExitCode != 128+9 {
		t.Fatalf("result = %+v (%s), want killed by SIGKILL", res, res)
	}
	if took < 400*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Stop took %v, want the 400ms grace", took)
	}
}

// A kill time already past means SIGKILL at once, no SIGTERM grace.
func TestStopPastKillTimeKillsAtOnce(t *testing.T) {
	p, r := startSh(t, `trap 'sleep 5; exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
	readLine(t, r)
	start := time.Now()
	res := p.Stop(start.Add(-time.Second))
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("Stop took %v, want an immediate SIGKILL", took)
	}
	if res.Signal != syscall.SIGKILL {
		t.Fatalf("result = %+v, want killed by SIGKILL", res)
	}
}

// SIGTERM reaches the whole group: a grandchild dies with the child.
func TestStopStopsGrandchild(t *testing.T) {
	p, r := startSh(t, `sleep 600 & echo $!; wait`)
	gc := readPid(t, r)
	if !alive(gc) {
		t.Fatalf("grandchild %d not running", gc)
	}
	p.Stop(time.Now().Add(5 * time.Second))
	if alive(gc) {
		t.Fatalf("grandchild %d survived Stop", gc)
	}
}

// A grandchild that ignores SIGTERM and outlives the child is SIGKILLed at
// the kill time.
func TestStopKillsLingeringGrandchild(t *testing.T) {
	// The grandchild prints its pid once it ignores SIGTERM.
	p, r := startSh(t, `sh -c 'trap "" TERM; echo $$; exec sleep 600' & wait`)
	gc := readPid(t, r)
	start := time.Now()
	p.Stop(start.Add(300 * time.Millisecond))
	took := time.Since(start)
	if alive(gc) {
		t.Fatalf("grandchild %d survived Stop", gc)
	}
	if took < 300*time.Millisecond {
		t.Fatalf("Stop took %v: the grandchild was killed before the kill time", took)
	}
}

// Stop after the child exited by itself cleans up what it left behind.
func TestStopAfterExitCleansGroup(t *testing.T) {
	p, r := startSh(t, `sleep 600 & echo $!`)
	gc := readPid(t, r)
	if res := p.Wait(); res.ExitCode != 0 {
		t.Fatalf("child result %+v", res)
	}
	if !alive(gc) {
		t.Fatalf("grandchild %d should outlive the child", gc)
	}
	p.Stop(time.Now().Add(5 * time.Second))
	if alive(gc) {
		t.Fatalf("grandchild %d survived Stop", gc)
	}
}

// The thread of the goroutine that called Start may exit without killing the
// child: Pdeathsig is tied to Start's own locked thread.
func TestCallerThreadExitDoesNotKillChild(t *testing.T) {
	procs := make(chan *Process, 1)
	go func() {
		runtime.LockOSThread() // the thread is terminated when this returns
		p, err := Start(Spec{Path: "sleep", Args: []string{"600"}})
		if err != nil {
			t.Error(err)
		}
		procs <- p
	}()
	p := <-procs
	if p == nil {
		t.FailNow()
	}
	defer p.Stop(time.Time{})
	select {
	case <-p.Done():
		t.Fatalf("child died when its caller's thread exited: %s", p.Wait())
	case <-time.After(300 * time.Millisecond):
	}
}

// A runner killed with SIGKILL takes its child with it (Pdeathsig), even
// while the Go runtime retires threads.
func TestChildDiesWithSIGKILLedRunner(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=runner")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("runner helper: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("runner helper printed %q", line)
	}
	// Let the helper retire some threads first.
	time.Sleep(200 * time.Millisecond)
	if !alive(child) {
		t.Fatalf("child %d died before its runner", child)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, out)
	_ = cmd.Wait()
	waitDead(t, child, time.Second)
}

// A kill time that moves forward (a lease still being renewed) gives the
// child more time; StopBy follows it.
func TestStopByFollowsMovingKillTime(t *testing.T) {
	p, r := startSh(t, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	readLine(t, r)
	start := time.Now()
	res := p.StopBy(func() time.Time {
		if time.Since(start) < 150*time.Millisecond {
			return start.Add(200 * time.Millisecond) // "renewed" until 150ms
		}
		return start.Add(500 * time.Millisecond)
	})
	took := time.Since(start)
	if res.Signal != syscall.SIGKILL {
		t.Fatalf("result = %+v, want killed by SIGKILL", res)
	}
	if took < 500*time.Millisecond || took > 2*time.Second {
		t.Fatalf("StopBy took %v, want the moved kill time of 500ms", took)
	}
}

// A kill time that moves back is noticed within the recheck interval.
func TestStopByNoticesEarlierKillTime(t *testing.T) {
	p, r := startSh(t, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	readLine(t, r)
	start := time.Now()
	res := p.StopBy(func() time.Time {
		if time.Since(start) < 100*time.Millisecond {
			return start.Add(time.Hour)
		}
		return time.Time{} // lease expired: kill now
	})
	took := time.Since(start)
	if res.Signal != syscall.SIGKILL || took > 100*time.Millisecond+3*recheckInterval {
		t.Fatalf("StopBy = %+v after %v, want SIGKILL soon after 100ms", res, took)
	}
}
