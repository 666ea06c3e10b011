// Command etcdmain is a single-node etcd server built from this module's
// go.etcd.io/etcd/server/v3 (its embed package), so that the tests run the
// current etcd beside the one the operating system ships. It takes the
// subset of etcd's flags the test helpers (package etcdtest) pass, with
// etcd's names, and runs until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	cfg := embed.NewConfig()
	fs := flag.NewFlagSet("etcdmain", flag.ExitOnError)
	fs.StringVar(&cfg.Name, "name", "default", "member name")
	fs.StringVar(&cfg.Dir, "data-dir", "", "data directory")
	clientURLs := fs.String("listen-client-urls", "http://127.0.0.1:2379", "client URLs to listen on")
	advClientURLs := fs.String("advertise-client-urls", "", "client URLs to advertise (default: the listen ones)")
	peerURLs := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URLs to listen on")
	advPeerURLs := fs.String("initial-advertise-peer-urls", "", "peer URLs to advertise (default: the listen ones)")
	metricsURLs := fs.String("listen-metrics-urls", "", "URLs to serve /metrics and /health on")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "initial cluster (default: this member alone)")
	fs.UintVar(&cfg.TickMs, "heartbeat-interval", cfg.TickMs, "heartbeat interval, ms")
	fs.UintVar(&cfg.ElectionMs, "election-timeout", cfg.ElectionMs, "election timeout, ms")
	fs.StringVar(&cfg.LogLevel, "log-level", "warn", "log level")
	_ = fs.Parse(os.Args[1:])

	var err error
	set := func(dst *[]url.URL, list string) {
		if list == "" || err != nil {
			return
		}
		*dst, err = parseURLs(list)
	}
	set(&cfg.ListenClientUrls, *clientURLs)
	set(&cfg.AdvertiseClientUrls, *clientURLs)
	set(&cfg.AdvertiseClientUrls, *advClientURLs)
	set(&cfg.ListenPeerUrls, *peerURLs)
	set(&cfg.AdvertisePeerUrls, *peerURLs)
	set(&cfg.AdvertisePeerUrls, *advPeerURLs)
	set(&cfg.ListenMetricsUrls, *metricsURLs)
	if err != nil {
		fail(err)
	}
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		fail(fmt.Errorf("not ready after 60s"))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		// A graceful close waits for clients' streams (watches,
		// keepalives), up to seconds: bound it, as etcd's own binary is
		// quick to stop. Every commit is already on disk.
		closed := make(chan struct{})
		go func() {
			e.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(time.Second):
		}
	case err := <-e.Err():
		e.Close()
		fail(err)
	}
}

func parseURLs(list string) ([]url.URL, error) {
	var out []url.URL
	for _, s := range strings.Split(list, ",") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "etcdmain:", err)
	os.Exit(1)
}
