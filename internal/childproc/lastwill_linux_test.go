package childproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runnerWillHelper plays a runner that leaves a last will: it starts a
// shell that starts a grandchild, gives the supervisor a will that checks
// both (the will helper below), prints "CHILD GRANDCHILD" and waits to be
// killed.
func runnerWillHelper() {
	pr, pw, err := os.Pipe()
	if err != nil {
		os.Exit(3)
	}
	p, err := Start(Spec{Path: "sh", Args: []string{"-c", "sleep 600 & echo $!; wait"}, Stdout: pw,
		DropEnv: []string{"CHILDPROC_SECRET"}, Env: LeaseEnv("L", 9, "i9")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	pw.Close()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "grandchild pid:", err)
		os.Exit(3)
	}
	grand := strings.TrimSpace(line)
	// The runner's environment has WILL_OUT wrong: the will's entry must
	// replace it.
	p.SetLastWill(LastWill{
		Args: []string{"-test.run=^$"},
		Env: []string{helperEnv + "=will", "WILL_OUT=" + os.Getenv("WILL_PATH"),
			"WILL_PIDS=" + strconv.Itoa(p.Pid()) + "," + grand},
	})
	if os.Getenv("WILL_HOLD_SOCKET") != "" {
		// Another process holds the runner's end of the socket: when the
		// runner dies, the supervisor sees no end of file, only its
		// death signal.
		holder := exec.Command("sleep", "3")
		holder.ExtraFiles = []*os.File{p.sys.ctl}
		if err := holder.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	fmt.Println(p.Pid(), grand)
	select {}
}

// willHelper is the last will of runnerWillHelper: it writes to $WILL_OUT
// which of $WILL_PIDS are still alive, and its environment.
func willHelper() {
	var live []string
	for _, s := range strings.Split(os.Getenv("WILL_PIDS"), ",") {
		if pid, err := strconv.Atoi(s); err == nil && alive(pid) {
			live = append(live, s)
		}
	}
	out := fmt.Sprintf("alive=%s\nenv=%s\n", strings.Join(live, ","), strings.Join(os.Environ(), "|"))
	// Written under another name, then renamed: the test sees it whole.
	tmp := os.Getenv("WILL_OUT") + ".tmp"
	if os.WriteFile(tmp, []byte(out), 0o600) != nil || os.Rename(tmp, os.Getenv("WILL_OUT")) != nil {
		os.Exit(3)
	}
}

// startWillRunner starts runnerWillHelper with its will's output at out,
// and returns it with the pids of its command and of the command's child.
func startWillRunner(t *testing.T, out string, env ...string) (*exec.Cmd, int, int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// The runner is itself a master's command (its own lease's entries):
	// Start's lease entries must replace them in the command's, and so in
	// the will's, environment.
	cmd.Env = append(append(os.Environ(), helperEnv+"=runner-will", "WILL_OUT=/nonexistent/wrong", "WILL_PATH="+out,
		"CHILDPROC_INHERITED=yes", "CHILDPROC_SECRET=s3cret", EnvLock+"=OUTER", EnvToken+"=1"), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	})
	var child, grand int
	if _, err := fmt.Fscan(bufio.NewReader(stdout), &child, &grand); err != nil {
		t.Fatalf("runner helper: %v", err)
	}
	return cmd, child, grand
}

// A runner that dies leaves its will to the supervisor, which runs it once
// the command and everything it started are dead, in the command's
// environment (without the runner's dropped secrets, with the lease) with
// the will's entries replacing those of the same names. The supervisor learns of the death by the end of file
// on its socket or by its death signal, whichever comes first: the second
// case holds the socket open in another process.
func TestLastWillRunsOnceEverythingIsDead(t *testing.T) {
	t.Run("socket", func(t *testing.T) { testLastWill(t) })
	t.Run("signal", func(t *testing.T) { testLastWill(t, "WILL_HOLD_SOCKET=1") })
}

func testLastWill(t *testing.T, env ...string) {
	out := filepath.Join(t.TempDir(), "will")
	cmd, child, grand := startWillRunner(t, out, env...)
	// This helper sets its will after the start: give the supervisor time to read it.
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var b []byte
	for {
		var err error
		if b, err = os.ReadFile(out); err == nil {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no last will ran within 5s of the runner's SIGKILL (command %d, its child %d)", child, grand)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the will ran %v after the SIGKILL", time.Since(start).Round(time.Millisecond))
	got := string(b)
	if !strings.Contains(got, "alive=\n") {
		t.Errorf("the will ran while processes of the command lived: %q", got)
	}
	_, willEnv, _ := strings.Cut(got, "env=")
	vars := strings.Split(strings.TrimSpace(willEnv), "|")
	for _, want := range []string{helperEnv + "=will", "WILL_OUT=" + out, fmt.Sprintf("WILL_PIDS=%d,%d", child, grand),
		"CHILDPROC_INHERITED=yes", EnvLock + "=L", EnvToken + "=9", EnvInstance + "=i9"} {
		name, _, _ := strings.Cut(want, "=")
		var have []string
		for _, kv := range vars {
			if strings.HasPrefix(kv, name+"=") {
				have = append(have, kv)
			}
		}
		if len(have) != 1 || have[0] != want {
			t.Errorf("the will's environment has %q, want %s alone", have, want)
		}
	}
	if slices.ContainsFunc(vars, func(kv string) bool { return strings.HasPrefix(kv, "CHILDPROC_SECRET=") }) {
		t.Errorf("the will's environment has the runner's dropped secret: %q", vars)
	}
}

// A runner that stops its command, or kills it, is alive: no will runs.
func TestNoLastWillWhileTheRunnerLives(t *testing.T) {
	for _, how := range []string{"stop", "kill", "exit"} {
		t.Run(how, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "will")
			script := "sleep 600"
			if how == "exit" {
				script = "sleep 0.2"
			}
			p, err := Start(Spec{Path: "sh", Args: []string{"-c", script}})
			if err != nil {
				t.Fatal(err)
			}
			p.SetLastWill(LastWill{
				Args: []string{"-test.run=^$"},
				Env:  []string{helperEnv + "=will", "WILL_OUT=" + out, "WILL_PIDS=" + strconv.Itoa(p.Pid())},
			})
			time.Sleep(50 * time.Millisecond)
			switch how {
			case "stop":
				p.Stop(time.Now().Add(time.Second))
			case "kill":
				p.Kill()
			}
			select {
			case <-p.gone:
			case <-time.After(5 * time.Second):
				t.Fatal("the command did not end")
			}
			<-p.sys.exited
			time.Sleep(100 * time.Millisecond)
			if b, err := os.ReadFile(out); err == nil {
				t.Fatalf("a last will ran while the runner lived: %q", b)
			}
		})
	}
}

