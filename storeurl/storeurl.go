// Package storeurl opens a masterjob store named by a URL, so that command
// line tools and configuration files can choose a backend with one string.
//
// Supported forms:
//
//	sqlite:PATH                 a SQLite file (relative or absolute path)
//	sqlite://PATH               the same; sqlite:///abs/path.db is /abs/path.db
//	postgres://USER@HOST:PORT/DB?sslmode=disable
//	postgresql://...            the same
//
// A SQLite URL takes these query parameters:
//
//	prefix=P           table name prefix, [a-z0-9_]{0,40}
//	busy_timeout=D     SQLite busy timeout, a Go duration or milliseconds
//	history_limit=N    history entries kept (default store.DefaultHistoryLimit)
//	migrate=false      do not create or upgrade the tables
//	mode=ro            open read-only: create and change nothing (see
//	                   sqlite.ReadOnly); mode=rw is the default
//
// A PostgreSQL URL takes these parameters, removed before the rest of the URL
// reaches the driver (pgx), which receives every other parameter unchanged:
//
//	schema=S           schema of the masterjob tables
//	prefix=P           table name prefix, [a-z0-9_]{0,40}
//	call_timeout=D     bound on each store call (Go duration or ms)
//	history_limit=N    history entries kept (default store.DefaultHistoryLimit)
//	migrate=false      do not create or upgrade the tables
//
// Each may also be written with a masterjob_ prefix (masterjob_prefix=P),
// as the other engines' URLs allow; a parameter given twice, in either
// form, is refused.
//
// Other engines live in modules of their own, so that their dependencies
// reach only the programs that use them, and register their schemes here
// when imported, as database/sql drivers do:
//
//	import _ "github.com/masterjob/masterjob/store/etcd" // etcd:// and etcds://
//
// The masterjob command imports every engine.
package storeurl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/postgres"
	"github.com/masterjob/masterjob/store/sqlite"
)

// DefaultURL is the store URL used when none is given: a SQLite file in the
// working directory.
const DefaultURL = "sqlite:masterjob.db"

// Sentinel errors returned (wrapped) by Parse and Open.
var (
	// ErrUnknownScheme is returned for a URL whose scheme names no supported
	// backend, or that has no scheme at all.
	ErrUnknownScheme = errors.New("storeurl: unknown store URL scheme")
	// ErrInvalidURL is returned for a URL of a known scheme that cannot be
	// used: an empty path, a malformed query or an unknown parameter.
	ErrInvalidURL = errors.New("storeurl: invalid store URL")
)

// The supported URL schemes.
const (
	SchemeSQLite     = "sqlite"
	SchemePostgres   = "postgres"
	SchemePostgreSQL = "postgresql"
)

// URL is a parsed store URL. Create it with Parse.
type URL struct {
	// Scheme is the lower-cased scheme: one of Schemes.
	Scheme string
	// Path is the SQLite file (sqlite only).
	Path string
	// DSN is the connection string handed to pgx, with the masterjob_*
	// parameters removed (postgres only).
	DSN string
	// Schema is the PostgreSQL schema, empty for the backend's default.
	Schema string
	// TablePrefix is the table name prefix; nil for the backend's default
	// ("masterjob_"). Both backends accept [a-z0-9_]{0,40}.
	TablePrefix *string
	// Timeout is the SQLite busy timeout or the PostgreSQL call timeout; zero
	// for the backend's default.
	Timeout time.Duration
	// HistoryLimit is how many history entries the store keeps (set by
	// history_limit=N); zero for the backend's default
	// (store.DefaultHistoryLimit).
	HistoryLimit int
	// NoMigrate is set by migrate=false (masterjob_migrate=false), or by
	// WithoutMigrate for any scheme: Open then creates and upgrades nothing.
	NoMigrate bool
	// ReadOnly opens the store for reading only (sqlite.ReadOnly); set by
	// mode=ro. SQLite only: Open refuses it for PostgreSQL.
	ReadOnly bool

	raw string
}

