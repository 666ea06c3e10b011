package dashboard_test

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/dashboard"
)

func serve(t *testing.T, h http.Handler, method, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAssets(t *testing.T) {
	h := dashboard.Handler()
	for path, ct := range map[string]string{
		"/":              "text/html; charset=utf-8",
		"/dashboard.js":  "text/javascript; charset=utf-8",
		"/dashboard.css": "text/css; charset=utf-8",
		"/favicon.svg":   "image/svg+xml",
	} {
		rec := serve(t, h, "GET", path)
		if rec.Code != 200 {
			t.Errorf("GET %s: %d", path, rec.Code)
			continue
		}
		if got := rec.Header().Get("Content-Type"); got != ct {
			t.Errorf("GET %s: Content-Type %q, want %q", path, got, ct)
		}
		for name, want := range map[string]string{
			"Content-Security-Policy": dashboard.ContentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Cache-Control":           "no-cache",
		} {
			if got := rec.Header().Get(name); got != want {
				t.Errorf("GET %s: %s %q, want %q", path, name, got, want)
			}
		}
		// Revalidation with the ETag costs no body.
		etag := rec.Header().Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", path)
			continue
		}
		if rec := serve(t, h, "GET", path, "If-None-Match", etag); rec.Code != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, rec.Code)
		}
	}
	if !strings.Contains(dashboard.ContentSecurityPolicy, "default-src 'self'") ||
		!strings.Contains(dashboard.ContentSecurityPolicy, "frame-ancestors 'none'") {
		t.Errorf("CSP %q lacks default-src 'self' or frame-ancestors 'none'", dashboard.ContentSecurityPolicy)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h := dashboard.Handler()
	for _, p := range []string{"/index.html", "/static/dashboard.js", "/x", "/dashboard.js/"} {
		rec := serve(t, h, "GET", p)
		if rec.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
		if rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no CSP on the 404", p)
		}
	}
	rec := serve(t, h, "POST", "/")
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
	if rec := serve(t, h, "HEAD", "/"); rec.Code != 200 {
		t.Errorf("HEAD /: %d", rec.Code)
	}
}

func TestOptions(t *testing.T) {
	h := dashboard.Handler(dashboard.WithTitle(`<script>alert("x")</script>`), dashboard.WithRefreshInterval(2*time.Second))
	body := serve(t, h, "GET", "/").Body.String()
	if strings.Contains(body, `<script>alert`) {
		t.Error("the title was not escaped")
	}
	if !strings.Contains(body, `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`) {
		t.Errorf("escaped title missing:\n%s", body)
	}
	if !strings.Contains(body, `data-refresh-ms="2000"`) {
		t.Error("refresh interval missing")
	}
	body = serve(t, dashboard.Handler(dashboard.WithRefreshInterval(time.Millisecond)), "GET", "/").Body.String()
	if !strings.Contains(body, `data-refresh-ms="250"`) {
		t.Error("refresh interval not raised to 250 ms")
	}
	body = serve(t, dashboard.Handler(dashboard.WithTitle("  ")), "GET", "/").Body.String()
	if !strings.Contains(body, "<title>masterjob · masterjob</title>") {
		t.Error("a blank title did not keep the default")
	}
}

// TestMountedUnderPrefix checks the page works behind http.StripPrefix:
// its references are relative.
func TestMountedUnderPrefix(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops", dashboard.Handler()))
	for _, p := range []string{"/ops/", "/ops/dashboard.js", "/ops/dashboard.css"} {
		if rec := serve(t, mux, "GET", p); rec.Code != 200 {
			t.Errorf("GET %s: %d", p, rec.Code)
		}
	}
}

// TestStaticSafety reads the page's sources: no HTML built from strings,
// no inline script or style (the CSP forbids them), nothing loaded from
// another origin, relative references only.
func TestStaticSafety(t *testing.T) {
	files := map[string]string{}
	err := filepath.WalkDir("static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	js := files[filepath.Join("static", "dashboard.js")]
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "srcdoc"} {
		if strings.Contains(js, bad) {
			t.Errorf("dashboard.js uses %s", bad)
		}
	}
	if strings.Contains(js, "'/api/") || strings.Contains(js, `"/api/`) {
		t.Error("dashboard.js uses an absolute API path; the page must work under a prefix")
	}
	html := files[filepath.Join("static", "index.html")]
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(html) {
		t.Error("index.html has an inline script")
	}
	if regexp.MustCompile(`(?i)\sstyle=|<style`).MatchString(html) {
		t.Error("index.html has inline style")
	}
	if regexp.MustCompile(`(?i)\son[a-z]+=`).MatchString(html) {
		t.Error("index.html has an inline event handler")
	}
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	for name, text := range files {
		for _, m := range external.FindAllString(text, -1) {
			if m == "http://www.w3.org" { // the SVG namespace, not a fetch
				continue
			}
			t.Errorf("%s refers to %s: nothing may come from another origin", name, m)
		}
		if strings.Contains(text, "@import") || strings.Contains(text, "@font-face") {
			t.Errorf("%s imports styles or fonts", name)
		}
	}
}

// TestHostCheck: with WithHostCheck, requests for a host the rule refuses
// get 421 and no page; the others are served.
func TestHostCheck(t *testing.T) {
	h := dashboard.Handler(dashboard.WithHostCheck(func(host string) bool { return host == "localhost:8080" }))
	for host, want := range map[string]int{"localhost:8080": 200, "rebind.attacker.example:8080": 421, "": 421} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
		if want == 421 && strings.Contains(rec.Body.String(), "<!DOCTYPE html>") {
			t.Errorf("Host %q: the page was served with the refusal", host)
		}
	}
}

// TestTokenFieldNeverSubmitted reads the page: the token's field has no
// name, so that no form submission can carry it, and its form posts, so
// that a submission without the script puts nothing in the address.
func TestTokenFieldNeverSubmitted(t *testing.T) {
	body := serve(t, dashboard.Handler(), "GET", "/").Body.String()
	input := regexp.MustCompile(`<input[^>]*\sid="token"[^>]*>`).FindString(body)
	if input == "" {
		t.Fatal("no token field in the page")
	}
	if regexp.MustCompile(`\sname=`).MatchString(input) {
		t.Errorf("the token field has a name, so a form submission would carry it: %s", input)
	}
	form := regexp.MustCompile(`<form[^>]*\sid="token-form"[^>]*>`).FindString(body)
	if !strings.Contains(form, `method="post"`) {
		t.Errorf("the token form does not post: %s", form)
	}
}
