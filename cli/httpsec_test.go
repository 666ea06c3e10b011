package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1, ::1 and
// localhost, and its key, to PEM files.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "masterjob cli test"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
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
	return certFile, keyFile
}

// A listener other machines can reach refuses a token shorter than 16
// bytes, naming the rule and where the token came from; a loopback one
// takes it.
func TestHTTPTokenLength(t *testing.T) {
	store := sqliteURL(t)
	for _, tt := range []struct {
		env   map[string]string
		args  []string
		wants []string
	}{
		{nil, args("serve", "--http", "0.0.0.0:0", "--store", store, "--http-token", "a"),
			[]string{"--http-token", "1 bytes", "at least 16 bytes", "other machines can reach", "openssl rand"}},
		{map[string]string{"MASTERJOB_HTTP_TOKEN": "short-token"}, args("serve", "--http", ":0", "--store", store),
			[]string{"$MASTERJOB_HTTP_TOKEN", "11 bytes", "at least 16 bytes"}},
		{nil, args("run", "--lock", "L", "--http", "[::]:0", "--http-token", "123456789012345", "--store", store, "--", "true"),
			[]string{"--http-token", "15 bytes", "at least 16 bytes"}},
	} {
		// A listener that starts (wrongly) is stopped after a while.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r := mainCtx(ctx, tt.env, tt.args...)
		cancel()
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %q", tt.args, r.code, ExitUsage, r.stderr)
		}
		for _, w := range tt.wants {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tt.args, w, r.stderr)
			}
		}
	}
	// Loopback takes a short token; 16 bytes do on every interface.
	for _, a := range [][]string{
		{"serve", "--http", "127.0.0.1:0", "--http-token", "a"},
		{"serve", "--http", "0.0.0.0:0", "--http-token", "0123456789abcdef"},
	} {
		f := newServeFlags()
		if err := f.fs.Parse(a[1:]); err != nil {
			t.Fatal(err)
		}
		if _, err := f.http.resolve(&cmdEnv{lookupEnv: envFunc(nil)}, f.fs, true); err != nil {
			t.Errorf("%v: %v", a, err)
		}
	}
}

// --http-token-reads (or its environment variable) requires the token on
// the control API's reads; the client sends it; it needs a token.
func TestHTTPTokenReads(t *testing.T) {
	const token = "reads-token-0123456789"
	store := sqliteURL(t)
	if r := mainEnv(nil, "serve", "--http", "127.0.0.1:0", "--store", store, "--http-token-reads"); r.code != ExitUsage ||
		!strings.Contains(r.stderr, "--http-token-reads needs a token") {
		t.Fatalf("--http-token-reads without a token: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := mainEnv(map[string]string{"MASTERJOB_HTTP_TOKEN_READS": "maybe"}, "serve", "--http", "127.0.0.1:0", "--store", store,
		"--http-token", token); r.code != ExitUsage || !strings.Contains(r.stderr, "MASTERJOB_HTTP_TOKEN_READS") {
		t.Fatalf("a bad $MASTERJOB_HTTP_TOKEN_READS: exit %d, stderr %q", r.code, r.stderr)
	}
	for name, start := range map[string]func() *bgMain{
		"flag": func() *bgMain {
			return startMain(t, nil, "serve", "--http", "127.0.0.1:0", "--store", store, "--http-token", token, "--http-token-reads")
		},
		"env": func() *bgMain {
			return startMain(t, map[string]string{"MASTERJOB_HTTP_TOKEN": token, "MASTERJOB_HTTP_TOKEN_READS": "true"},
				"serve", "--http", "127.0.0.1:0", "--store", store)
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := start()
			base := s.url(t)
			waitHTTP(t, base+"/readyz", 200, 10*time.Second)
			for _, path := range []string{"/api/mastercontrols", "/api/mastercontrols/history"} {
				if code, body := httpGet(t, base+path); code != http.StatusUnauthorized {
					t.Errorf("GET %s without a token: %d %s, want 401", path, code, body)
				}
			}
			if code, _ := httpGet(t, base+"/healthz"); code != 200 {
				t.Errorf("/healthz: %d", code)
			}
			if r := mainEnv(nil, "status", "--server", base); r.code != ExitFailure || !strings.Contains(r.stderr, "401") {
				t.Errorf("status without a token: exit %d, stderr %q", r.code, r.stderr)
			}
			if r := mainEnv(nil, "status", "--server", base, "--token", token); r.code != ExitOK {
				t.Errorf("status with the token: exit %d, stderr %q", r.code, r.stderr)
			}
			s.stop(t)
		})
	}
}

