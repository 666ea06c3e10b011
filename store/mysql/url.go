package mysql

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

// URLSchemes are the schemes of the store URLs OpenURL accepts.
var URLSchemes = []string{"mysql", "mariadb"}

// URLUsage shows the form of a store URL, for messages.
const URLUsage = "mysql://USER:PASSWORD@HOST:PORT/DATABASE?prefix=P (or mariadb://)"

// ErrInvalidURL is returned (wrapped) by ParseURL, CheckURL and OpenURL for
// a URL they cannot use. Its messages never show the password.
var ErrInvalidURL = errors.New("store/mysql: invalid store URL")

// ParseURL turns a store URL into the driver's configuration and the
// store's options, without connecting:
//
//	mysql://USER:PASSWORD@HOST:PORT/DATABASE?PARAMS
//	mariadb://...                       the same
//	mysql://USER@/DATABASE?socket=PATH  a Unix socket
//
// HOST defaults to 127.0.0.1 and PORT to 3306; USER, PASSWORD and DATABASE
// are URL-escaped. These parameters set the store's options (each also
// spelled with a masterjob_ prefix, as in PostgreSQL URLs):
//
//	prefix=P         table name prefix, [a-z0-9_]{0,40} (WithTablePrefix)
//	call_timeout=D   bound on each store call, a Go duration or milliseconds (WithCallTimeout)
//	notify_poll=D    interval of a subscription's polls (WithNotifyPoll)
//	history_limit=N  history entries kept (WithHistoryLimit)
//	migrate=false    do not create or upgrade the tables (WithoutMigrate)
//	socket=PATH      connect through this Unix socket instead of TCP
//
// Every other parameter goes to the driver as in its DSN
// (github.com/go-sql-driver/mysql: tls=true, timeout=5s, ...; a name it
// does not know sets that session variable on each connection, e.g.
// transaction_isolation='READ-COMMITTED').
func ParseURL(raw string) (*mysqldrv.Config, []Option, error) {
	fail := func(format string, args ...any) (*mysqldrv.Config, []Option, error) {
		return nil, nil, fmt.Errorf("%w %q: %s", ErrInvalidURL, RedactURL(raw), fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, password included, and its cause can
		// quote part of it ("invalid port \":pa\" after host" for a
		// password with a "/"): show the cause only for a URL without user
		// information.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if strings.Contains(raw, "@") {
			return fail("not a URL of the form %s (escape reserved characters of the user and password with %%XX)", URLUsage)
		}
		return fail("%v", err)
	}
	if !slices.Contains(URLSchemes, strings.ToLower(u.Scheme)) {
		return fail("scheme %q is not one of %s", u.Scheme, strings.Join(URLSchemes, ", "))
	}
	if u.Opaque != "" {
		return fail("want %s", URLUsage)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return fail("query: %v", err)
	}
	var (
		opts   []Option
		socket string
		driver = url.Values{}
	)
	for _, k := range sortedKeys(q) {
		vals := q[k]
		if len(vals) > 1 {
			return fail("parameter %s given %d times", k, len(vals))
		}
		v := vals[0]
		switch strings.TrimPrefix(k, "masterjob_") {
		case "prefix":
			if !prefixRE.MatchString(v) {
				return fail("%s=%q does not match [a-z0-9_]{0,40}", k, v)
			}
			opts = append(opts, WithTablePrefix(v))
		case "call_timeout":
			d, err := parseDuration(v)
			if err != nil {
				return fail("%s: %v", k, err)
			}
			opts = append(opts, WithCallTimeout(d))
		case "notify_poll":
			d, err := parseDuration(v)
			if err != nil {
				return fail("%s: %v", k, err)
			}
			opts = append(opts, WithNotifyPoll(d))
		case "history_limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return fail("%s=%q is not a whole number of at least 1", k, v)
			}
			opts = append(opts, WithHistoryLimit(n))
		case "migrate":
			switch strings.ToLower(v) {
			case "true", "1", "yes":
			case "false", "0", "no":
				opts = append(opts, WithoutMigrate())
			default:
				return fail("%s=%q is not true or false", k, v)
			}
		case "socket":
			socket = v
		case "password":
			// The driver would send it as SET password = ..., which
			// changes the user's password.
			return fail("a password parameter: put the password in the URL's user information (USER:PASSWORD@)")
		default:
			if strings.HasPrefix(k, "masterjob_") {
				return fail("unknown parameter %q (known: prefix, call_timeout, notify_poll, history_limit, migrate, socket, "+
					"each also with a masterjob_ prefix)", k)
			}
			driver[k] = vals
		}
	}
	// The driver parses its own parameters; user, password, address and
	// database are set from the URL, so that no escaping of theirs can
	// split the DSN.
	cfg, err := mysqldrv.ParseDSN("/?" + driver.Encode())
	if err != nil {
		return fail("%v", err)
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.DBName == "" || strings.Contains(cfg.DBName, "/") {
		return fail("no database: want %s", URLUsage)
	}
	switch {
	case socket != "":
		if u.Host != "" {
			return fail("socket=%q and a host %q: give one", socket, u.Host)
		}
		cfg.Net, cfg.Addr = "unix", socket
	default:
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "127.0.0.1"
		}
		if port == "" {
			port = "3306"
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fail("port %q is not a number from 1 to 65535", port)
		}
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(host, port)
	}
	// Check the options now, so that a bad value fails here.
	if _, err := newConfig(opts); err != nil {
		return fail("%v", err)
	}
	return cfg, opts, nil
}

