//go:build linux

package etcd_test

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/masterjob/masterjob/internal/chaos"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// The chaos harness on etcd: the driver (this test) runs instances that
// are this test binary again (chaos.EnvInstance), each reaching etcd
// through a proxy of its own; a store restart is a restart of the
// throw-away etcd server, which every instance loses meanwhile. The CI run
// is short; the long one:
//
//	cd store/etcd && go test -run TestChaosEtcd -chaos.faults=1000 -timeout 60m -v
var (
	chaosFaults = flag.Int("chaos.faults", 0, "faults per TestChaosEtcd run (default 30)")
	chaosSeed   = flag.Uint64("chaos.seed", 0, "seed of TestChaosEtcd's fault schedule (0: random, logged)")
	// chaosRunnerFaults sizes the runner-mode run of TestChaosEtcd.
	chaosRunnerFaults = flag.Int("chaos.runner-faults", 0, "faults per runner-mode run of TestChaosEtcd (default 15)")
)

// chaosServer is the server of the run under way, which the driver
// restarts.
var chaosServer struct {
	sync.Mutex
	srv *etcdtest.Server
}

func init() {
	chaos.RegisterEngine(chaos.Engine{
		Scheme: etcd.SchemeEtcd,
		Upstream: func(raw string) (string, error) {
			c, err := etcd.ParseURL(raw, nil)
			if err != nil {
				return "", err
			}
			return c.Endpoints[0], nil
		},
		Open:      chaosOpen,
		Drop:      chaosDrop,
		Restart:   chaosRestart,
		EndLease:  chaosEndLease,
		RunnerURL: chaosRunnerURL,
		// A restart is the whole server's: runners lose it too.
		RunnerRestart: true,
	})
	// This package's init runs after package etcd's, which registered the
	// etcd:// scheme that a runner and its last will open.
	chaos.RunIfInstance()
}

// chaosRunnerURL is the etcd:// URL of namespace ns through via, for
// `masterjob run` (runner mode).
func chaosRunnerURL(raw, ns, via string) (string, error) {
	c, err := etcd.ParseURL(raw, nil)
	if err != nil {
		return "", err
	}
	q := url.Values{"prefix": {c.Prefix + ns + "/"}, "dial_timeout": {"2s"}}
	return "etcd://" + via + "?" + q.Encode(), nil
}

func chaosOpen(ctx context.Context, raw, ns, via string) (store.Store, error) {
	c, err := etcd.ParseURL(raw, nil)
	if err != nil {
		return nil, err
	}
	if via != "" {
		c.Endpoints = []string{via}
	}
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.DialTimeout = 2 * time.Second
	return etcd.Open(ctx, cfg, etcd.WithPrefix(c.Prefix+ns+"/"))
}

func chaosDrop(ctx context.Context, raw, ns string) error {
	c, err := etcd.ParseURL(raw, nil)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Delete(ctx, c.Prefix+ns+"/", clientv3.WithPrefix())
	return err
}

func chaosEndLease(ctx context.Context, raw, ns, lock, mode string) (int64, string, error) {
	c, err := etcd.ParseURL(raw, nil)
	if err != nil {
		return 0, "", err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, "", err
	}
	defer cli.Close()
	return etcd.ChaosEndLease(ctx, cli, c.Prefix+ns+"/", lock, mode)
}

func chaosRestart(ctx context.Context, _ int) (string, bool, error) {
	chaosServer.Lock()
	defer chaosServer.Unlock()
	if chaosServer.srv == nil {
		return "", false, fmt.Errorf("no etcd server to restart")
	}
	start := time.Now()
	if err := chaosServer.srv.Restart(); err != nil {
		return "", true, err
	}
	return fmt.Sprintf("restarted etcd (SIGTERM, then a new process on the same data) in %v", time.Since(start).Round(time.Millisecond)), true, nil
}

func TestChaosEtcd(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			srv := etcdtest.Start(t, kind, etcdtest.Fast)
			chaosServer.Lock()
			chaosServer.srv = srv
			chaosServer.Unlock()
			t.Cleanup(func() {
				chaosServer.Lock()
				chaosServer.srv = nil
				chaosServer.Unlock()
			})
			faults := *chaosFaults
			if faults == 0 {
				faults = 30
			}
			cfg := chaos.Config{
				StoreURL:  srv.URL("mjchaos/"),
				Instances: 3,
				Locks:     2,
				Faults:    faults,
				Seed:      *chaosSeed,
				// etcd grants whole seconds: a 2 s lease, renewed every
				// 400 ms, checked every second.
				Timing: chaos.Timing{Heartbeat: 400 * time.Millisecond, Tolerance: 2 * time.Second, Check: time.Second,
					WriteEvery: 20 * time.Millisecond},
				Command: []string{os.Args[0]},
			}
			title := fmt.Sprintf("etcd %s (%s)", srv.Version, kind)
			chaos.RunT(t, cfg, title)
			chaos.RunRunnerT(t, cfg, *chaosRunnerFaults, title)
		})
	}
}