// runnerDiesAtStartHelper plays a runner that gives its last will in the
// Spec and is SIGKILLed the moment its command has started: directly, or
// from a standby supervisor ($WILL_FROM=standby). It prints the command's
// pid first.
func runnerDiesAtStartHelper() {
	spec := Spec{Path: "sleep", Args: []string{"600"}, LastWill: LastWill{
		Args: []string{"-test.run=^$"},
		Env:  []string{helperEnv + "=will", "WILL_OUT=" + os.Getenv("WILL_PATH")},
	}}
	lease := LeaseEnv("L", 9, "i9")
	var p *Process
	var err error
	if os.Getenv("WILL_FROM") == "standby" {
		var sb *Standby
		if sb, err = Prepare(spec); err == nil {
			p, err = sb.Start(lease)
		}
	} else {
		spec.Env = lease
		p, err = Start(spec)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println(p.Pid())
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// A runner killed the moment after its command started leaves the will it
// gave in the Spec: the supervisor has it before the command runs. (Sent
// after the start, as SetLastWill does, it was lost in that window: a
// runner killed there left its lease to expire.)
func TestLastWillGivenBeforeTheStart(t *testing.T) {
	for _, from := range []string{"start", "standby"} {
		t.Run(from, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "will")
			child := dyingRunner(t, "runner-dies-at-start", "WILL_PATH="+out, "WILL_FROM="+from)
			start := time.Now()
			var b []byte
			for {
				var err error
				if b, err = os.ReadFile(out); err == nil {
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("no last will ran within 5s of the runner's death (its command %d alive: %v)", child, alive(child))
				}
				time.Sleep(5 * time.Millisecond)
			}
			if alive(child) {
				t.Errorf("the command %d outlived its runner", child)
			}
			_, willEnv, _ := strings.Cut(string(b), "env=")
			vars := strings.Split(strings.TrimSpace(willEnv), "|")
			for _, want := range []string{EnvLock + "=L", EnvToken + "=9", EnvInstance + "=i9"} {
				if !slices.Contains(vars, want) {
					t.Errorf("the will's environment lacks %s: %q", want, vars)
				}
			}
		})
	}
}

// runnerDiesBeforeWillHelper plays a runner that is SIGKILLed after its
// supervisor started and before it sent the last will: it prints the
// supervisor's pid, gives the supervisor time to start the command if it
// would, and dies. The command writes $MARK_PATH when it runs.
func runnerDiesBeforeWillHelper() {
	hook := func(sup int) {
		fmt.Println(sup)
		time.Sleep(300 * time.Millisecond)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	testHookSpawned.Store(&hook)
	_, err := Start(Spec{Path: "sh", Args: []string{"-c", `echo ran > "$MARK_PATH"; exec sleep 600`},
		LastWill: LastWill{Args: []string{"-test.run=^$"}, Env: []string{helperEnv + "=will", "WILL_OUT=" + os.Getenv("WILL_PATH")}}})
	fmt.Fprintln(os.Stderr, "the runner lived on:", err)
	os.Exit(3)
}

// A command never runs before its supervisor holds the runner's last
// will: a runner killed between its supervisor's start and the will leaves
// no command behind, where the supervisor used to start it at once and a
// runner killed in that window left a mastership's command run with no will
// to release its lease. (TestLastWillGivenBeforeTheStart kills the runner
// only after Start returned, when the will had long been sent.)
func TestNoCommandBeforeTheWill(t *testing.T) {
	dir := t.TempDir()
	mark, will := filepath.Join(dir, "mark"), filepath.Join(dir, "will")
	sup := dyingRunner(t, "runner-dies-before-will", "MARK_PATH="+mark, "WILL_PATH="+will)
	for start := time.Now(); alive(sup); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the supervisor %d outlived its runner by 5s", sup)
		}
	}
	if b, err := os.ReadFile(mark); err == nil {
		t.Errorf("the command ran before the supervisor had the last will (it wrote %q)", b)
	}
	if b, err := os.ReadFile(will); err == nil {
		t.Errorf("a last will ran that was never given: %q", b)
	}
}

// dyingRunner runs this test binary as the helper named role, with env
// added, until it dies of its own SIGKILL, and returns the pid it printed.
func dyingRunner(t *testing.T, role string, env ...string) int {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	b, _ := cmd.Output() // it dies of its SIGKILL
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("runner helper %s printed %q: %v", role, b, err)
	}
	return pid
}
