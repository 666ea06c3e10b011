//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
)

// Backend kinds on etcd: masterjob's etcd store, and etcd's own election
// (bench/cmd/masterjob-bench-etcd-election) as the baseline. Both run on
// one throw-away etcd server per benchmark run, with etcd's default timing
// (a minimum lease TTL of 2 s) and its data on disk in the work directory.
const (
	Etcd         = "etcd"
	EtcdElection = "etcd-election"
)

// EtcdKind is the etcd build the benchmark starts: etcdtest.Debian (the
// operating system's etcd 3.4, the default) or etcdtest.Current.
var EtcdKind = etcdtest.Debian

var etcdServer struct {
	sync.Mutex
	srv *etcdtest.Server
}

// EtcdServer returns the run's etcd server, started on first use with its
// data under dir.
func EtcdServer(dir string) (*etcdtest.Server, error) {
	etcdServer.Lock()
	defer etcdServer.Unlock()
	if etcdServer.srv != nil {
		return etcdServer.srv, nil
	}
	dir = filepath.Join(dir, "etcd-server")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	srv, err := etcdtest.StartServer(EtcdKind, dir, etcdtest.Default)
	if err != nil {
		return nil, err
	}
	etcdServer.srv = srv
	return srv, nil
}

// StopEtcd stops the run's etcd server, if one was started.
func StopEtcd() {
	etcdServer.Lock()
	defer etcdServer.Unlock()
	if etcdServer.srv != nil {
		_ = etcdServer.srv.Stop()
		etcdServer.srv = nil
	}
}

// EtcdVersion describes the run's etcd server, "" when none was started.
func EtcdVersion() string {
	etcdServer.Lock()
	defer etcdServer.Unlock()
	if etcdServer.srv == nil {
		return ""
	}
	return fmt.Sprintf("etcd %s (%s build), single node, data on disk, heartbeat 100 ms, election timeout 1 s",
		etcdServer.srv.Version, etcdServer.srv.Kind)
}

func isEtcd(kind string) bool { return kind == Etcd || kind == EtcdElection }

// etcdFresh is a fresh key prefix on the run's server.
func (b *Backend) etcdFresh(name string) (*Fresh, error) {
	srv, err := EtcdServer(b.dir)
	if err != nil {
		return nil, err
	}
	prefix := "mjbench/" + name + "-" + randomHex(4) + "/"
	return &Fresh{URL: srv.URL(prefix), Schema: prefix, b: b}, nil
}

func (f *Fresh) etcdOpen(ctx context.Context) (*etcd.Store, error) {
	return etcd.OpenURL(ctx, f.URL)
}

// etcdDrop deletes the prefix's keys.
func (f *Fresh) etcdDrop() error {
	srv, err := EtcdServer(f.b.dir)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cli.Delete(ctx, f.Schema, clientv3.WithPrefix())
	return err
}

// etcdRequests counts the requests the run's etcd server served: unary
// calls (gRPC's started counter: Range, Txn, Put, lease grants, TimeToLive,
// revokes), lease keepalives (etcd's renewal counter: one per keepalive
// request, however the client streams them) and watch streams opened.
func etcdRequests(ctx context.Context, dir string) (map[string]float64, error) {
	srv, err := EtcdServer(dir)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range []string{"Range", "Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseTimeToLive", "LeaseRevoke", "Watch"} {
		v, err := srv.Metric(ctx, "grpc_server_started_total", `grpc_method="`+m+`"`)
		if err != nil {
			return nil, err
		}
		out[m] = v
	}
	v, err := srv.Metric(ctx, "etcd_debugging_lease_renewed_total")
	if err != nil {
		return nil, err
	}
	out["LeaseKeepAlive"] = v
	return out, nil
}
