package etcd_test

import (
	"context"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store/etcd"
)

// It needs a server, so go test compiles it but does not run it.
func ExampleNew() {
	// The application's own client, as it already has for etcd.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"etcd-0:2379", "etcd-1:2379", "etcd-2:2379"}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	// Every key under the prefix; Close leaves the client open.
	st, err := etcd.New(cli, etcd.WithPrefix("myapp/masterjob/"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close() // then masterjob.New(st, ...)
}

// It needs a server, so go test compiles it but does not run it.
func ExampleOpenURL() {
	ctx := context.Background()
	// A client of the store's own; TLS and the password can come from
	// etcdctl's environment (ETCDCTL_CACERT, ETCDCTL_USER, ...).
	st, err := etcd.OpenURL(ctx, "etcds://etcd-0:2379,etcd-1:2379,etcd-2:2379/?prefix=myapp/masterjob/&cacert=/etc/etcd/ca.pem")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
}
