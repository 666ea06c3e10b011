//go:build linux

// Command masterjob-bench-etcd-election is etcd's own leader election as a
// singleton runner, the baseline masterjob-bench measures masterjob on etcd
// against: it campaigns with go.etcd.io/etcd/client/v3/concurrency
// (a Session, whose lease the client keeps alive every TTL/3, and an
// Election), runs the command while it leads, and on SIGTERM stops the
// command (SIGTERM, then waits for it) and resigns. When its session ends
// (its lease expired: a pause, a partition) it kills the command at once
// and campaigns again.
//
// It takes the flags of `masterjob run` that the benchmark passes, so that
// the benchmark starts either runner the same way:
//
//	masterjob-bench-etcd-election [run] --lock L --store etcd://HOST:PORT/?prefix=P --tolerance 2s -- COMMAND [ARGS]
//
// The session's TTL is the tolerance rounded up to whole seconds. The
// command gets MASTERJOB_TOKEN (the leader key's create revision) and
// MASTERJOB_INSTANCE, as under masterjob. --heartbeat-interval,
// --check-master-interval, --init-delay and --log-format are accepted and
// ignored: etcd's client keeps the session alive every TTL/3, and followers
// wait on a watch.
//
// With $MASTERJOB_TRACE set it makes the trace marks of masterjob's runner
// for the steps it has (signal received, child signalled and reaped,
// resign sent and answered, leadership won, child forked), so that the
// benchmark's -trace breaks its hand-offs down beside masterjob's.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/masterjob/masterjob/internal/trace"
	"github.com/masterjob/masterjob/store/etcd"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("masterjob-bench-etcd-election", flag.ContinueOnError)
	lock := fs.String("lock", "", "lock (election) name")
	storeURL := fs.String("store", "", "etcd:// URL; its prefix parameter prefixes the election key")
	tolerance := fs.Duration("tolerance", 24*time.Second, "session TTL (rounded up to whole seconds)")
	fs.Duration("heartbeat-interval", 0, "ignored")
	fs.Duration("check-master-interval", 0, "ignored")
	fs.Duration("init-delay", 0, "ignored")
	fs.String("log-format", "", "ignored")
	argv := os.Args[1:]
	if len(argv) > 0 && argv[0] == "run" { // as `masterjob run`
		argv = argv[1:]
	}
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	args := fs.Args()
	if *lock == "" || *storeURL == "" || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: masterjob-bench-etcd-election --lock L --store etcd://... [--tolerance D] -- COMMAND [ARGS]")
		return 2
	}
	u, err := etcd.ParseURL(*storeURL, os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg, err := u.ClientConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.Logger = zap.NewNop()
	cli, err := clientv3.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		<-sigs
		trace.Mark("signal.received", *lock)
		stop()
	}()
	ttl := int((*tolerance + time.Second - 1) / time.Second)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := fmt.Sprintf("%s-%d-%s", hostname(), os.Getpid(), hex.EncodeToString(b))
	key := u.Prefix + "election/" + *lock
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", a...)
	}
	for ctx.Err() == nil {
		if err := lead(ctx, cli, *lock, key, id, ttl, args, logf); err != nil {
			logf("%v", err)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return 0
}

// lead campaigns in a new session and runs the command while leading. It
// returns when the session ended (to campaign again) or ctx is done (after
// stopping the command and resigning).
func lead(ctx context.Context, cli *clientv3.Client, lock, key, id string, ttl int, args []string, logf func(string, ...any)) error {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer sess.Close() // revokes the lease: followers see the key go at once
	el := concurrency.NewElection(sess, key)
	won := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { won <- el.Campaign(cctx, id) }()
	select {
	case err := <-won:
		if err != nil {
			return fmt.Errorf("campaign: %w", err)
		}
	case <-sess.Done():
		return errors.New("session ended while campaigning")
	}
	token := el.Rev()
	trace.Mark("acquire.done", lock)
	logf("leader with token %d", token)
	trace.Mark("job.start", lock)
	child, err := start(args, token, id)
	if err != nil {
		_ = el.Resign(context.Background())
		return err
	}
	trace.Mark("child.forked", lock)
	select {
	case <-ctx.Done():
		// Stop, then resign.
		trace.Mark("child.signalled", lock)
		_ = syscall.Kill(-child.pid, syscall.SIGTERM)
		<-child.done
		trace.Mark("child.reaped", lock)
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		trace.Mark("release.sent", lock)
		if err := el.Resign(rctx); err != nil {
			logf("resign: %v", err)
		}
		trace.Mark("release.done", lock)
		return nil
	case <-sess.Done():
		// The lease is gone: another runner may lead already.
		_ = syscall.Kill(-child.pid, syscall.SIGKILL)
		<-child.done
		return errors.New("session ended while leading; command killed")
	case <-child.done:
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		_ = el.Resign(rctx)
		return errors.New("the command exited; resigned")
	}
}

type child struct {
	pid  int
	done chan struct{}
}

// start runs the command in its own process group from a goroutine locked
// to its thread for the command's whole life (Pdeathsig is per thread).
func start(args []string, token int64, id string) (*child, error) {
	c := &child{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "MASTERJOB_TOKEN="+strconv.FormatInt(token, 10), "MASTERJOB_INSTANCE="+id)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err := cmd.Start()
		if err == nil {
			c.pid = cmd.Process.Pid
		}
		started <- err
		if err == nil {
			_ = cmd.Wait()
		}
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