// Engine is a store backend that lives outside this module and registers
// its URL scheme with Register when its package is imported.
type Engine struct {
	// Usage shows the URL form in messages, e.g. "etcd://HOST:PORT,...".
	Usage string
	// Check validates rawURL without opening anything (Parse calls it). Its
	// errors must not show a password; they are wrapped in ErrInvalidURL.
	Check func(rawURL string) error
	// Open opens the store named by rawURL, which Check accepted.
	Open func(ctx context.Context, rawURL string) (store.Store, error)
	// OpenExisting opens it as Open does but creates and upgrades nothing
	// (no table, no schema), failing where they are absent. URL.Open calls
	// it for a URL marked WithoutMigrate. An engine whose Open creates
	// nothing that outlives the store leaves it nil.
	OpenExisting func(ctx context.Context, rawURL string) (store.Store, error)
}

// WithoutMigrate returns u marked to open the store as it is: Open then
// creates and upgrades nothing (no file, schema or table) and fails where
// they are absent, as migrate=false does. A process that only acts on a
// lease another one took, such as a runner's last will, opens its store
// this way, so that it never recreates a store removed meanwhile.
func (u URL) WithoutMigrate() URL {
	u.NoMigrate = true
	return u
}

var (
	enginesMu sync.RWMutex
	engines   = map[string]Engine{}
)

// elsewhere names the packages that register the schemes of engines kept
// out of this module, for the message about a scheme nobody registered.
var elsewhere = map[string]string{
	"etcd":    "github.com/masterjob/masterjob/store/etcd",
	"etcds":   "github.com/masterjob/masterjob/store/etcd",
	"redis":   "github.com/masterjob/masterjob/store/redis",
	"rediss":  "github.com/masterjob/masterjob/store/redis",
	"mysql":   "github.com/masterjob/masterjob/store/mysql",
	"mariadb": "github.com/masterjob/masterjob/store/mysql",
}

// Register makes the engine e open URLs of scheme (lower case). It is
// meant for the init functions of engine packages, and panics if the
// scheme is built in or registered twice, or if e lacks Check or Open.
func Register(scheme string, e Engine) {
	scheme = strings.ToLower(scheme)
	enginesMu.Lock()
	defer enginesMu.Unlock()
	switch {
	case scheme == SchemeSQLite || scheme == SchemePostgres || scheme == SchemePostgreSQL:
		panic("storeurl: Register of built-in scheme " + scheme)
	case engines[scheme].Open != nil:
		panic("storeurl: Register called twice for scheme " + scheme)
	case e.Check == nil || e.Open == nil:
		panic("storeurl: Register of scheme " + scheme + " without Check or Open")
	}
	engines[scheme] = e
}

func engine(scheme string) (Engine, bool) {
	enginesMu.RLock()
	defer enginesMu.RUnlock()
	e, ok := engines[scheme]
	return e, ok
}

// Parse checks rawURL without opening anything. Errors wrap ErrUnknownScheme
// or ErrInvalidURL.
func Parse(rawURL string) (URL, error) {
	scheme, rest, ok := splitScheme(rawURL)
	if !ok {
		return URL{}, fmt.Errorf("%w: %q has no scheme (supported: %s)",
			ErrUnknownScheme, redact(rawURL), supported())
	}
	switch scheme {
	case SchemeSQLite:
		return parseSQLite(rawURL, rest)
	case SchemePostgres, SchemePostgreSQL:
		return parsePostgres(rawURL, scheme)
	}
	if e, ok := engine(scheme); ok {
		if err := e.Check(rawURL); err != nil {
			return URL{}, fmt.Errorf("%w %q: %w", ErrInvalidURL, redact(rawURL), err)
		}
		return URL{Scheme: scheme, raw: rawURL}, nil
	}
	if pkg, ok := elsewhere[scheme]; ok {
		return URL{}, fmt.Errorf("%w %q in %q: this program was built without that engine "+
			"(a Go program needs the blank import _ %q; the masterjob command has it unless built with -tags %s); this one can open: %s",
			ErrUnknownScheme, scheme, redact(rawURL), pkg, "masterjob_no"+path.Base(pkg), supported())
	}
	return URL{}, fmt.Errorf("%w %q in %q (supported: %s)",
		ErrUnknownScheme, scheme, redact(rawURL), supported())
}

