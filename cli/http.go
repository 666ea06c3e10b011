package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/store"
)

// Environment variables of the HTTP side.
const (
	// EnvHTTPToken is the bearer token of the control API: the one `run
	// --http` and `serve` require on disable and enable when no
	// --http-token flag is given, and the one status, disable, enable and
	// history send to a --server when no --token flag is given.
	EnvHTTPToken = "MASTERJOB_HTTP_TOKEN"
	// EnvServer is the URL of a masterjob HTTP server (`run --http` or
	// `serve`) that status, disable, enable and history talk to when
	// neither --server nor --store is given.
	EnvServer = "MASTERJOB_SERVER"
)

// Timeouts of the HTTP server.
const (
	// httpShutdownTimeout bounds the graceful shutdown of the HTTP server:
	// requests still running then are cut off.
	httpShutdownTimeout   = 5 * time.Second
	httpReadHeaderTimeout = 10 * time.Second
	httpIdleTimeout       = 2 * time.Minute
)

// httpSecurityHelp states the HTTP security rule, for the help texts.
const httpSecurityHelp = `The control API's disable and enable need "Authorization: Bearer TOKEN"
when a token is set (--http-token, else $` + EnvHTTPToken + `; prefer the
environment: flags show in ps). A listener other machines can reach (any
address but 127.0.0.0/8, ::1 and localhost, including ":PORT", every
interface) refuses to start without a token (exit status 2) unless
--http-allow-insecure is given. Reads, /metrics, the probes and the
dashboard page need no token: keep the listener off untrusted networks.
`

// httpFlags are the flags of the HTTP listener of run and serve.
type httpFlags struct {
	addr          string
	token         string
	allowInsecure bool
}

// register adds --http, --http-token and --http-allow-insecure to fs.
func (f *httpFlags) register(fs *flag.FlagSet, required bool) {
	usage := "serve the control API, dashboard, metrics and probes on `ADDR` (HOST:PORT; port 0 picks a free port, logged as http_addr)"
	if required {
		usage += " (required)"
	}
	fs.StringVar(&f.addr, "http", "", usage)
	fs.StringVar(&f.token, "http-token", "", "bearer `TOKEN` the control API requires on disable and enable (default $"+EnvHTTPToken+")")
	fs.BoolVar(&f.allowInsecure, "http-allow-insecure", false, "allow --http on an address other machines can reach without a token")
}

// httpConfig is a validated HTTP listener setup.
type httpConfig struct {
	addr  string
	token string // "" when the control API is open to anyone who reaches it
	// insecure is set when other machines can reach the listener and no
	// token protects it (--http-allow-insecure).
	insecure bool
}

// warnInsecure logs a warning when other machines can change the locks
// through the listener without a token.
func (hc *httpConfig) warnInsecure(log *slog.Logger) {
	if hc.insecure {
		log.Warn("--http-allow-insecure: anyone who can reach the listener can disable and enable locks", "http", hc.addr)
	}
}

// resolve validates the HTTP flags parsed by fs. It returns nil when --http
// is not set and not required. Its errors wrap errUsage.
func (f *httpFlags) resolve(e *cmdEnv, fs *flag.FlagSet, required bool) (*httpConfig, error) {
	if !flagSet(fs, "http") {
		if required {
			return nil, usageError("missing --http ADDR")
		}
		for _, name := range []string{"http-token", "http-allow-insecure"} {
			if flagSet(fs, name) {
				return nil, usageError("--%s needs --http ADDR", name)
			}
		}
		return nil, nil
	}
	token, err := resolveToken(e, fs, "http-token", f.token)
	if err != nil {
		return nil, err
	}
	if err := checkListenAddr(f.addr, token != "", f.allowInsecure); err != nil {
		return nil, err
	}
	insecure := token == "" && controlapi.CheckListenAddr(f.addr, false, false) != nil
	return &httpConfig{addr: f.addr, token: token, insecure: insecure}, nil
}

// resolveToken returns the bearer token: flag name's value if it was set,
// else $MASTERJOB_HTTP_TOKEN, else "". Its errors wrap errUsage.
func resolveToken(e *cmdEnv, fs *flag.FlagSet, name, value string) (string, error) {
	if flagSet(fs, name) {
		if err := checkToken(value); err != nil {
			return "", usageError("--%s: %w", name, err)
		}
		return value, nil
	}
	if v, ok := e.lookupEnv(EnvHTTPToken); ok && v != "" {
		if err := checkToken(v); err != nil {
			return "", usageError("$%s: %w", EnvHTTPToken, err)
		}
		return v, nil
	}
	return "", nil
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
func apiOptions(token string, log *slog.Logger) []controlapi.Option {
	opts := []controlapi.Option{controlapi.WithLogger(log)}
	if token != "" {
		opts = append(opts, controlapi.WithToken(token))
	}
	return opts
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
	srv     *http.Server
	addr    net.Addr
	handler atomic.Pointer[http.Handler]
	log     *slog.Logger

	done     chan struct{} // closed when Serve has returned
	serveErr error         // Serve's error, set before done is closed

	shutdownOnce sync.Once
}

// listenHTTP listens on addr and serves h there until shutdown. It logs
// the address it listens on (with port 0, the port picked) as http_addr.
func listenHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (*httpServer, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &httpServer{addr: ln.Addr(), log: log, done: make(chan struct{})}
	s.setHandler(h)
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			(*s.handler.Load()).ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.done)
		s.serveErr = s.srv.Serve(ln)
	}()
	log.Info("serving HTTP", "http_addr", s.addr.String(), "url", "http://"+s.addr.String()+"/")
	return s, nil
}

// setHandler replaces the handler of the requests to come.
func (s *httpServer) setHandler(h http.Handler) { s.handler.Store(&h) }

// stopped returns a channel closed when the server has stopped serving:
// after shutdown, or by itself when its listener failed.
func (s *httpServer) stopped() <-chan struct{} { return s.done }

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
			s.log.Warn("HTTP requests still running at shutdown; closing their connections", "err", err)
			_ = s.srv.Close()
		}
		<-s.done
		if s.serveErr != nil && !errors.Is(s.serveErr, http.ErrServerClosed) {
			s.log.Error("HTTP server failed", "err", s.serveErr)
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
