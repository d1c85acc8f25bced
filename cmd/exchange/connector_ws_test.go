package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseHeaders(t *testing.T) {
	got, err := parseHeaders([]string{"Authorization: Bearer abc", "x-proxy-route:  eu, west ", "", "X-Proxy-Route: b"})
	want := http.Header{"Authorization": {"Bearer abc"}, "X-Proxy-Route": {"eu, west", "b"}}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("parseHeaders() = (%v, %v), want %v", got, err, want)
	}
	for _, bad := range []string{"no colon", ": empty name", "bad name: x", "X-A: a\x01b", "Host: h", "Upgrade: x",
		"Sec-WebSocket-Key: k", "x-gravitee-exchange-protocol: legacy", "Connection: close"} {
		if _, err := parseHeaders([]string{bad}); err == nil {
			t.Errorf("parseHeaders(%q) = nil error, want one", bad)
		}
	}
}

// --header: usage errors at start; EXCHANGE_HEADER holds one header per
// line, commas kept in values.
func TestConnectorHeaderFlag(t *testing.T) {
	code, _, errOut := runArgs(t, "connector", "--target", "t1", "--controller", "ws://ctl-1:7410", "--header", "nonsense")
	if code != exitUsage || !strings.Contains(errOut, `--header "nonsense"`) {
		t.Errorf("--header nonsense: exit %d, stderr %q; want 2 naming it", code, errOut)
	}
	code, _, errOut = runArgs(t, "connector", "--target", "t1", "--controller", "127.0.0.1:7400", "--header", "X-A: 1")
	if code != exitUsage || !strings.Contains(errOut, "--header applies to WebSocket endpoints") {
		t.Errorf("--header with gRPC endpoints only: exit %d, stderr %q; want 2", code, errOut)
	}
	t.Setenv("EXCHANGE_HEADER", "X-A: 1, 2\nX-B: 3")
	code, _, errOut = runArgs(t, "connector", "--target", "t1", "--controller", "127.0.0.1:7400")
	if code != exitUsage || !strings.Contains(errOut, "--header applies to WebSocket endpoints") {
		t.Errorf("EXCHANGE_HEADER (two lines) with gRPC endpoints only: exit %d, stderr %q; want 2, the headers parsed", code, errOut)
	}
	t.Setenv("EXCHANGE_HEADER", "X-A: 1, 2\nbroken")
	code, _, errOut = runArgs(t, "connector", "--target", "t1", "--controller", "ws://ctl-1:7410")
	if code != exitUsage || !strings.Contains(errOut, `--header "broken"`) {
		t.Errorf("EXCHANGE_HEADER with a broken second line: exit %d, stderr %q; want 2 naming the line", code, errOut)
	}
}
