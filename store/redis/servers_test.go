package redis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Private servers: tests that need a setting the shared server does not
// have (keyspace notifications, cluster mode) start redis-server processes
// of their own on free ports, keeping nothing on disk, and stop them when
// the test ends. Without redis-server they skip, or fail when CI is set.

func requireBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found in PATH: %v", name, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is a redis-server process of a test's own.
type server struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	args []string
	cmd  *exec.Cmd
}

func (s *server) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// start starts the process on s.port and waits until it answers PING.
func (s *server) start() error {
	all := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "log.txt")}, s.args...)
	s.cmd = exec.Command(s.bin, all...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	if err := waitPing(s.addr(), 5*time.Second); err != nil {
		s.kill()
		log, _ := os.ReadFile(filepath.Join(s.dir, "log.txt"))
		return fmt.Errorf("redis-server on port %d did not answer: %w\n%s", s.port, err, log)
	}
	return nil
}

// kill ends the process at once (SIGKILL): what it held in memory is lost.
func (s *server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// restart kills the server and starts a new, empty one on the same port.
func (s *server) restart() {
	s.t.Helper()
	s.kill()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// startServer starts redis-server with args on a free port.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{t: t, bin: requireBinary(t, "redis-server"), dir: t.TempDir(), args: args}
	var err error
	for range 3 {
		s.port = freePort(t)
		if err = s.start(); err == nil {
			t.Cleanup(s.kill)
			return s
		}
	}
	t.Fatal(err)
	return nil
}

func waitPing(addr string, within time.Duration) error {
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startCluster starts a Redis Cluster of n masters (no replicas) and
// returns their addresses once every node reports cluster_state:ok.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	cli := requireBinary(t, "redis-cli")
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = startServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000").addr()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a})
		for {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = c.Close()
				t.Fatalf("cluster node %s not ok: %v %s", a, err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = c.Close()
	}
	return addrs
}