// CheckURL reports whether raw is a store URL that OpenURL can use,
// without connecting.
func CheckURL(raw string) error {
	_, _, err := ParseURL(raw)
	return err
}

// OpenURL opens the store named by a URL (see ParseURL), with a pool that
// the Store (a *Store) owns. With CheckURL and URLUsage it is what a
// registry of URL schemes needs:
//
//	for _, scheme := range mysql.URLSchemes {
//		storeurl.Register(scheme, storeurl.Engine{Usage: mysql.URLUsage, Check: mysql.CheckURL, Open: mysql.OpenURL})
//	}
//
// For options beyond the URL's, use ParseURL and OpenConfig.
func OpenURL(ctx context.Context, raw string) (store.Store, error) {
	return openURL(ctx, raw)
}

// openURL is OpenURL with extra options after the URL's.
func openURL(ctx context.Context, raw string, extra ...Option) (store.Store, error) {
	cfg, opts, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	s, err := OpenConfig(ctx, cfg, append(opts, extra...)...)
	if err != nil {
		// The driver's and the store's errors do not include the password.
		return nil, fmt.Errorf("store/mysql: open %s: %w", RedactURL(raw), err)
	}
	return s, nil
}

// RedactURL returns raw with its password replaced by "xxxxx", for
// messages and logs: the password of the user information, and the value
// of every query parameter whose name contains "password". A URL that does
// not parse, or the opaque form scheme:user:password@host, loses
// everything before its last "@".
func RedactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, ":")
	at := strings.LastIndexByte(rest, '@')
	u, err := url.Parse(raw)
	switch {
	case !ok:
		return raw
	case err != nil || u.Opaque != "":
		if at >= 0 {
			sep := ":"
			if strings.HasPrefix(rest, "//") {
				sep = "://"
			}
			return scheme + sep + "xxxxx" + rest[at:]
		}
		return raw
	}
	q := u.Query()
	changed := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q[k] = []string{"xxxxx"}
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

func sortedKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// parseDuration reads a Go duration ("5s") or a number of milliseconds, as
// the configuration does.
func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.ParseInt(v, 10, 64); nerr == nil && n <= math.MaxInt64/int64(time.Millisecond) {
		d, err = time.Duration(n)*time.Millisecond, nil
	}
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 5s or milliseconds, got %q", v)
	}
	if d < time.Millisecond {
		return 0, fmt.Errorf("%q is less than a millisecond", v)
	}
	return d, nil
}
