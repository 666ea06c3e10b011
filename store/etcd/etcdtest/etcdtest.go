// Package etcdtest starts throw-away etcd servers for tests, benchmarks and
// the chaos harness: single-node processes on free 127.0.0.1 ports with
// their data in a temporary directory.
//
// Two versions are served:
//
//   - Debian, the etcd binary of the operating system (Debian's etcd-server
//     package: etcd 3.4), found on PATH or at $MASTERJOB_TEST_ETCD34;
//   - Current, the etcd of this module's go.etcd.io/etcd/server/v3 (3.7),
//     built once per process from internal/etcdmain (a tiny main around
//     the embed package), or the binary at $MASTERJOB_TEST_ETCD.
//
// Start skips the test, saying why, when a server cannot be had, unless
// the CI environment variable is set: then it fails it.
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Kind names an etcd build.
type Kind string

// The etcd builds served.
const (
	// Debian is the operating system's etcd (3.4 on Debian 13).
	Debian Kind = "debian"
	// Current is etcd built from this module's go.etcd.io/etcd/server/v3.
	Current Kind = "current"
)

// Kinds lists every build, for tests that run on each.
var Kinds = []Kind{Debian, Current}

// Timing is a server's raft timing, which also sets its minimum lease TTL
// (ceil(1.5 × election timeout), in whole seconds).
type Timing struct {
	Heartbeat, Election time.Duration
}

var (
	// Fast is for tests: a minimum lease TTL of 1 s.
	Fast = Timing{Heartbeat: 10 * time.Millisecond, Election: 100 * time.Millisecond}
	// Default is etcd's own: a minimum lease TTL of 2 s, as users run it.
	Default = Timing{Heartbeat: 100 * time.Millisecond, Election: time.Second}
)

// Server is one throw-away etcd process.
type Server struct {
	Kind Kind
	// Version is the server's version as it reports it ("3.4.23").
	Version string
	// Endpoint is host:port of its client URL; MetricsURL serves /metrics.
	Endpoint   string
	MetricsURL string

	bin  string
	args []string
	dir  string
	log  *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a server of kind for t and stops it when t ends. It skips t
// when the server cannot be had (failing it when CI is set).
func Start(t testing.TB, kind Kind, timing Timing) *Server {
	t.Helper()
	s, err := StartServer(kind, t.TempDir(), timing)
	if err != nil {
		Unavailable(t, fmt.Sprintf("etcd (%s): %v", kind, err))
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// Unavailable skips t with msg, or fails it when the CI environment
// variable is set.
func Unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (required when CI is set)", msg)
	}
	t.Skipf("SKIP: %s", msg)
}

// StartServer starts a server of kind with its data and log in dir; the
// caller stops it.
func StartServer(kind Kind, dir string, timing Timing) (*Server, error) {
	bin, err := Binary(kind)
	if err != nil {
		return nil, err
	}
	var last error
	for range 3 { // a port taken between the pick and the start: retry
		s, err := start(kind, bin, dir, timing)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

func start(kind Kind, bin, dir string, timing Timing) (*Server, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	metrics := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	data := filepath.Join(dir, "etcd-data")
	s := &Server{
		Kind: kind, Endpoint: strings.TrimPrefix(client, "http://"), MetricsURL: metrics,
		bin: bin, dir: dir,
		args: []string{
			"--name", "mjtest", "--data-dir", data,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "mjtest=" + peer,
			"--listen-metrics-urls", metrics,
			"--heartbeat-interval", fmt.Sprint(timing.Heartbeat.Milliseconds()),
			"--election-timeout", fmt.Sprint(timing.Election.Milliseconds()),
			"--log-level", "warn",
		},
	}
	if err := s.run(); err != nil {
		return nil, err
	}
	return s, nil
}

// run starts the process and waits until it is healthy.
func (s *Server) run() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	done := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the process exits:
		// keep this goroutine on its thread for the process's whole life.
		runtime.LockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			_ = cmd.Wait()
		}
		close(done)
	}()
	if err := <-started; err != nil {
		log.Close()
		return err
	}
	s.mu.Lock()
	s.cmd, s.done, s.log = cmd, done, log
	s.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v, err := s.health(); err == nil {
			if s.Version == "" {
				s.Version = v
			}
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited at start: %s", s.bin, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.Stop()
			return fmt.Errorf("%s not healthy after 60s: %s", s.bin, s.logTail())
		}
	}
}

// health asks /health and /version; it returns the server's version.
func (s *Server) health() (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(s.MetricsURL + "/health")
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"true"`)) {
		return "", fmt.Errorf("health: %s %s", resp.Status, body)
	}
	resp, err = c.Get("http://" + s.Endpoint + "/version")
	if err != nil {
		return "", err
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	// {"etcdserver":"3.4.23","etcdcluster":"3.4.0"}
	v := string(body)
	if i := strings.Index(v, `"etcdserver":"`); i >= 0 {
		v = v[i+len(`"etcdserver":"`):]
		v, _, _ = strings.Cut(v, `"`)
	}
	return v, nil
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (s *Server) Stop() error {
	s.mu.Lock()
	cmd, done, log := s.cmd, s.done, s.log
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	log.Close()
	return nil
}

// Kill ends the process with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done, log := s.cmd, s.done, s.log
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	log.Close()
}

// Restart stops the server and starts it again on the same ports and
// data: a store restart.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.run()
}

// Pid returns the server's process id, 0 when stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// URL returns the etcd:// store URL of the server with key prefix prefix.
func (s *Server) URL(prefix string) string {
	return "etcd://" + s.Endpoint + "/?prefix=" + prefix
}

// Metric returns the sum of the samples of a Prometheus counter on the
// server's /metrics whose labels include every one of labels
// (`grpc_method="Range"`).
func (s *Server) Metric(ctx context.Context, name string, labels ...string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return SumMetric(string(body), name, labels...), nil
}

// SumMetric sums the samples of metric name in a Prometheus text
// exposition whose labels include every one of labels.
func SumMetric(text, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		var v float64
		if i := strings.LastIndexByte(rest, ' '); i >= 0 {
			if _, err := fmt.Sscan(rest[i+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// Binary returns the path of the etcd binary of kind, building the
// current one on first use.
func Binary(kind Kind) (string, error) {
	switch kind {
	case Debian:
		if p := os.Getenv("MASTERJOB_TEST_ETCD34"); p != "" {
			return p, nil
		}
		p, err := exec.LookPath("etcd")
		if err != nil {
			return "", errors.New("no etcd binary on PATH (Debian: apt-get install etcd-server)")
		}
		return p, nil
	case Current:
		if p := os.Getenv("MASTERJOB_TEST_ETCD"); p != "" {
			return p, nil
		}
		buildOnce.Do(func() { built, buildErr = buildCurrent() })
		return built, buildErr
	}
	return "", fmt.Errorf("unknown etcd kind %q", kind)
}

// buildCurrent builds internal/etcdmain into a directory of its own.
func buildCurrent() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the etcdtest sources to build etcd")
	}
	// One stable place, so that test processes do not pile up copies; each
	// process builds (a relink from the build cache) to a name of its own
	// and renames it into place.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("masterjob-etcdmain-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "etcd")
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/masterjob/masterjob/store/etcd/internal/etcdmain")
	cmd.Dir = filepath.Dir(file)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build etcd from go.etcd.io/etcd/server/v3: %v: %s", err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return out, nil
}
