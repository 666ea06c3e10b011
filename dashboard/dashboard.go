// Package dashboard serves masterjob's operator dashboard: one page, embedded
// in the binary, that shows every lock's master, standbys, fencing token,
// lease countdown, disabled state and recent history, the live instances
// with their masterships, and disables, enables and hands off locks through
// the control API (package controlapi). It shows the locks a page of 100 at
// a time, with a search by name and filters by state and master, so that
// it stays fast with tens of thousands of locks.
//
// The page is plain HTML, CSS and JavaScript with no build step and loads
// nothing from other origins. It calls the control API with URLs relative to
// itself (api/mastercontrols), so it works wherever the API is mounted beside
// it at the same origin: at the root,
//
//	mux.Handle("/api/mastercontrols", api)
//	mux.Handle("/api/mastercontrols/", api)
//	mux.Handle("/api/instances", api)
//	mux.Handle("/", dashboard.Handler())
//
// or under a common prefix with http.StripPrefix. Package httpserver
// composes both with metrics and health probes.
//
// The page follows the control API's event stream (GET
// /api/mastercontrols/events, read with fetch so that it can send the
// token) and reads the locks again when an event arrives, and every half
// lease for the renewals (which are no events). While the stream is down
// (refused, or broken until it reconnects) the page polls instead (every
// second by default), and says so next to its connection dot ("Live
// (polling)"). The member list comes from GET /api/instances, beside the
// API; the page calls it relative to itself too. When the API wants a
// bearer token, the operator enters it in the page; it is kept in the
// browser tab's sessionStorage and sent as "Authorization: Bearer", never
// in a URL: the token field has no name and its form posts, so that even
// a browser without the script cannot put it in the address. The page
// itself needs no token: it holds no data.
//
// WithHostCheck refuses (421) requests whose Host header a rule rejects;
// httpserver passes the control API's rule (controlapi.Handler.HostAllowed:
// without a token, loopback hosts and localhost only), so that a page
// reached through DNS rebinding is refused as the API's answers are.
//
// Every response carries a Content-Security-Policy that allows only the
// page's own scripts, styles and requests (default-src 'self',
// frame-ancestors 'none'), and X-Content-Type-Options: nosniff. The page
// builds its DOM with textContent, never innerHTML, so lock names and
// reasons, which are user input, are always shown as text, and shows
// invisible characters in them (format characters such as the
// bidirectional override U+202E, control characters) escaped, as
// [U+202E], so that a reason cannot display as another text.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// DefaultRefreshInterval is how often the page reloads the locks and the
// history while the event stream is down, unless WithRefreshInterval says
// otherwise.
const DefaultRefreshInterval = time.Second

// DefaultTitle is the page's title unless WithTitle says otherwise.
const DefaultTitle = "masterjob"

// ContentSecurityPolicy is the policy sent with every response.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Option configures Handler.
type Option func(*config)

type config struct {
	title   string
	refresh time.Duration
	host    func(host string) bool
}

// WithTitle sets the title shown in the page's header and the browser's
// tab, for example the cluster's name (default DefaultTitle).
func WithTitle(title string) Option {
	return func(c *config) {
		if t := strings.TrimSpace(title); t != "" {
			c.title = t
		}
	}
}

// WithRefreshInterval sets how often the page reloads its data while the
// event stream is down, and how often at most while it is up (default
// DefaultRefreshInterval, at least 250 ms).
func WithRefreshInterval(d time.Duration) Option {
	return func(c *config) { c.refresh = max(d, 250*time.Millisecond) }
}

// WithHostCheck makes the handler answer only requests whose Host header
// (with its port, if any) allowed accepts, and 421 Misdirected Request to
// the others. httpserver.New passes the control API's rule
// (controlapi.Handler.HostAllowed).
func WithHostCheck(allowed func(host string) bool) Option {
	return func(c *config) { c.host = allowed }
}

// asset is a file the handler serves.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

func newAsset(body []byte, contentType string) asset {
	sum := sha256.Sum256(body)
	return asset{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// Handler returns the dashboard. It serves the page at "/" and its assets
// beside it, and answers 404 to every other path, so it can be mounted at
// the root of a ServeMux as the fallback for paths nothing else serves.
func Handler(opts ...Option) http.Handler {
	c := config{title: DefaultTitle, refresh: DefaultRefreshInterval}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	page, err := renderPage(c)
	if err != nil {
		panic(err) // the embedded template is part of the binary: a test catches this
	}
	assets := map[string]asset{
		"/":              newAsset(page, "text/html; charset=utf-8"),
		"/dashboard.js":  newAsset(mustRead("static/dashboard.js"), "text/javascript; charset=utf-8"),
		"/dashboard.css": newAsset(mustRead("static/dashboard.css"), "text/css; charset=utf-8"),
		"/favicon.svg":   newAsset(mustRead("static/favicon.svg"), "image/svg+xml"),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if c.host != nil && !c.host(r.Host) {
			http.Error(w, "421 misdirected request: this server does not answer for host "+strconv.Quote(r.Host)+
				" (without a token only loopback addresses and localhost are served)", http.StatusMisdirectedRequest)
			return
		}
		path := r.URL.Path
		if path == "" {
			path = "/"
		}
		a, ok := assets[path]
		if !ok {
			http.Error(w, "404 page not found", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache") // revalidate: cheap with the ETag
		h.Set("ETag", a.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}

func mustRead(name string) []byte {
	b, err := static.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

var pageTemplate = template.Must(template.ParseFS(static, "static/index.html"))

func renderPage(c config) ([]byte, error) {
	var buf bytes.Buffer
	err := pageTemplate.Execute(&buf, struct {
		Title     string
		RefreshMs int64
	}{c.title, c.refresh.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("dashboard: rendering the page: %w", err)
	}
	return buf.Bytes(), nil
}
