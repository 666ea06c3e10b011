package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// URL schemes this package registers with package storeurl.
const (
	// SchemeEtcd is etcd://HOST:PORT[,HOST:PORT...][?PARAMS]: plain TCP
	// unless a TLS parameter asks for TLS.
	SchemeEtcd = "etcd"
	// SchemeEtcdTLS is etcds://...: the same with TLS.
	SchemeEtcdTLS = "etcds"
)

// DefaultDialTimeout bounds the connection to etcd unless the URL's
// dial_timeout says otherwise.
const DefaultDialTimeout = 5 * time.Second

// Environment variables read by OpenURL when the URL does not set the same
// thing: etcdctl's, so that an etcd user's shell already has them.
const (
	EnvUser     = "ETCDCTL_USER"     // user, or user:password
	EnvPassword = "ETCDCTL_PASSWORD" // password
	EnvCACert   = "ETCDCTL_CACERT"   // CA bundle file: TLS
	EnvCert     = "ETCDCTL_CERT"     // client certificate file: TLS
	EnvKey      = "ETCDCTL_KEY"      // client key file
	EnvInsecure = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY"
)

// URLUsage is the form of this engine's URLs, for messages and help texts.
const URLUsage = "etcd://HOST:PORT[,HOST:PORT...]/?prefix=P (etcds:// for TLS)"

func init() {
	for _, scheme := range []string{SchemeEtcd, SchemeEtcdTLS} {
		storeurl.Register(scheme, storeurl.Engine{
			Usage: URLUsage,
			Check: func(raw string) error {
				_, err := ParseURL(raw, noEnv)
				return err
			},
			Open: func(ctx context.Context, raw string) (store.Store, error) {
				return OpenURL(ctx, raw)
			},
		})
	}
}

func noEnv(string) (string, bool) { return "", false }

// URLConfig is a parsed etcd URL: everything Open needs.
type URLConfig struct {
	Endpoints   []string
	Prefix      string
	Username    string
	Password    string
	TLS         bool
	CACert      string // file
	Cert, Key   string // files
	ServerName  string
	Insecure    bool // skip verification of the server's certificate
	DialTimeout time.Duration
	// HistoryLimit is the history retention (0: the default).
	HistoryLimit int
}

