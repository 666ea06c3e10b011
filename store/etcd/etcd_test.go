package etcd_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
	"github.com/masterjob/masterjob/store/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	servers.Lock()
	for _, s := range servers.m {
		_ = s.Stop()
	}
	servers.Unlock()
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func mkTemp() (string, error) { return os.MkdirTemp("", "masterjob-etcd-test-") }

func nopLogger() *zap.Logger { return zap.NewNop() }

// servers holds one throw-away server per etcd build for the whole test
// binary: the conformance suite's subtests share it, each under a prefix
// of its own.
var servers = struct {
	sync.Mutex
	m map[etcdtest.Kind]*etcdtest.Server
}{m: map[etcdtest.Kind]*etcdtest.Server{}}

// server returns the shared server of kind, starting it on first use (and
// skipping or failing t when it cannot be started).
func server(t *testing.T, kind etcdtest.Kind) *etcdtest.Server {
	t.Helper()
	servers.Lock()
	defer servers.Unlock()
	if s := servers.m[kind]; s != nil {
		return s
	}
	dir, err := sharedDir()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, string(kind))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := etcdtest.StartServer(kind, dir, etcdtest.Fast)
	if err != nil {
		etcdtest.Unavailable(t, "etcd ("+string(kind)+"): "+err.Error())
	}
	servers.m[kind] = s
	return s
}

var shared struct {
	once sync.Once
	dir  string
	err  error
}

func sharedDir() (string, error) {
	shared.once.Do(func() {
		shared.dir, shared.err = mkTemp()
	})
	return shared.dir, shared.err
}

func newPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "mjtest-" + hex.EncodeToString(b) + "/"
}

// client returns a client of srv closed when t ends.
func client(t *testing.T, srv *etcdtest.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// open opens a store on srv under prefix, owning its client.
func open(t *testing.T, srv *etcdtest.Server, prefix string, opts ...etcd.Option) *etcd.Store {
	t.Helper()
	return openAt(t, srv.Endpoint, prefix, opts...)
}

// openAt opens a store on the etcd at endpoint (a proxy's, say) under
// prefix, owning its client.
func openAt(t *testing.T, endpoint, prefix string, opts ...etcd.Option) *etcd.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := etcd.Open(ctx, clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second},
		append([]etcd.Option{etcd.WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

const historyLimit = 1200

func TestConformance(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			srv := server(t, kind)
			t.Logf("etcd %s (%s) at %s", srv.Version, kind, srv.Endpoint)
			storetest.Run(t, func(t *testing.T) storetest.Harness {
				prefix := newPrefix()
				admin := client(t, srv)
				t.Cleanup(func() {
					_, _ = admin.Delete(context.Background(), prefix, clientv3.WithPrefix())
				})
				return storetest.Harness{
					Open: func(t *testing.T) store.Store {
						return open(t, srv, prefix, etcd.WithHistoryLimit(historyLimit))
					},
					DeleteRecords: func(t *testing.T, locks ...string) {
						for _, l := range locks {
							if _, err := admin.Delete(context.Background(), etcd.LockKeyPrefix(prefix, l), clientv3.WithPrefix()); err != nil {
								t.Fatal(err)
							}
						}
					},
					HistoryLimit:     historyLimit,
					LeaseGranularity: time.Second,
					Hints:            true,
					ControlHints:     true,
					Server:           srv.Endpoint,
					OpenVia: func(t *testing.T, addr string) store.Store {
						return openAt(t, addr, prefix, etcd.WithHistoryLimit(historyLimit))
					},
				}
			})
		})
	}
}
