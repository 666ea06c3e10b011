package etcd_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/store/etcd/etcdtest"
	"github.com/masterjob/masterjob/store/storetest"
	"github.com/masterjob/masterjob/storeurl"
)

// TestAuth: on a server with authentication, a user whose role may only
// read and write its prefix runs every call (the conformance suite),
// with its password from the URL or from ETCDCTL_PASSWORD; a wrong
// password is refused as such (not as an outage), and no message shows it.
func TestAuth(t *testing.T) {
	for _, kind := range etcdtest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			srv := etcdtest.Start(t, kind, etcdtest.Fast)
			admin := client(t, srv)
			ctx := ctxFor(t)
			const prefix = "app1/"
			steps := []func() error{
				func() error { _, err := admin.RoleAdd(ctx, "mj"); return err },
				func() error {
					_, err := admin.RoleGrantPermission(ctx, "mj", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
					return err
				},
				func() error { _, err := admin.UserAdd(ctx, "app", "s3cret-pw"); return err },
				func() error { _, err := admin.UserGrantRole(ctx, "app", "mj"); return err },
				func() error { _, err := admin.UserAdd(ctx, "root", "r00t-pw"); return err },
				func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
				func() error { _, err := admin.AuthEnable(ctx); return err },
			}
			for i, step := range steps {
				if err := step(); err != nil {
					t.Fatalf("auth set-up step %d: %v", i, err)
				}
			}
			url := "etcd://app:s3cret-pw@" + srv.Endpoint + "/?prefix=" + prefix
			st, err := storeurl.Open(ctx, url)
			if err != nil {
				t.Fatalf("open with the password in the URL: %v", err)
			}
			defer st.Close()
			if err := st.(*etcd.Store).CheckTTL(ctx, 2*time.Second); err != nil {
				t.Errorf("CheckTTL as a user of its prefix only: %v", err)
			}
			t.Setenv(etcd.EnvPassword, "s3cret-pw")
			st2, err := storeurl.Open(ctx, "etcd://app@"+srv.Endpoint+"/?prefix="+prefix)
			if err != nil {
				t.Fatalf("open with ETCDCTL_PASSWORD: %v", err)
			}
			defer st2.Close()
			got, err := st2.Acquire(ctx, holder, []string{"AUTH"}, 5*time.Second)
			if err != nil || !got[0].Acquired {
				t.Fatalf("Acquire as the user: %+v %v", got, err)
			}
			// Outside its prefix: refused, not an outage.
			t.Setenv(etcd.EnvPassword, "")
			_, err = storeurl.Open(ctx, "etcd://app:s3cret-pw@"+srv.Endpoint+"/?prefix=other/")
			if err == nil || errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("open outside the user's prefix: %v; want a permanent refusal without the password", err)
			}
			_, err = storeurl.Open(ctx, "etcd://app:wrong-pw@"+srv.Endpoint+"/?prefix="+prefix)
			if err == nil || errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), "wrong-pw") {
				t.Errorf("open with a wrong password: %v; want a permanent refusal without the password", err)
			}
			t.Logf("wrong password: %v", err)

			// Every call of the contract, as that user; root deletes records.
			root, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, Username: "root", Password: "r00t-pw",
				DialTimeout: 5 * time.Second, Logger: nopLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = root.Close() })
			storetest.Run(t, func(t *testing.T) storetest.Harness {
				sub := prefix + newPrefix()
				return storetest.Harness{
					Open: func(t *testing.T) store.Store {
						s, err := storeurl.Open(context.Background(), "etcd://app:s3cret-pw@"+srv.Endpoint+"/?history_limit=1200&prefix="+sub)
						if err != nil {
							t.Fatal(err)
						}
						return s
					},
					DeleteRecords: func(t *testing.T, locks ...string) {
						for _, l := range locks {
							if _, err := root.Delete(context.Background(), etcd.LockKeyPrefix(sub, l), clientv3.WithPrefix()); err != nil {
								t.Fatal(err)
							}
						}
					},
					HistoryLimit:     1200,
					LeaseGranularity: time.Second,
					Hints:            true,
					ControlHints:     true,
				}
			})
		})
	}
}
