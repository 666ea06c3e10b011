package httpserver_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/masterjob/masterjob/httpserver"
)

// serveT starts a Server on a free loopback port; the test's cleanup
// closes it.
func serveT(t *testing.T, cfg httpserver.ServerConfig) *httpserver.Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	s, err := httpserver.Listen(context.Background(), "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// plainClient is a client without keep-alive, so that no connection
// outlives a test (goleak).
func plainClient(timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: timeout}
}

// slowBody opens a connection and sends the headers of a POST whose body
// never comes.
func slowBody(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "POST /api/mastercontrols/disable HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", addr); err != nil {
		t.Fatal(err)
	}
	return c
}

// closedWithin reports whether the server closed c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadByte(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// A client that withholds the body is cut once ReadTimeout passes, by the
// handler's read of the body as much as when no handler reads it.
func TestServerReadTimeout(t *testing.T) {
	f := newFixture(t)
	s := serveT(t, httpserver.ServerConfig{
		Handler: f.srv.Config.Handler,
		Limits:  httpserver.Limits{ReadTimeout: 500 * time.Millisecond},
	})
	addr := s.Addr().String()
	c := slowBody(t, addr)
	defer c.Close()
	start := time.Now()
	if !closedWithin(c, 5*time.Second) {
		t.Fatalf("a slow body was not cut within 5s (ReadTimeout 500ms)")
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("a slow body was cut after %v, want about the ReadTimeout of 500ms", d)
	}
	// Without a limit, it stays.
	s2 := serveT(t, httpserver.ServerConfig{
		Handler: f.srv.Config.Handler,
		Limits:  httpserver.Limits{ReadTimeout: -1},
	})
	c2 := slowBody(t, s2.Addr().String())
	defer c2.Close()
	if closedWithin(c2, time.Second) {
		t.Errorf("ReadTimeout -1 (no limit) cut a slow body")
	}
}

// Past MaxConns, a new connection waits until one closes.
func TestServerMaxConns(t *testing.T) {
	f := newFixture(t)
	const max = 8
	s := serveT(t, httpserver.ServerConfig{
		Handler: f.srv.Config.Handler,
		Limits:  httpserver.Limits{MaxConns: max, ReadTimeout: 1500 * time.Millisecond},
	})
	addr := s.Addr().String()
	var held []net.Conn
	for range max {
		held = append(held, slowBody(t, addr))
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// The slots are full: /healthz waits.
	if _, err := plainClient(300 * time.Millisecond).Get("http://" + addr + "/healthz"); err == nil {
		t.Fatalf("/healthz answered with %d connections open and MaxConns %d", max, max)
	}
	// Once the slow bodies are cut, it answers.
	start := time.Now()
	resp, err := plainClient(10 * time.Second).Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz after the slow bodies were cut: %v", err)
	}
	resp.Body.Close()
	t.Logf("/healthz answered %d after waiting %v for a slot", resp.StatusCode, time.Since(start).Round(time.Millisecond))
}

// A streaming handler extends its write deadline with
// http.ResponseController and outlives ReadTimeout and WriteTimeout,
// through the composition's wrappers, its context intact; one that does
// not is cut by WriteTimeout.
func TestServerStreamingDeadlines(t *testing.T) {
	const (
		timeout = 300 * time.Millisecond
		chunks  = 8
		every   = 150 * time.Millisecond // chunks x every = 1.2s, 4 x the timeouts
	)
	var cancelled atomic.Bool
	stream := func(extend bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range chunks {
				if extend {
					if err := rc.SetWriteDeadline(time.Now().Add(2 * timeout)); err != nil {
						t.Errorf("SetWriteDeadline: %v", err)
					}
				}
				if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
					return
				}
				if err := rc.Flush(); err != nil {
					t.Errorf("Flush: %v", err)
					return
				}
				select {
				case <-r.Context().Done():
					if extend {
						cancelled.Store(true)
					}
					return
				case <-time.After(every):
				}
			}
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/stream", stream(true))
	mux.Handle("/naive", stream(false))
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			// The handlers go through New's composition (its wrappers) as
			// the control API does.
			cfg := httpserver.ServerConfig{
				Handler: wrapLikeNew(mux),
				Limits:  httpserver.Limits{ReadTimeout: timeout, WriteTimeout: timeout},
			}
			client := plainClient(10 * time.Second)
			scheme := "http"
			if tlsOn {
				cert, key, pool := selfSigned(t)
				cfg.TLSCertFile, cfg.TLSKeyFile = cert, key
				client.Transport = &http.Transport{DisableKeepAlives: true, ForceAttemptHTTP2: true,
					TLSClientConfig: &tls.Config{RootCAs: pool}}
				scheme = "https"
			}
			s := serveT(t, cfg)
			cancelled.Store(false)
			get := func(path string) (string, error) {
				req, _ := http.NewRequest("GET", scheme+"://"+s.Addr().String()+"/api/mastercontrols/x"+path, nil)
				req.Header.Set("Authorization", "Bearer x") // through the throttle's wrapper
				resp, err := client.Do(req)
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return string(b), err
			}
			body, err := get("/stream")
			if err != nil || strings.Count(body, "data: ") != chunks {
				t.Errorf("extended stream: %d of %d chunks, err %v", strings.Count(body, "data: "), chunks, err)
			}
			if cancelled.Load() {
				t.Errorf("the extended stream's context was cancelled")
			}
			body, err = get("/naive")
			if err == nil && strings.Count(body, "data: ") == chunks {
				t.Errorf("a stream that does not extend its deadlines outlived WriteTimeout %v", timeout)
			}
		})
	}
}

