package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/logthrottle"
	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store"
)

// Environment variables of the HTTP side.
const (
	// EnvHTTPToken is the bearer token of the control API: the one `run
	// --http` and `serve` require on disable and enable when no
	// --http-token flag is given, and the one status, disable, enable and
	// history send to a --server when no --token flag is given.
	EnvHTTPToken = "MASTERJOB_HTTP_TOKEN"
	// EnvHTTPTokenReads, when true (1, true, yes), makes `run --http` and
	// `serve` require the token on the control API's reads too, as
	// --http-token-reads does.
	EnvHTTPTokenReads = "MASTERJOB_HTTP_TOKEN_READS"
	// EnvServer is the URL of a masterjob HTTP server (`run --http` or
	// `serve`) that status, disable, enable and history talk to when
	// neither --server nor --store is given.
	EnvServer = "MASTERJOB_SERVER"
	// EnvCAFile is the PEM file of the certificate authorities that
	// status, disable, enable and history trust for an https:// --server
	// when no --ca-file flag is given.
	EnvCAFile = "MASTERJOB_CA_FILE"
)

// minRemoteTokenLen is the shortest token a listener other machines can
// reach accepts.
const minRemoteTokenLen = 16

// httpShutdownTimeout bounds the graceful shutdown of the HTTP server:
// requests still running then are cut off.
const httpShutdownTimeout = 5 * time.Second

// httpLimits are the timeouts and the connection cap of the listener: the
// zero value is httpserver's defaults (tests shorten them).
var httpLimits httpserver.Limits

// httpSecurityHelp states the HTTP security rules, for the help texts.
const httpSecurityHelp = `Security. The control API's disable and enable need "Authorization: Bearer
TOKEN" when a token is set (--http-token, else $` + EnvHTTPToken + `; prefer
the environment: flags show in ps). A listener other machines can reach
(any address but 127.0.0.0/8, ::1 and localhost, including ":PORT", every
interface) refuses to start without a token (exit status 2) unless
--http-allow-insecure is given, and refuses a token shorter than 16 bytes
(make one with: openssl rand -hex 16). --http-token-reads (or
$` + EnvHTTPTokenReads + `=true) requires the token on the API's reads too:
use it when lock names, hosts, pids, addresses and reasons are not for
everyone who reaches the listener. /metrics, the probes and the dashboard
page need no token. --http-tls-cert and --http-tls-key serve HTTPS: use
them whenever the token crosses a network. An address that keeps sending
wrong tokens gets 429 for a while. Requests time out (headers 10s, whole
request 15s, response 30s) and at most 1024 connections are open at once.
`

// httpFlags are the flags of the HTTP listener of run and serve.
type httpFlags struct {
	addr            string
	token           string
	allowInsecure   bool
	tokenReads      bool
	tlsCert, tlsKey string
}

// httpFlagNames are the flags that need --http.
var httpFlagNames = []string{"http-token", "http-allow-insecure", "http-token-reads", "http-tls-cert", "http-tls-key"}

// register adds --http and the flags of its listener to fs.
func (f *httpFlags) register(fs *flag.FlagSet, required bool) {
	usage := "serve the control API, dashboard, metrics and probes on `ADDR` (HOST:PORT; port 0 picks a free port, logged as http_addr)"
	if required {
		usage += " (required)"
	}
	fs.StringVar(&f.addr, "http", "", usage)
	fs.StringVar(&f.token, "http-token", "", "bearer `TOKEN` the control API requires on disable and enable (default $"+EnvHTTPToken+"; at least 16 bytes unless the listener is loopback)")
	fs.BoolVar(&f.allowInsecure, "http-allow-insecure", false, "allow --http on an address other machines can reach without a token")
	fs.BoolVar(&f.tokenReads, "http-token-reads", false, "require the token on the control API's reads too (default $"+EnvHTTPTokenReads+")")
	fs.StringVar(&f.tlsCert, "http-tls-cert", "", "serve HTTPS with the certificate (and chain) in PEM `FILE` (with --http-tls-key)")
	fs.StringVar(&f.tlsKey, "http-tls-key", "", "the private key of --http-tls-cert, PEM `FILE`")
}

// httpConfig is a validated HTTP listener setup.
type httpConfig struct {
	addr  string
	token string // "" when the control API is open to anyone who reaches it
	// tokenReads requires the token on the API's reads too.
	tokenReads bool
	// insecure is set when other machines can reach the listener and no
	// token protects it (--http-allow-insecure).
	insecure        bool
	tlsCert, tlsKey string // both or neither
}

// warnInsecure logs a warning when other machines can change the locks
// through the listener without a token, or see the token in cleartext.
func (hc *httpConfig) warnInsecure(log *slog.Logger) {
	switch {
	case hc.insecure:
		log.Warn("--http-allow-insecure: anyone who can reach the listener can disable and enable locks", "http", hc.addr)
	case hc.token != "" && hc.tlsCert == "" && !isLoopbackListener(hc.addr):
		log.Warn("the token crosses the network in cleartext: serve HTTPS with --http-tls-cert and --http-tls-key", "http", hc.addr)
	}
}