// ParseURL parses an etcd store URL:
//
//	etcd://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...][/][?PARAMS]
//	etcds://...   the same over TLS
//
// with these parameters:
//
//	prefix=P                key prefix (default masterjob/)
//	user=U, password=W      authentication (better: the environment)
//	tls=true                TLS (implied by etcds:// and by the files below)
//	cacert=F, cert=F, key=F CA bundle, client certificate and key (PEM files)
//	server_name=N           name to verify in the server's certificate
//	insecure_skip_verify=true  do not verify the server's certificate
//	dial_timeout=D          bound on connecting (default 5s; duration or ms)
//	history_limit=N         history entries kept (default 10000)
//
// What the URL leaves unset is taken from the environment through
// lookupEnv (ETCDCTL_USER, ETCDCTL_PASSWORD, ETCDCTL_CACERT, ETCDCTL_CERT,
// ETCDCTL_KEY, ETCDCTL_INSECURE_SKIP_TLS_VERIFY), when lookupEnv is not
// nil. Errors never show the password.
func ParseURL(raw string, lookupEnv func(string) (string, bool)) (URLConfig, error) {
	if lookupEnv == nil {
		lookupEnv = noEnv
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != SchemeEtcd && scheme != SchemeEtcdTLS) {
		return URLConfig{}, fmt.Errorf("etcd: %q: want etcd://HOST:PORT[,HOST:PORT...] or etcds://...", storeurl.Redact(raw))
	}
	c := URLConfig{Prefix: DefaultPrefix, TLS: scheme == SchemeEtcdTLS, DialTimeout: DefaultDialTimeout}
	authority, query, _ := strings.Cut(rest, "?")
	if i := strings.IndexByte(authority, '/'); i >= 0 {
		if path := authority[i:]; path != "/" {
			return URLConfig{}, fmt.Errorf("etcd: %q: unexpected path %q (use the prefix parameter for a key prefix)", storeurl.Redact(raw), path)
		}
		authority = authority[:i]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		user := authority[:at]
		authority = authority[at+1:]
		name, pw, hasPW := strings.Cut(user, ":")
		var err error
		if c.Username, err = url.PathUnescape(name); err != nil {
			return URLConfig{}, fmt.Errorf("etcd: %q: user name: %w", storeurl.Redact(raw), err)
		}
		if hasPW {
			if c.Password, err = url.PathUnescape(pw); err != nil {
				return URLConfig{}, fmt.Errorf("etcd: %q: the password is not properly escaped", storeurl.Redact(raw))
			}
		}
	}
	if authority == "" {
		return URLConfig{}, fmt.Errorf("etcd: %q: no host (want HOST:PORT[,HOST:PORT...])", storeurl.Redact(raw))
	}
	for _, hp := range strings.Split(authority, ",") {
		host, port, err := net.SplitHostPort(hp)
		if err != nil || host == "" {
			return URLConfig{}, fmt.Errorf("etcd: %q: endpoint %q: want HOST:PORT", storeurl.Redact(raw), hp)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return URLConfig{}, fmt.Errorf("etcd: %q: endpoint %q: port %q is not a number from 1 to 65535", storeurl.Redact(raw), hp, port)
		}
		c.Endpoints = append(c.Endpoints, hp)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return URLConfig{}, fmt.Errorf("etcd: %q: query: %w", storeurl.Redact(raw), err)
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bad := func(k, why string) error {
		return fmt.Errorf("etcd: %q: parameter %s: %s", storeurl.Redact(raw), k, why)
	}
	for _, k := range keys {
		v := q.Get(k)
		switch k {
		case "prefix":
			if err := checkPrefix(v); err != nil {
				return URLConfig{}, bad(k, err.Error())
			}
			c.Prefix = v
		case "user":
			c.Username = v
		case "password":
			c.Password = v
		case "tls", "insecure_skip_verify":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return URLConfig{}, bad(k, fmt.Sprintf("want true or false, got %q", v))
			}
			if k == "tls" {
				c.TLS = c.TLS || b
			} else {
				c.Insecure = b
			}
		case "cacert":
			c.CACert = v
		case "cert":
			c.Cert = v
		case "key":
			c.Key = v
		case "server_name":
			c.ServerName = v
		case "dial_timeout":
			d, err := parseDuration(v)
			if err != nil {
				return URLConfig{}, bad(k, err.Error())
			}
			c.DialTimeout = d
		case "history_limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return URLConfig{}, bad(k, fmt.Sprintf("want a positive number, got %q", v))
			}
			c.HistoryLimit = n
		default:
			return URLConfig{}, fmt.Errorf("etcd: %q: unknown parameter %q (known: prefix, user, password, tls, cacert, cert, key, "+
				"server_name, insecure_skip_verify, dial_timeout, history_limit)", storeurl.Redact(raw), k)
		}
	}
	// The environment fills what the URL left unset.
	if c.Username == "" {
		if v, ok := lookupEnv(EnvUser); ok && v != "" {
			name, pw, hasPW := strings.Cut(v, ":")
			c.Username = name
			if hasPW && c.Password == "" {
				c.Password = pw
			}
		}
	}
	if c.Password == "" && c.Username != "" {
		if v, ok := lookupEnv(EnvPassword); ok {
			c.Password = v
		}
	}
	for _, e := range []struct {
		name string
		dst  *string
	}{{EnvCACert, &c.CACert}, {EnvCert, &c.Cert}, {EnvKey, &c.Key}} {
		if *e.dst == "" {
			if v, ok := lookupEnv(e.name); ok {
				*e.dst = v
			}
		}
	}
	if !q.Has("insecure_skip_verify") {
		if v, ok := lookupEnv(EnvInsecure); ok && v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return URLConfig{}, fmt.Errorf("etcd: environment %s=%q: want true or false", EnvInsecure, v)
			}
			c.Insecure = b
		}
	}
	if c.CACert != "" || c.Cert != "" || c.Key != "" || c.Insecure || c.ServerName != "" {
		c.TLS = true
	}
	if (c.Cert == "") != (c.Key == "") {
		return URLConfig{}, fmt.Errorf("etcd: %q: a client certificate needs both cert and key (or %s and %s)", storeurl.Redact(raw), EnvCert, EnvKey)
	}
	if c.Password != "" && c.Username == "" {
		return URLConfig{}, fmt.Errorf("etcd: %q: a password without a user name", storeurl.Redact(raw))
	}
	return c, nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.ParseInt(v, 10, 64); nerr == nil && n <= math.MaxInt64/int64(time.Millisecond) {
		d, err = time.Duration(n)*time.Millisecond, nil
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration such as 5s or milliseconds, got %q", v)
	}
	return d, nil
}

// ClientConfig returns the etcd client configuration of c, reading its TLS
// files.
func (c URLConfig) ClientConfig() (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		Username:    c.Username,
		Password:    c.Password,
		DialTimeout: c.DialTimeout,
		// Dead connections are noticed by gRPC keepalives, not only by
		// failing calls.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if !c.TLS {
		return cfg, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.Insecure} //nolint:gosec // the user's choice, named insecure_skip_verify
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return cfg, fmt.Errorf("etcd: cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("etcd: cacert %s: no PEM certificate in it", c.CACert)
		}
		tc.RootCAs = pool
	}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return cfg, fmt.Errorf("etcd: cert %s and key %s: %w", c.Cert, c.Key, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	cfg.TLS = tc
	return cfg, nil
}

// OpenURL opens the store named by an etcd URL (see ParseURL), reading
// the environment for what the URL leaves unset. The store owns its
// client.
func OpenURL(ctx context.Context, raw string) (*Store, error) {
	c, err := ParseURL(raw, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	opts := []Option{WithPrefix(c.Prefix)}
	if c.HistoryLimit > 0 {
		opts = append(opts, WithHistoryLimit(c.HistoryLimit))
	}
	s, err := Open(ctx, cfg, opts...)
	if err != nil {
		// The client's errors can carry the endpoints, never the password;
		// make sure of it.
		if c.Password != "" && strings.Contains(err.Error(), c.Password) {
			return nil, &redactedError{msg: strings.ReplaceAll(err.Error(), c.Password, "xxxxx"), err: err}
		}
		return nil, err
	}
	return s, nil
}

// redactedError is err with a message that hides a password.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
