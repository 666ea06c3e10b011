package redis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store"
)

// ErrInvalidURL is returned (wrapped) by ParseURL for a URL it cannot use.
var ErrInvalidURL = errors.New("store/redis: invalid store URL")

// The URL schemes this package opens.
const (
	SchemeRedis  = "redis"  // plain TCP
	SchemeRediss = "rediss" // TLS
)

// URL is a parsed redis:// or rediss:// store URL. Create it with ParseURL.
type URL struct {
	// Options are the go-redis client options the URL gives (address,
	// user, password, database, TLS for rediss://, and go-redis's own
	// query parameters such as dial_timeout or pool_size).
	Options *goredis.Options
	// Prefix is the key prefix (prefix=); nil for DefaultPrefix.
	Prefix *string
	// CallTimeout bounds each store call (call_timeout=); zero for
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// HistoryLimit is the history retention (history_limit=); zero for
	// store.DefaultHistoryLimit.
	HistoryLimit int
	// NoExpiryEvents is set by expiry_events=false (WithoutExpiryEvents).
	NoExpiryEvents bool

	raw string
}

// The URL parameters this package reads; every other parameter goes to
// go-redis, which refuses those it does not know.
var urlParams = []string{"prefix", "call_timeout", "history_limit", "expiry_events"}

// ParseURL parses
//
//	redis://[user:password@]host[:port][/db][?param=value&...]
//	rediss://...   the same over TLS
//
// with these parameters of masterjob's, removed before the rest reaches
// go-redis's ParseURL:
//
//	prefix=P           key prefix (WithPrefix), default "masterjob:"
//	call_timeout=D     bound on each store call, a Go duration or milliseconds
//	history_limit=N    history retention (WithHistoryLimit)
//	expiry_events=false  do not listen to expiry events (WithoutExpiryEvents)
//
// Errors wrap ErrInvalidURL and never show the password.
func ParseURL(rawURL string) (URL, error) {
	red := Redact(rawURL)
	pu, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, password included: report only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return URL{}, fmt.Errorf("%w %q: %w", ErrInvalidURL, red, err)
	}
	scheme := strings.ToLower(pu.Scheme)
	if scheme != SchemeRedis && scheme != SchemeRediss {
		return URL{}, fmt.Errorf("%w %q: scheme %q (want redis:// or rediss://)", ErrInvalidURL, red, pu.Scheme)
	}
	pu.Scheme = scheme
	u := URL{raw: rawURL}
	q, err := url.ParseQuery(pu.RawQuery)
	if err != nil {
		return URL{}, fmt.Errorf("%w %q: query: %w", ErrInvalidURL, red, err)
	}
	for _, k := range urlParams {
		if !q.Has(k) {
			continue
		}
		v := q.Get(k)
		q.Del(k)
		switch k {
		case "prefix":
			if !prefixPattern.MatchString(v) {
				return URL{}, fmt.Errorf("%w %q: prefix: %q does not match [A-Za-z0-9_:./-]{0,64}", ErrInvalidURL, red, v)
			}
			u.Prefix = &v
		case "call_timeout":
			d, err := parseDuration(v)
			if err != nil {
				return URL{}, fmt.Errorf("%w %q: call_timeout: %w", ErrInvalidURL, red, err)
			}
			u.CallTimeout = d
		case "history_limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return URL{}, fmt.Errorf("%w %q: history_limit: want a whole number of at least 1, got %q", ErrInvalidURL, red, v)
			}
			u.HistoryLimit = n
		case "expiry_events":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return URL{}, fmt.Errorf("%w %q: expiry_events: want true or false, got %q", ErrInvalidURL, red, v)
			}
			u.NoExpiryEvents = !b
		}
	}
	pu.RawQuery = q.Encode()
	opts, err := goredis.ParseURL(pu.String())
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		msg := err.Error()
		if strings.Contains(msg, "unexpected option") {
			msg += " (masterjob's own: " + strings.Join(urlParams, ", ") + ")"
		}
		return URL{}, fmt.Errorf("%w %q: %s", ErrInvalidURL, red, msg)
	}
	u.Options = opts
	return u, nil
}

// String returns the URL as given, with any password replaced by "xxxxx".
func (u URL) String() string { return Redact(u.raw) }

// StoreOptions returns the Options the URL's parameters ask for.
func (u URL) StoreOptions() []Option {
	var opts []Option
	if u.Prefix != nil {
		opts = append(opts, WithPrefix(*u.Prefix))
	}
	if u.CallTimeout > 0 {
		opts = append(opts, WithCallTimeout(u.CallTimeout))
	}
	if u.HistoryLimit > 0 {
		opts = append(opts, WithHistoryLimit(u.HistoryLimit))
	}
	if u.NoExpiryEvents {
		opts = append(opts, WithoutExpiryEvents())
	}
	return opts
}

// Open connects with a client of the store's own (ContextTimeoutEnabled
// set, so that the call timeout bounds every command) that Close closes.
// opts apply after the URL's own parameters.
func (u URL) Open(ctx context.Context, opts ...Option) (*Store, error) {
	if u.Options == nil {
		return nil, fmt.Errorf("%w: not made by ParseURL", ErrInvalidURL)
	}
	o := *u.Options
	o.ContextTimeoutEnabled = true
	client := goredis.NewClient(&o)
	s, err := newStore(ctx, client, true, append(u.StoreOptions(), opts...))
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("store/redis: open %s: %w", u, err)
	}
	return s, nil
}

// CheckURL validates rawURL without opening anything (ParseURL without
// its result), for storeurl's registry of schemes.
func CheckURL(rawURL string) error {
	_, err := ParseURL(rawURL)
	return err
}

// URLUsage is the URL form, for messages listing the supported stores.
const URLUsage = "redis://[USER:PASSWORD@]HOST:PORT/DB?prefix=P (rediss:// for TLS)"

// OpenURL opens the store a redis:// or rediss:// URL names, as
// storeurl's registry of schemes expects: ParseURL, then URL.Open.
func OpenURL(ctx context.Context, rawURL string) (store.Store, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return u.Open(ctx)
}

// Redact returns rawURL with the password of its user info, and of a
// password query parameter, replaced by "xxxxx", for messages and logs.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if scheme, _, ok := strings.Cut(rawURL, "://"); ok && strings.Contains(rawURL, "@") {
			// An unparseable URL with user info: hide everything after the
			// scheme rather than guess where the password ends.
			return scheme + "://xxxxx"
		}
		return rawURL
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// parseDuration parses a timeout: a Go duration or milliseconds, at least
// a millisecond.
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
