package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// maxResponseBytes caps the responses the client reads.
const maxResponseBytes = 16 << 20

// targetFlags are the flags that say where status, disable, enable and
// history read and write: a store, or a masterjob HTTP server.
type targetFlags struct {
	store, server, token, caFile string
	insecure                     bool
}

func (f *targetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.store, "store", "", "the store `URL` (default $"+EnvStore+", else "+storeurl.DefaultURL+"; not with --server)")
	fs.StringVar(&f.server, "server", "", "use the control API of the masterjob HTTP server at `URL` instead of the store (default $"+EnvServer+")")
	fs.StringVar(&f.token, "token", "", "bearer `TOKEN` sent to --server (default $"+EnvHTTPToken+")")
	fs.StringVar(&f.caFile, "ca-file", "", "trust only the certificate authorities in PEM `FILE` for an https:// --server (default $"+EnvCAFile+", else the system's)")
	fs.BoolVar(&f.insecure, "insecure", false, "send the token to a --server other than this machine over plain http:// (anyone on the path can read it)")
}

// targetHelp says how the target is chosen, for the help texts.
const targetHelp = `
Where it reads (and writes), first match wins: --server URL, --store URL,
$` + EnvServer + `, $` + EnvStore + `, sqlite:masterjob.db. With a server, the
control API of 'masterjob run --http' or 'masterjob serve' is used, with the
bearer token of --token, else $` + EnvHTTPToken + `. An https:// server is
checked against the system's certificate authorities, or only those of
--ca-file (else $` + EnvCAFile + `). The token is not sent over plain
http:// to a host other than this machine (127.0.0.0/8, ::1, localhost)
unless --insecure is given: exit status 2. Errors of the server are
shown with its JSON error; a request the server refused as bad (400) exits
with status 2, other server and network errors with 1.
`

// target is where a control command reads and writes: a store, or a
// server's control API when client is set.
type target struct {
	store  storeurl.URL
	client *apiClient
}

// resolve chooses the target: --server, --store, $MASTERJOB_SERVER,
// $MASTERJOB_STORE, the default store. Its errors wrap errUsage.
func (f *targetFlags) resolve(e *cmdEnv, fs *flag.FlagSet) (target, error) {
	server := f.server
	serverSet, storeSet := flagSet(fs, "server"), flagSet(fs, "store")
	switch {
	case serverSet && storeSet:
		return target{}, usageError("--server and --store exclude each other")
	case serverSet:
		if server == "" {
			return target{}, usageError("--server: empty URL")
		}
	case storeSet:
		server = ""
	default:
		server, _ = e.lookupEnv(EnvServer)
	}
	if server == "" {
		for _, name := range []string{"token", "ca-file", "insecure"} {
			if flagSet(fs, name) {
				return target{}, usageError("--%s needs --server URL (or $%s)", name, EnvServer)
			}
		}
		u, err := storeurl.Parse(storeURL(e, f.store, storeurl.DefaultURL))
		if err != nil {
			return target{}, usageError("--store: %w", err)
		}
		return target{store: u}, nil
	}
	token, _, err := resolveToken(e, fs, "token", f.token)
	if err != nil {
		return target{}, err
	}
	caFile, caSource := f.caFile, "--ca-file"
	if !flagSet(fs, "ca-file") {
		caFile, _ = e.lookupEnv(EnvCAFile)
		caSource = "$" + EnvCAFile
	}
	c, err := newAPIClient(server, token, clientTLS{caFile: caFile, caSource: caSource, insecure: f.insecure})
	if err != nil {
		return target{}, err
	}
	return target{client: c}, nil
}

// clientTLS is how the client protects the connection and the token.
type clientTLS struct {
	caFile   string // PEM certificate authorities for https://; "" for the system's
	caSource string // where caFile came from, for messages
	// insecure allows sending the token over http:// to a host other than
	// this machine.
	insecure bool
}

// apiClient calls the control API of a masterjob HTTP server.
type apiClient struct {
	base  *url.URL // scheme, host and path prefix, without a trailing slash
	token string
	hc    *http.Client
}

