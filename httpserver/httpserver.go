// Package httpserver composes masterjob's HTTP endpoints into one handler,
// the one `masterjob run --http` and `masterjob serve --http` listen with:
//
//	/api/mastercontrols, /api/mastercontrols/...   the control API (package controlapi)
//	/api/instances                                 the control API's member list
//	/metrics                                       Prometheus metrics (promhttp)
//	/healthz                                       liveness (package health)
//	/readyz                                        readiness (package health)
//	/                                              the dashboard (package dashboard)
//
// A typical composition, for an instance that runs an executor:
//
//	reg := prometheus.NewRegistry()
//	obs, _ := prom.NewObserver(reg)
//	ex, _ := masterjob.New(st, masterjob.WithObserver(obs))
//	apiSt, _ := sqlite.Open(path) // the API's own handle on the same database
//	api, _ := controlapi.New(apiSt, controlapi.WithToken(token))
//	h := httpserver.New(httpserver.Config{
//		API:      api,
//		Gatherer: reg,
//		Ready:    func(context.Context) error { return ex.Ready() },
//	})
//
// and, for a node that runs no executor, Ready: health.StorePing(st). The
// control API gets a store handle of its own, so that its requests never
// hold the connections the executor's renewals need.
//
// Listen (or Serve) serves such a handler with the limits the CLI uses:
// read, write and idle timeouts, a cap on open connections (Limits), and
// HTTPS when given a certificate and key:
//
//	srv, err := httpserver.Listen(ctx, addr, httpserver.ServerConfig{
//		Handler:     h,
//		TLSCertFile: "/etc/masterjob/tls.crt",
//		TLSKeyFile:  "/etc/masterjob/tls.key",
//	})
//	...
//	defer srv.Shutdown(context.Background())
//
// Only the control API checks a bearer token (and only if it was given
// one). Without a token, the API and the dashboard page answer only
// requests addressed to a loopback host or localhost
// (controlapi.Handler.HostAllowed), against DNS rebinding. New's handler
// throttles addresses that keep sending wrong tokens (AuthThrottle).
// /metrics, /healthz, /readyz and the dashboard page answer anyone who can
// reach the listener; the page holds no data, it reads everything through
// the control API. /metrics does show lock names: keep the listener off
// untrusted networks, as controlapi.CheckListenAddr asks.
package httpserver

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/dashboard"
	"github.com/masterjob/masterjob/health"
)

// Paths served by New, besides controlapi.BasePath and the dashboard at "/".
const (
	MetricsPath = "/metrics"
	LivePath    = "/healthz"
	ReadyPath   = "/readyz"
)

// Config holds the pieces New composes. Every field is optional: a
// missing piece is not served (its paths answer 404), except the probes,
// which are always served.
type Config struct {
	// API is the control API (controlapi.New), served at
	// controlapi.BasePath and below. The dashboard is served only with it.
	API http.Handler
	// Gatherer is the source of /metrics, usually the prometheus.Registry
	// that prom.NewObserver registered with.
	Gatherer prometheus.Gatherer
	// MetricsOptions configures the /metrics handler (promhttp.HandlerFor).
	// The zero value is fine.
	MetricsOptions promhttp.HandlerOpts
	// Ready is the readiness check of /readyz: for an instance that runs
	// an executor, a func calling Executor.Ready; for one that does not,
	// health.StorePing. Nil: ready whenever the process serves.
	Ready func(ctx context.Context) error
	// ReadyOptions configure /readyz (health.WithTimeout, WithLogger, ...).
	ReadyOptions []health.Option
	// Dashboard configures the page at "/" (dashboard.WithTitle, ...).
	Dashboard []dashboard.Option
	// NoDashboard leaves the page out: "/" answers 404.
	NoDashboard bool
	// AuthThrottle slows down addresses that keep sending wrong tokens
	// (see AuthThrottle); the zero value is the defaults.
	AuthThrottle AuthThrottle
	// Logger receives what the composition itself logs: addresses
	// throttled for wrong tokens (default slog.Default()).
	Logger *slog.Logger
}

// New returns a handler that serves cfg's pieces on one ServeMux.
func New(cfg Config) http.Handler {
	mux := http.NewServeMux()
	if cfg.API != nil {
		// Both: a ServeMux would redirect the bare path to the subtree.
		mux.Handle(controlapi.BasePath, cfg.API)
		mux.Handle(controlapi.BasePath+"/", cfg.API)
		mux.Handle(controlapi.InstancesPath, cfg.API)
	}
	if cfg.Gatherer != nil {
		mux.Handle(MetricsPath, getOnly(promhttp.HandlerFor(cfg.Gatherer, cfg.MetricsOptions)))
	}
	mux.Handle(LivePath, health.Liveness())
	mux.Handle(ReadyPath, health.Readiness(cfg.Ready, cfg.ReadyOptions...))
	if cfg.API != nil && !cfg.NoDashboard {
		opts := cfg.Dashboard
		if hc, ok := cfg.API.(hostChecker); ok {
			// The page is refused where the API's answers are.
			opts = append([]dashboard.Option{dashboard.WithHostCheck(hc.HostAllowed)}, opts...)
		}
		mux.Handle("/", dashboard.Handler(opts...))
	}
	if cfg.AuthThrottle.Disabled {
		return mux
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return newThrottle(cfg.AuthThrottle, log, mux)
}

// hostChecker is what controlapi.Handler offers: its rule for the Host
// header.
type hostChecker interface{ HostAllowed(host string) bool }

// getOnly answers 405 to methods other than GET and HEAD.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}