// Open opens the store named by rawURL. It is Parse followed by URL.Open.
func Open(ctx context.Context, rawURL string) (store.Store, error) {
	u, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	return u.Open(ctx)
}

// Open opens the store. The caller closes it.
func (u URL) Open(ctx context.Context) (store.Store, error) {
	switch u.Scheme {
	case SchemeSQLite:
		var opts []sqlite.Option
		if u.TablePrefix != nil {
			opts = append(opts, sqlite.WithTablePrefix(*u.TablePrefix))
		}
		if u.Timeout > 0 {
			opts = append(opts, sqlite.WithBusyTimeout(u.Timeout))
		}
		if u.HistoryLimit > 0 {
			opts = append(opts, sqlite.WithHistoryLimit(u.HistoryLimit))
		}
		if u.NoMigrate {
			opts = append(opts, sqlite.WithoutMigrate())
		}
		if u.ReadOnly {
			opts = append(opts, sqlite.ReadOnly())
		}
		st, err := sqlite.Open(u.Path, opts...)
		if err != nil {
			return nil, fmt.Errorf("storeurl: open %s: %w", u, err)
		}
		return st, nil
	case SchemePostgres, SchemePostgreSQL:
		if u.ReadOnly {
			return nil, fmt.Errorf("%w %s: read-only opening is supported for sqlite: URLs only", ErrInvalidURL, u)
		}
		var opts []postgres.Option
		if u.Schema != "" {
			opts = append(opts, postgres.WithSchema(u.Schema))
		}
		if u.TablePrefix != nil {
			opts = append(opts, postgres.WithTablePrefix(*u.TablePrefix))
		}
		if u.Timeout > 0 {
			opts = append(opts, postgres.WithCallTimeout(u.Timeout))
		}
		if u.HistoryLimit > 0 {
			opts = append(opts, postgres.WithHistoryLimit(u.HistoryLimit))
		}
		if u.NoMigrate {
			opts = append(opts, postgres.WithoutMigrate())
		}
		st, err := postgres.Open(ctx, u.DSN, opts...)
		if err != nil {
			return nil, fmt.Errorf("storeurl: open %s: %w", u, err)
		}
		return st, nil
	}
	e, ok := engine(u.Scheme)
	if !ok {
		return nil, fmt.Errorf("%w %q (supported: %s)", ErrUnknownScheme, u.Scheme, supported())
	}
	if u.ReadOnly {
		return nil, fmt.Errorf("%w %s: read-only opening is supported for sqlite: URLs only", ErrInvalidURL, u)
	}
	open := e.Open
	if u.NoMigrate && e.OpenExisting != nil {
		open = e.OpenExisting
	}
	st, err := open(ctx, u.raw)
	if err != nil {
		return nil, fmt.Errorf("storeurl: open %s: %w", u, err)
	}
	return st, nil
}

// String returns the URL as given, with any password replaced by "xxxxx", for
// logs and error messages.
func (u URL) String() string { return redact(u.raw) }

// Unredacted returns the URL as given, password included: for handing to
// another process of this program that opens the same store, never for a
// log or a message.
func (u URL) Unredacted() string { return u.raw }

func supported() string {
	forms := []string{"sqlite:PATH", "postgres://...", "postgresql://..."}
	return strings.Join(append(forms, EngineUsages()...), ", ")
}

