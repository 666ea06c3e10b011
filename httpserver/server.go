package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Default limits of a Server (see Limits).
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 15 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxConns          = 1024
)

// Limits bound what clients can hold of a Server. A zero field takes its
// default (the Default* constants); a negative one removes the limit.
//
// The timeouts are http.Server's: ReadHeaderTimeout bounds the reading of
// a request's headers, ReadTimeout of the whole request, body included (a
// client that sends headers and then trickles or withholds the body is
// cut when it passes), WriteTimeout the time from the end of the request's
// headers to the end of the response, IdleTimeout a keep-alive connection
// waiting for its next request.
//
// A handler that streams (server-sent events, long polls) manages its own
// deadline with http.ResponseController: SetWriteDeadline before each
// write, else WriteTimeout cuts the response. (ReadTimeout does not cut
// it: net/http lifts the read deadline once the request's body has been
// read.) Every wrapper this package puts around a handler keeps the
// http.ResponseController methods reachable (Unwrap), over HTTP/1.1 and
// HTTP/2.
//
// MaxConns caps the connections open at once: past it, new connections
// wait in the kernel's accept queue (costing the process no file
// descriptor or goroutine) until one closes.
type Limits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxConns          int
}

// withDefaults returns l with zero fields set to their defaults and
// negative ones to zero (no limit, as http.Server reads it).
func (l Limits) withDefaults() Limits {
	dur := func(d, def time.Duration) time.Duration {
		switch {
		case d == 0:
			return def
		case d < 0:
			return 0
		}
		return d
	}
	l.ReadHeaderTimeout = dur(l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	l.ReadTimeout = dur(l.ReadTimeout, DefaultReadTimeout)
	l.WriteTimeout = dur(l.WriteTimeout, DefaultWriteTimeout)
	l.IdleTimeout = dur(l.IdleTimeout, DefaultIdleTimeout)
	switch {
	case l.MaxConns == 0:
		l.MaxConns = DefaultMaxConns
	case l.MaxConns < 0:
		l.MaxConns = 0
	}
	return l
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Handler serves the requests, usually the handler New returns.
	Handler http.Handler
	// Limits bound the timeouts and connections; the zero value is the
	// defaults.
	Limits Limits
	// TLSCertFile and TLSKeyFile, both or neither, are PEM files of the
	// certificate (with its chain) and its private key: with them the
	// server speaks HTTPS only (TLS 1.2 or later, HTTP/2 offered). They
	// are read once, when the server starts: restart it to rotate them.
	TLSCertFile, TLSKeyFile string
	// Logger receives the server's own errors (TLS handshakes, malformed
	// connections), as one message, "HTTP server error", with the text in
	// "detail" (default slog.Default()).
	Logger *slog.Logger
}

// Server is an http.Server with Limits, and TLS when configured, serving
// in the background. Create it with Listen or Serve.
type Server struct {
	srv  *http.Server
	addr net.Addr
	tls  bool

	done     chan struct{} // closed when the serving goroutine has returned
	serveErr error         // set before done is closed

	shutdownOnce sync.Once
	shutdownErr  error
}

// Listen listens on addr (host:port; port 0 picks a free port) and serves
// there in the background until Shutdown or Close.
func Listen(ctx context.Context, addr string, cfg ServerConfig) (*Server, error) {
	tlsCfg, err := loadTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("httpserver: listen on %s: %w", addr, err)
	}
	return serve(ln, cfg, tlsCfg), nil
}

// Serve serves on ln in the background until Shutdown or Close, which
// close ln.
func Serve(ln net.Listener, cfg ServerConfig) (*Server, error) {
	tlsCfg, err := loadTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, err
	}
	return serve(ln, cfg, tlsCfg), nil
}

// loadTLS returns the TLS configuration of the certificate and key files,
// nil when neither is given.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "":
		return nil, fmt.Errorf("httpserver: TLS key file %q given without a certificate file", keyFile)
	case keyFile == "":
		return nil, fmt.Errorf("httpserver: TLS certificate file %q given without a key file", certFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("httpserver: TLS certificate %q and key %q: %w", certFile, keyFile, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

func serve(ln net.Listener, cfg ServerConfig, tlsCfg *tls.Config) *Server {
	lim := cfg.Limits.withDefaults()
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	handler := cfg.Handler
	if handler == nil {
		handler = http.NotFoundHandler()
	}
	s := &Server{addr: ln.Addr(), tls: tlsCfg != nil, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		TLSConfig:         tlsCfg,
		ErrorLog:          log.New(errorWriter{logger}, "", 0),
	}
	if lim.MaxConns > 0 {
		ln = newLimitListener(ln, lim.MaxConns)
	}
	go func() {
		defer close(s.done)
		if s.tls {
			s.serveErr = s.srv.ServeTLS(ln, "", "") // the certificate is in TLSConfig
		} else {
			s.serveErr = s.srv.Serve(ln)
		}
	}()
	return s
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.addr }

// URL returns the server's base URL: http:// or https:// and its address.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.addr.String()
	}
	return "http://" + s.addr.String()
}

// TLS reports whether the server speaks HTTPS.
func (s *Server) TLS() bool { return s.tls }

// Done returns a channel closed when the server has stopped serving: after
// Shutdown or Close, or by itself when its listener failed (see Err).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns why the server stopped serving, once Done is closed: nil
// after Shutdown or Close, else the listener's error.
func (s *Server) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	if errors.Is(s.serveErr, http.ErrServerClosed) {
		return nil
	}
	return s.serveErr
}

// Shutdown stops the server gracefully: it closes the listener and idle
// connections, and waits for running requests until ctx is done, then
// closes their connections. It returns ctx's error when it had to cut
// requests. Calls after the first return the first's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		<-s.done
		s.shutdownErr = err
	})
	return s.shutdownErr
}

// Close stops the server at once, closing every connection (a Shutdown
// in progress returns).
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// errorWriter turns http.Server's error log into slog records under one
// message, so that a log handler that folds repeated messages (package
// logthrottle) folds them.
type errorWriter struct{ log *slog.Logger }

func (w errorWriter) Write(p []byte) (int, error) {
	w.log.Warn("HTTP server error", "detail", strings.TrimSpace(string(p)))
	return len(p), nil
}

// limitListener caps the connections open at once: Accept waits for one
// to close.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: sync.OnceFunc(func() { <-l.sem })}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitConn gives its slot back when closed.
type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