// newAPIClient returns a client of the server at rawURL ("http://host:port",
// a path prefix allowed; "host:port" means http). Its errors wrap errUsage.
func newAPIClient(rawURL, token string, ct clientTLS) (*apiClient, error) {
	raw := rawURL
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, usageError("--server: %w", err) // not the URL: it may hold a password
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, usageError("--server %q: want an http:// or https:// URL", rawURL)
	case u.Host == "":
		return nil, usageError("--server %q: no host", rawURL)
	case u.User != nil:
		return nil, usageError("--server: no user or password in the URL; pass the token with --token or $%s", EnvHTTPToken)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, usageError("--server %q: no query or fragment, please", rawURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if u.Scheme == "http" && token != "" && !ct.insecure && !isLoopbackHost(u.Hostname()) {
		return nil, usageError("--server %q: refusing to send the token over plain http:// to a host other than this machine: "+
			"anyone on the path could read it. Serve HTTPS (--http-tls-cert and --http-tls-key) and use https://, "+
			"or pass --insecure", rawURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if ct.caFile != "" && u.Scheme == "https" {
		pem, err := os.ReadFile(ct.caFile)
		if err != nil {
			return nil, usageError("%s: %w", ct.caSource, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageError("%s %q: no PEM certificate in the file", ct.caSource, ct.caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	hc := &http.Client{
		Transport: tr,
		// The API never redirects; following one could carry the token
		// to another scheme or host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &apiClient{base: u, token: token, hc: hc}, nil
}

// isLoopbackHost reports whether host (a name or an IP, without port) is
// this machine by the listener rule: 127.0.0.0/8, ::1 or localhost. Names
// are not resolved.
func isLoopbackHost(host string) bool {
	return isLoopbackListener(net.JoinHostPort(host, "0"))
}

// close closes the client's idle connections.
func (c *apiClient) close() { c.hc.CloseIdleConnections() }

// String returns the server's URL.
func (c *apiClient) String() string { return c.base.String() }

// apiError is an answer of the server with a status other than 2xx.
type apiError struct {
	server string
	status int
	msg    string // the server's JSON error, or the start of its body
	field  string
	hint   string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("server %s answered %d %s", e.server, e.status, http.StatusText(e.status))
	if e.msg != "" {
		s += ": " + e.msg
	}
	if e.field != "" {
		s += fmt.Sprintf(" (field %q)", e.field)
	}
	if e.hint != "" {
		s += " (" + e.hint + ")"
	}
	return s
}

// exitCode returns the exit status of a failed call: ExitUsage when the
// server refused the request as bad input, ExitFailure otherwise.
func exitCode(err error) int {
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusBadRequest {
		return ExitUsage
	}
	return ExitFailure
}

// call sends a request to path (below the base URL) with query and, when in
// is not nil, a JSON body; it decodes a 2xx answer into out.
func (c *apiClient) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("request to %s: %w", c, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "masterjob/"+version())
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return fmt.Errorf("server %s: %w (pass the certificate authority with --ca-file or $%s)", c, err, EnvCAFile)
		}
		return fmt.Errorf("server %s: %w", c, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("server %s: read the answer: %w", c, err)
	}
	if resp.StatusCode/100 != 2 {
		return c.errorOf(resp, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("server %s: %s %s answered %d with a body that is not the expected JSON: %w",
			c, method, u.Path, resp.StatusCode, err)
	}
	return nil
}

// errorOf returns the error of a non-2xx answer.
func (c *apiClient) errorOf(resp *http.Response, data []byte) error {
	e := &apiError{server: c.String(), status: resp.StatusCode}
	var je controlapi.Error
	// The server's words are escaped: they must not reach the terminal raw.
	if err := json.Unmarshal(data, &je); err == nil && je.Error != "" {
		e.msg, e.field = quoteUnprintable(je.Error), je.Field // field is printed with %q
	} else {
		e.msg = strings.TrimSpace(string(data))
		if len(e.msg) > 200 {
			e.msg = e.msg[:200] + "..."
		}
		e.msg = quoteUnprintable(e.msg)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if c.token == "" {
			e.hint = "set --token or $" + EnvHTTPToken
		} else {
			e.hint = "check --token or $" + EnvHTTPToken
		}
	case http.StatusNotFound:
		e.hint = "is " + c.String() + " a masterjob server (run --http or serve)?"
	}
	return e
}

// locks reads the named locks, or every lock, in the control API's shape.
func (c *apiClient) locks(ctx context.Context, names []string) ([]controlapi.Lock, error) {
	q := url.Values{}
	for _, n := range names {
		q.Add("lockName", n)
	}
	var list controlapi.LockList
	if err := c.call(ctx, http.MethodGet, controlapi.BasePath, q, nil, &list); err != nil {
		return nil, err
	}
	return list.Locks, nil
}

// control disables or enables a lock.
func (c *apiClient) control(ctx context.Context, disable bool, lock, reason string) (controlapi.ControlResult, error) {
	path := controlapi.BasePath + "/enable"
	if disable {
		path = controlapi.BasePath + "/disable"
	}
	var res controlapi.ControlResult
	err := c.call(ctx, http.MethodPost, path, nil, controlapi.ControlRequest{LockName: lock, Reason: reason}, &res)
	return res, err
}

// events reads the history, newest first.
func (c *apiClient) events(ctx context.Context, lock string, limit int) ([]controlapi.Event, error) {
	q := url.Values{}
	if lock != "" {
		q.Set("lockName", lock)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var page controlapi.EventPage
	if err := c.call(ctx, http.MethodGet, controlapi.BasePath+"/history", q, nil, &page); err != nil {
		return nil, err
	}
	return page.Events, nil
}

// lockStateOf turns the control API's form of a lock back into the
// store's, for disable's and enable's report. The API reports the lease of
// a master only: an expired lease shows as none.
func lockStateOf(l controlapi.Lock) store.LockState {
	s := store.LockState{
		Lock:       l.LockName,
		Holder:     l.Master,
		HolderInfo: l.HolderInfo,
		Token:      l.Token,
		AcquiredAt: l.Since,
		RenewedAt:  l.LastRenewal,
		ExpiresAt:  l.ExpiresAt,
		Revoked:    l.Revoked,
		Disabled:   l.Disabled,
		Reason:     l.Reason,
		ChangedBy:  l.ChangedBy,
		ChangedAt:  l.ChangedAt,
	}
	if l.Master != "" {
		s.TTL = max(time.Duration(l.ExpiresInMs)*time.Millisecond, time.Millisecond)
	}
	if l.Holder != nil {
		if b, err := json.Marshal(l.Holder); err == nil {
			s.HolderInfo = string(b)
		}
	}
	return s
}