// resolve validates the HTTP flags parsed by fs. It returns nil when --http
// is not set and not required. Its errors wrap errUsage.
func (f *httpFlags) resolve(e *cmdEnv, fs *flag.FlagSet, required bool) (*httpConfig, error) {
	if !flagSet(fs, "http") {
		if required {
			return nil, usageError("missing --http ADDR")
		}
		for _, name := range httpFlagNames {
			if flagSet(fs, name) {
				return nil, usageError("--%s needs --http ADDR", name)
			}
		}
		return nil, nil
	}
	token, source, err := resolveToken(e, fs, "http-token", f.token)
	if err != nil {
		return nil, err
	}
	if err := checkListenAddr(f.addr, token != "", f.allowInsecure); err != nil {
		return nil, err
	}
	remote := !isLoopbackListener(f.addr)
	if remote && token != "" && len(token) < minRemoteTokenLen {
		return nil, usageError("%s: the token is %d bytes long; a listener other machines can reach (--http %q) "+
			"needs a token of at least %d bytes: make one with 'openssl rand -hex 16'", source, len(token), f.addr, minRemoteTokenLen)
	}
	tokenReads, err := resolveTokenReads(e, fs, f.tokenReads)
	if err != nil {
		return nil, err
	}
	if tokenReads && token == "" {
		return nil, usageError("--http-token-reads needs a token: set --http-token or $%s", EnvHTTPToken)
	}
	if err := checkTLSFiles(fs, f.tlsCert, f.tlsKey); err != nil {
		return nil, err
	}
	return &httpConfig{
		addr: f.addr, token: token, tokenReads: tokenReads,
		insecure: token == "" && remote,
		tlsCert:  f.tlsCert, tlsKey: f.tlsKey,
	}, nil
}

// resolveTokenReads returns --http-token-reads if set, else
// $MASTERJOB_HTTP_TOKEN_READS, else false. Its errors wrap errUsage.
func resolveTokenReads(e *cmdEnv, fs *flag.FlagSet, flagValue bool) (bool, error) {
	if flagSet(fs, "http-token-reads") {
		return flagValue, nil
	}
	v, ok := e.lookupEnv(EnvHTTPTokenReads)
	if !ok || v == "" {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, usageError("$%s=%q: want true or false", EnvHTTPTokenReads, v)
}

// checkTLSFiles checks that --http-tls-cert and --http-tls-key are given
// together and hold a certificate and its key. Its errors wrap errUsage.
func checkTLSFiles(fs *flag.FlagSet, cert, key string) error {
	certSet, keySet := flagSet(fs, "http-tls-cert"), flagSet(fs, "http-tls-key")
	switch {
	case !certSet && !keySet:
		return nil
	case !keySet || key == "":
		return usageError("--http-tls-cert needs --http-tls-key FILE")
	case !certSet || cert == "":
		return usageError("--http-tls-key needs --http-tls-cert FILE")
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		return usageError("--http-tls-cert %q, --http-tls-key %q: %w", cert, key, err)
	}
	return nil
}

// isLoopbackListener reports whether only this machine can reach addr.
func isLoopbackListener(addr string) bool {
	return controlapi.CheckListenAddr(addr, false, false) == nil
}

// resolveToken returns the bearer token: flag name's value if it was set,
// else $MASTERJOB_HTTP_TOKEN, else "", and where it came from ("--NAME" or
// "$MASTERJOB_HTTP_TOKEN"), for messages. Its errors wrap errUsage.
func resolveToken(e *cmdEnv, fs *flag.FlagSet, name, value string) (token, source string, err error) {
	if flagSet(fs, name) {
		if err := checkToken(value); err != nil {
			return "", "", usageError("--%s: %w", name, err)
		}
		return value, "--" + name, nil
	}
	if v, ok := e.lookupEnv(EnvHTTPToken); ok && v != "" {
		if err := checkToken(v); err != nil {
			return "", "", usageError("$%s: %w", EnvHTTPToken, err)
		}
		return v, "$" + EnvHTTPToken, nil
	}
	return "", "", nil
}

// checkToken applies controlapi's rule for tokens (WithToken): non-empty
// printable ASCII without spaces, which also makes it a valid header value.
func checkToken(t string) error {
	if t == "" {
		return errors.New("empty token")
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return errors.New("want printable ASCII without spaces")
		}
	}
	return nil
}

// checkListenAddr validates the --http address and applies the security
// rule of controlapi.CheckListenAddr. Its errors wrap errUsage and name the
// flags that fix them.
func checkListenAddr(addr string, tokenSet, allowInsecure bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return usageError("--http %q: %w; want HOST:PORT such as 127.0.0.1:8080", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return usageError("--http %q: bad port %q", addr, port)
	}
	err = controlapi.CheckListenAddr(addr, tokenSet, allowInsecure)
	switch {
	case errors.Is(err, controlapi.ErrInsecureListener):
		return usageError("--http %q: other machines can reach this address and no token protects the control API: "+
			"set --http-token (or $%s), listen on a loopback address such as 127.0.0.1:PORT, "+
			"or pass --http-allow-insecure to serve without a token", addr, EnvHTTPToken)
	case err != nil:
		return usageError("--http: %w", err)
	}
	return nil
}