// EngineUsages returns the URL forms of the engines registered with
// Register (Engine.Usage, else SCHEME://...), sorted, each once: engines
// that register several schemes (mysql and mariadb, redis and rediss) give
// each the same form.
func EngineUsages() []string {
	enginesMu.RLock()
	defer enginesMu.RUnlock()
	var forms []string
	for scheme, e := range engines {
		if e.Usage != "" {
			forms = append(forms, e.Usage)
		} else {
			forms = append(forms, scheme+"://...")
		}
	}
	sort.Strings(forms)
	return slices.Compact(forms)
}

// Schemes returns the URL schemes this program can open: the built-in
// ones and those registered, sorted.
func Schemes() []string {
	out := []string{SchemePostgres, SchemePostgreSQL, SchemeSQLite}
	enginesMu.RLock()
	for s := range engines {
		out = append(out, s)
	}
	enginesMu.RUnlock()
	sort.Strings(out)
	return out
}

// splitScheme splits "scheme:rest" following RFC 3986's scheme syntax and
// lower-cases the scheme.
func splitScheme(raw string) (scheme, rest string, ok bool) {
	i := strings.IndexByte(raw, ':')
	if i <= 0 {
		return "", "", false
	}
	for j := 0; j < i; j++ {
		c := raw[j]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case j > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", "", false
		}
	}
	return strings.ToLower(raw[:i]), raw[i+1:], true
}

func parseSQLite(raw, rest string) (URL, error) {
	u := URL{Scheme: SchemeSQLite, raw: raw}
	path, query, _ := strings.Cut(rest, "?")
	path = strings.TrimPrefix(path, "//")
	if path == "" {
		return URL{}, fmt.Errorf("%w %q: no file path (want sqlite:PATH)", ErrInvalidURL, redact(raw))
	}
	u.Path = path
	q, err := url.ParseQuery(query)
	if err != nil {
		return URL{}, fmt.Errorf("%w %q: query: %w", ErrInvalidURL, redact(raw), err)
	}
	if err := u.setParams(q, sqliteParams, true); err != nil {
		return URL{}, err
	}
	return u, nil
}

// sqliteParams are the parameters of a SQLite URL.
var sqliteParams = []string{"prefix", "busy_timeout", "history_limit", "migrate", "mode"}

// postgresParams are the parameters of a PostgreSQL URL that are
// masterjob's, not the driver's. The names other engines' URLs use
// (prefix=, call_timeout=, ...) work here too: no PostgreSQL setting has
// one of them, and the server would refuse the connection over one.
var postgresParams = []string{"schema", "prefix", "call_timeout", "history_limit", "migrate"}

// setParams sets u's fields from the parameters of q named in known, each
// also with a masterjob_ prefix, and removes them from q. It refuses a
// parameter given twice, also once in each form (prefix= and
// masterjob_prefix=), and any other parameter with the masterjob_ prefix;
// the others too when refuseOthers, else it leaves them in q.
func (u *URL) setParams(q url.Values, known []string, refuseOthers bool) error {
	seen := map[string]string{}
	for _, k := range sortedKeys(q) {
		name := strings.TrimPrefix(k, "masterjob_")
		switch other, dup := seen[name]; {
		case !slices.Contains(known, name) && !refuseOthers && name == k:
			continue // the driver's
		case !slices.Contains(known, name):
			return fmt.Errorf("%w %q: unknown parameter %q (known: %s, each also with a masterjob_ prefix)",
				ErrInvalidURL, redact(u.raw), k, strings.Join(known, ", "))
		case len(q[k]) > 1:
			return fmt.Errorf("%w %q: parameter %s given %d times", ErrInvalidURL, redact(u.raw), k, len(q[k]))
		case dup:
			return fmt.Errorf("%w %q: parameters %s and %s are the same: give one", ErrInvalidURL, redact(u.raw), other, k)
		}
		seen[name] = k
		if err := u.set(name, q.Get(k)); err != nil {
			return fmt.Errorf("%w %q: %s: %w", ErrInvalidURL, redact(u.raw), k, err)
		}
		q.Del(k)
	}
	return nil
}

