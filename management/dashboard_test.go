package management

import (
	"net/http"
	"strings"
	"testing"
)

// The dashboard's files are served, embedded, without the token (they hold
// no data), with a CSP that keeps the page to its own origin; the API
// behind them still wants the token.
func TestDashboardFiles(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{Tokens: []string{"s3cret"}}, newFakeExchange(), nil))
	for path, want := range map[string]string{
		"/ui/":        "text/html",
		"/ui/app.js":  "text/javascript",
		"/ui/app.css": "text/css",
	} {
		resp, body := do(t, ts, http.MethodGet, path, "", nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) {
			t.Errorf("GET %s: %d %q, want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
		if len(body) == 0 {
			t.Errorf("GET %s: empty", path)
		}
		if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
			t.Errorf("GET %s refers to another site: nothing may be fetched from elsewhere", path)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(ts.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/ui/nope.js", "/ui/..%2Fdashboard.go", "/ui/%2e%2e"} {
		if resp, _ := do(t, ts, http.MethodGet, path, "", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := do(t, ts, http.MethodGet, "/exchange/cluster", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API behind the page answered %d without the token", resp.StatusCode)
	}
}