// wrapLikeNew puts h behind the wrappers New puts around its mux, by
// routing through a composition whose API is h.
func wrapLikeNew(h http.Handler) http.Handler {
	return httpserver.New(httpserver.Config{API: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/api/mastercontrols/x")
		h.ServeHTTP(w, r)
	}), NoDashboard: true, Logger: quiet()})
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost
// and its key to files, and returns them with a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "masterjob test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// With a certificate and key the server speaks HTTPS only; bad files fail
// at start with their names.
func TestServerTLS(t *testing.T) {
	f := newFixture(t)
	cert, key, pool := selfSigned(t)
	s := serveT(t, httpserver.ServerConfig{Handler: f.srv.Config.Handler, TLSCertFile: cert, TLSKeyFile: key})
	if !s.TLS() || !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("TLS() %v, URL %q", s.TLS(), s.URL())
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("GET /healthz over TLS: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP gets no answer it could mistake for one.
	resp, err = plainClient(5 * time.Second).Get("http://" + s.Addr().String() + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatalf("plain HTTP to the TLS server: %d", resp.StatusCode)
		}
	}

	for _, tt := range []struct{ cert, key, want string }{
		{cert, "", "without a key file"},
		{"", key, "without a certificate file"},
		{filepath.Join(t.TempDir(), "missing.pem"), key, "missing.pem"},
		{key, cert, "key.pem"},
	} {
		_, err := httpserver.Listen(context.Background(), "127.0.0.1:0", httpserver.ServerConfig{TLSCertFile: tt.cert, TLSKeyFile: tt.key})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Listen(cert %q, key %q) = %v, want an error naming %q", tt.cert, tt.key, err, tt.want)
		}
	}
}

// Shutdown lets a running request finish; past its context, it cuts it
// and says so. Err is nil after either.
func TestServerShutdown(t *testing.T) {
	for _, patient := range []bool{true, false} {
		started, release := make(chan struct{}), make(chan struct{})
		s := serveT(t, httpserver.ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			_, _ = io.WriteString(w, "done")
		})})
		got := make(chan error, 1)
		go func() {
			resp, err := plainClient(10 * time.Second).Get(s.URL())
			if err == nil {
				resp.Body.Close()
			}
			got <- err
		}()
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if patient {
			go func() { time.Sleep(50 * time.Millisecond); close(release) }()
			cancel()
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		}
		err := s.Shutdown(ctx)
		cancel()
		reqErr := <-got
		switch {
		case patient && (err != nil || reqErr != nil):
			t.Errorf("graceful: Shutdown %v, request %v; want both nil", err, reqErr)
		case !patient && (err == nil || reqErr == nil):
			t.Errorf("past the deadline: Shutdown %v, request %v; want both to fail", err, reqErr)
		}
		select {
		case <-s.Done():
		default:
			t.Errorf("Done not closed after Shutdown")
		}
		if s.Err() != nil {
			t.Errorf("Err after Shutdown: %v", s.Err())
		}
		if !patient {
			close(release)
		}
	}
}