// set sets the field of u that parameter name (without its masterjob_
// prefix) names to v.
func (u *URL) set(name, v string) (err error) {
	switch name {
	case "prefix":
		if err = checkPrefix(v); err == nil {
			u.TablePrefix = &v
		}
	case "schema":
		if err = checkSchema(v); err == nil {
			u.Schema = v
		}
	case "busy_timeout", "call_timeout":
		u.Timeout, err = parseDuration(v)
	case "history_limit":
		u.HistoryLimit, err = parseHistoryLimit(v)
	case "migrate":
		u.NoMigrate, err = parseNoMigrate(v)
	case "mode":
		switch v {
		case "ro":
			u.ReadOnly = true
		case "rw":
		default:
			err = fmt.Errorf("want ro or rw, got %q", v)
		}
	default:
		err = fmt.Errorf("not a parameter of %s URLs", u.Scheme)
	}
	return err
}

func parsePostgres(raw, scheme string) (URL, error) {
	pu, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, password included: report only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return URL{}, fmt.Errorf("%w %q: %w", ErrInvalidURL, redact(raw), err)
	}
	u := URL{Scheme: scheme, raw: raw}
	q, err := url.ParseQuery(pu.RawQuery)
	if err != nil {
		return URL{}, fmt.Errorf("%w %q: query: %w", ErrInvalidURL, redact(raw), err)
	}
	if err := u.setParams(q, postgresParams, false); err != nil {
		return URL{}, err
	}
	pu.RawQuery = q.Encode()
	u.DSN = pu.String()
	if _, err := pgxpool.ParseConfig(u.DSN); err != nil {
		// pgx's parse errors can quote the connection string: keep only a
		// redacted form of it in the message.
		return URL{}, fmt.Errorf("%w %q: %s", ErrInvalidURL, redact(raw), pgxParseReason(err, u.DSN))
	}
	return u, nil
}

// pgxParseReason extracts the cause from a pgx ParseConfig error of dsn
// without the connection string it quotes ("cannot parse `DSN`: why"). The
// cause may quote a piece of dsn too (`missing "=" after "postgres:u:pw"`,
// when a URL without "//" is read as keyword/value settings): every quoted
// piece of dsn but "=" is shown as "…".
func pgxParseReason(err error, dsn string) string {
	msg := err.Error()
	i := strings.LastIndex(msg, "`: ")
	if i < 0 {
		return "cannot parse connection string"
	}
	return quotedPiece.ReplaceAllStringFunc(msg[i+3:], func(q string) string {
		if piece, err := strconv.Unquote(q); err == nil && (piece == "=" || !strings.Contains(dsn, piece)) {
			return q
		}
		return `"…"`
	})
}

// quotedPiece matches a double-quoted Go string in pgx's messages.
var quotedPiece = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// prefixPattern is the table prefix both backends accept.
var prefixPattern = regexp.MustCompile(`^[a-z0-9_]{0,40}$`)

func checkPrefix(p string) error {
	if !prefixPattern.MatchString(p) {
		return fmt.Errorf("%q does not match [a-z0-9_]{0,40}", p)
	}
	return nil
}

// maxIdentifierLen is PostgreSQL's limit on identifiers, in bytes.
const maxIdentifierLen = 63

func checkSchema(s string) error {
	switch {
	case s == "":
		return errors.New("empty schema name")
	case len(s) > maxIdentifierLen:
		return fmt.Errorf("%q is longer than %d bytes", s, maxIdentifierLen)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return fmt.Errorf("%q is not valid UTF-8 without NUL bytes", s)
	}
	return nil
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

// parseHistoryLimit parses how many history entries the store keeps.
func parseHistoryLimit(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want a whole number of at least 1, got %q", v)
	}
	return n, nil
}

func parseNoMigrate(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("want true or false, got %q", v)
	}
	return !b, nil
}

func sortedKeys(q url.Values) []string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