// apiOptions returns the options of the control API the CLI serves.
func apiOptions(hc *httpConfig, log *slog.Logger) []controlapi.Option {
	opts := []controlapi.Option{controlapi.WithLogger(log)}
	if hc.token != "" {
		opts = append(opts, controlapi.WithToken(hc.token))
		if hc.tokenReads {
			opts = append(opts, controlapi.WithTokenForReads())
		}
	}
	return opts
}

// throttleLog wraps the CLI's log handler so that lines a remote client or
// a store outage can repeat at will (refused requests, failed store
// calls, HTTP server errors, retries) cost at most a few lines and a
// summary per window, per kind of line (and per lock).
func throttleLog(h slog.Handler) slog.Handler {
	return logthrottle.New(h, logthrottle.Options{KeyAttrs: []string{"lock"}})
}

// flushLog logs the summaries of the lines log's handler is still
// holding back, at exit.
func flushLog(log *slog.Logger) {
	if h, ok := log.Handler().(*logthrottle.Handler); ok {
		h.Flush(context.Background())
	}
}

// registerStoreMetrics adds the store's view of every lock
// (masterjob_lock_*) to reg, read at scrape time.
func registerStoreMetrics(reg prometheus.Registerer, st store.Store) error {
	col, err := prom.NewStoreCollector(st)
	if err != nil {
		return err
	}
	if err := reg.Register(col); err != nil {
		return fmt.Errorf("register the store's metrics: %w", err)
	}
	return nil
}

// newRegistry returns a registry of its own, with the Go runtime and
// process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// errStarting is the readiness of a process whose store is not open yet.
var errStarting = fmt.Errorf("starting: %w", store.ErrUnavailable)

// startingHandler is what the listener serves until the store is open:
// metrics and probes (not ready), and 503 with a JSON error elsewhere.
func startingHandler(reg prometheus.Gatherer, log *slog.Logger) http.Handler {
	probes := httpserver.New(httpserver.Config{
		Logger:       log,
		Gatherer:     reg,
		Ready:        func(context.Context) error { return errStarting },
		ReadyOptions: []health.Option{health.WithLogger(log)},
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case httpserver.MetricsPath, httpserver.LivePath, httpserver.ReadyPath:
			probes.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "starting: the store is not open yet; try again"})
	})
}

// httpServer is the CLI's HTTP listener. Its handler can be replaced while
// it serves: it starts with startingHandler and gets the full handler once
// the store is open.
type httpServer struct {
	srv     *httpserver.Server
	addr    net.Addr
	handler atomic.Pointer[http.Handler]
	log     *slog.Logger

	shutdownOnce sync.Once
}

// listenHTTP listens on hc's address and serves h there, with httpLimits
// and TLS when configured, until shutdown. It logs the address it listens
// on (with port 0, the port picked) as http_addr.
func listenHTTP(ctx context.Context, hc *httpConfig, h http.Handler, log *slog.Logger) (*httpServer, error) {
	s := &httpServer{log: log}
	s.setHandler(h)
	srv, err := httpserver.Listen(ctx, hc.addr, httpserver.ServerConfig{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			(*s.handler.Load()).ServeHTTP(w, r)
		}),
		Limits:      httpLimits,
		TLSCertFile: hc.tlsCert,
		TLSKeyFile:  hc.tlsKey,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	s.srv, s.addr = srv, srv.Addr()
	log.Info("serving HTTP", "http_addr", s.addr.String(), "url", srv.URL()+"/", "tls", srv.TLS())
	return s, nil
}

// setHandler replaces the handler of the requests to come.
func (s *httpServer) setHandler(h http.Handler) { s.handler.Store(&h) }

// stopped returns a channel closed when the server has stopped serving:
// after shutdown, or by itself when its listener failed.
func (s *httpServer) stopped() <-chan struct{} { return s.srv.Done() }

// shutdown stops the server gracefully: no new connections, idle ones
// closed, running requests given httpShutdownTimeout to finish before
// their connections are closed. It is safe to call more than once and on
// a nil server.
func (s *httpServer) shutdown() {
	if s == nil {
		return
	}
	s.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.log.Warn("HTTP requests still running at shutdown; their connections were closed", "err", err)
		}
		if err := s.srv.Err(); err != nil {
			s.log.Error("HTTP server failed", "err", err)
		}
		s.log.Info("HTTP server stopped", "http_addr", s.addr.String())
	})
}

// advertisedAddr is the address other machines reach the listener at: the
// bound address, with this host's name for an unspecified IP.
func advertisedAddr(a net.Addr, host string) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() || host == "" {
		return a.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(ta.Port))
}