// waitReadyTLS polls base's /readyz over HTTPS, trusting certFile, until
// the server has opened its store: until then the API answers 503.
func waitReadyTLS(t *testing.T, base, certFile string, within time.Duration) {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(within)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s/readyz over TLS: not ready within %v (last: %v)", base, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --http-tls-cert and --http-tls-key serve HTTPS; the client trusts the
// certificate with --ca-file (or its environment variable), and refuses it
// without; bad TLS flags are usage errors.
func TestHTTPTLS(t *testing.T) {
	const token = "tls-token-0123456789"
	cert, key := writeSelfSigned(t)
	store := sqliteURL(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args("serve", "--http", "127.0.0.1:0", "--store", store, "--http-tls-cert", cert), "--http-tls-cert needs --http-tls-key"},
		{args("serve", "--http", "127.0.0.1:0", "--store", store, "--http-tls-key", key), "--http-tls-key needs --http-tls-cert"},
		{args("serve", "--http", "127.0.0.1:0", "--store", store, "--http-tls-cert", key, "--http-tls-key", cert), "--http-tls-cert"},
		{args("run", "--lock", "L", "--store", store, "--http-tls-cert", cert, "--http-tls-key", key, "--", "true"), "--http-tls-cert needs --http ADDR"},
	} {
		if r := mainEnv(nil, tt.args...); r.code != ExitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want %d and %q", tt.args, r.code, r.stderr, ExitUsage, tt.want)
		}
	}

	s := startMain(t, map[string]string{"MASTERJOB_HTTP_TOKEN": token}, "serve", "--http", "127.0.0.1:0", "--store", store,
		"--http-tls-cert", cert, "--http-tls-key", key)
	base := "https://" + strings.TrimPrefix(s.url(t), "http://")
	if logs := s.stderr.String(); !strings.Contains(logs, "url=https://") {
		t.Errorf("the listen URL is not logged as https:\n%s", logs)
	}
	waitReadyTLS(t, base, cert, 10*time.Second)
	env := map[string]string{"MASTERJOB_HTTP_TOKEN": token}
	if r := mainEnv(env, "status", "--server", base); r.code != ExitFailure || !strings.Contains(r.stderr, "certificate") ||
		!strings.Contains(r.stderr, "--ca-file") {
		t.Errorf("status over TLS without the CA: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := mainEnv(env, "disable", "--server", base, "--ca-file", cert, "--lock", "L", "--reason", "over TLS"); r.code != ExitOK {
		t.Errorf("disable over TLS with --ca-file: exit %d, stderr %q", r.code, r.stderr)
	}
	env["MASTERJOB_CA_FILE"] = cert
	if r := mainEnv(env, "status", "--server", base, "L"); r.code != ExitOK || !strings.Contains(r.stdout, "over TLS") {
		t.Errorf("status over TLS with $MASTERJOB_CA_FILE: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := mainEnv(env, "status", "--server", base, "--ca-file", key); r.code != ExitUsage || !strings.Contains(r.stderr, "no PEM certificate") {
		t.Errorf("--ca-file of a key: exit %d, stderr %q", r.code, r.stderr)
	}
	// Plain HTTP to the TLS listener gets no answer.
	if resp, err := testClient.Get(s.url(t) + "/api/mastercontrols"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP to the TLS listener answered 200")
		}
	}
	s.stop(t)
}

// nonLoopbackIP returns an address of this machine other than loopback.
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				return ipn.IP.String()
			}
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("no non-loopback IPv4 address on this machine (%v)", err)
	}
	t.Skipf("no non-loopback IPv4 address on this machine (%v)", err)
	return ""
}

// The client does not send a token over plain http:// to another machine
// unless told --insecure; without a token, or to loopback, it goes.
func TestClientRefusesCleartextToken(t *testing.T) {
	var gotToken string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotToken = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"locks":[]}`))
	}))
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	remote := "http://" + net.JoinHostPort(nonLoopbackIP(t), port)
	env := map[string]string{"MASTERJOB_HTTP_TOKEN": "cleartext-token-0123"}

	r := mainEnv(env, "status", "--server", remote)
	if r.code != ExitUsage || !strings.Contains(r.stderr, "refusing to send the token over plain http://") ||
		!strings.Contains(r.stderr, "--insecure") || gotToken != "" {
		t.Fatalf("token over http:// to %s: exit %d, stderr %q, server saw %q", remote, r.code, r.stderr, gotToken)
	}
	if r := mainEnv(env, "status", "--server", remote, "--insecure"); r.code != ExitOK || gotToken == "" {
		t.Errorf("--insecure: exit %d, stderr %q, server saw %q", r.code, r.stderr, gotToken)
	}
	gotToken = ""
	if r := mainEnv(nil, "status", "--server", remote); r.code != ExitOK || gotToken != "" {
		t.Errorf("no token: exit %d, stderr %q", r.code, r.stderr)
	}
	local := "http://127.0.0.1:" + port
	if r := mainEnv(env, "status", "--server", local); r.code != ExitOK || gotToken == "" {
		t.Errorf("token to loopback: exit %d, stderr %q", r.code, r.stderr)
	}
}

// serve answers an address that keeps sending wrong tokens with 429 once
// its budget is spent: at most 10 tokens checked at once, one a second
// after that.
func TestServeThrottlesWrongTokens(t *testing.T) {
	s := startMain(t, map[string]string{"MASTERJOB_HTTP_TOKEN": "throttle-token-0123456789"},
		"serve", "--http", "127.0.0.1:0", "--store", sqliteURL(t))
	base := s.url(t)
	waitHTTP(t, base+"/readyz", 200, 10*time.Second)
	const guesses = 300
	counts := map[int]int{}
	start := time.Now()
	for i := range guesses {
		code, _ := postJSON(t, base+"/api/mastercontrols/disable", "guess-"+strconv.Itoa(i), map[string]string{"lockName": "L", "reason": "x"})
		counts[code]++
	}
	elapsed := time.Since(start)
	allowed := 10 + int(elapsed/time.Second) + 1
	t.Logf("%d wrong tokens in %v: %d checked (401), %d refused unchecked (429): %.0f checked a second",
		guesses, elapsed.Round(time.Millisecond), counts[401], counts[429], float64(counts[401])/elapsed.Seconds())
	if counts[401] > allowed || counts[401]+counts[429] != guesses {
		t.Errorf("statuses %v: want at most %d 401s, the rest 429", counts, allowed)
	}
	s.stop(t)
}
