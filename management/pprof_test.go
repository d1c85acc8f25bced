package management

import (
	"net/http"
	"strings"
	"testing"
)

// TestPprof: /debug/pprof/ is served behind the management token like
// /metrics, and without a token (loopback only) like the rest of the API.
func TestPprof(t *testing.T) {
	bearer := http.Header{"Authorization": {"Bearer s3cret"}}
	withToken := serveHTTP(t, newServer(t, Config{Tokens: []string{"s3cret"}}, newFakeExchange(), nil))
	noToken := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), nil))
	tests := []struct {
		name     string
		open     bool // served by the server without a token
		method   string
		path     string
		header   http.Header
		want     int
		contains string
	}{
		{"index without token", false, "GET", "/debug/pprof/", nil, 401, ""},
		{"index with token", false, "GET", "/debug/pprof/", bearer, 200, "goroutine"},
		{"heap without token", false, "GET", "/debug/pprof/heap", nil, 401, ""},
		{"goroutine with token", false, "GET", "/debug/pprof/goroutine?debug=1", bearer, 200, "goroutine profile:"},
		{"cmdline without token", false, "GET", "/debug/pprof/cmdline", nil, 401, ""},
		{"cmdline with token", false, "GET", "/debug/pprof/cmdline", bearer, 200, ""},
		{"symbol post without token", false, "POST", "/debug/pprof/symbol", nil, 401, ""},
		{"unknown profile", false, "GET", "/debug/pprof/nope", bearer, 404, ""},
		{"index on loopback, no token configured", true, "GET", "/debug/pprof/", nil, 200, "goroutine"},
		{"allocs on loopback, no token configured", true, "GET", "/debug/pprof/allocs?debug=1", nil, 200, "heap profile:"},
		{"symbol on loopback, no token configured", true, "GET", "/debug/pprof/symbol", nil, 200, "num_symbols"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := withToken
			if tc.open {
				ts = noToken
			}
			resp, body := do(t, ts, tc.method, tc.path, "", tc.header)
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s: status = %d, want %d; body %.200s", tc.method, tc.path, resp.StatusCode, tc.want, body)
			}
			if tc.want == 401 {
				checkErrorBody(t, body, 401)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("%s %s: body %.200q does not contain %q", tc.method, tc.path, body, tc.contains)
			}
		})
	}
}
