package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/management"
)

func TestUsageErrorsPointAtHelp(t *testing.T) {
	addr := ctlServer(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ctl", "--addr", addr, "targets", "--bogus"}, "exchange: unknown flag: --bogus\nRun 'exchange ctl targets --help' for usage.\n"},
		{[]string{"ctl", "--addr", addr, "send", "--target", "t1"}, "exchange: send needs --target and --type\nRun 'exchange ctl send --help' for usage.\n"},
		{[]string{"ctl", "--addr", addr, "frobnicate"}, "Run 'exchange ctl --help' for usage.\n"},
		{[]string{"frobnicate"}, "exchange: unknown command \"frobnicate\" for \"exchange\"\nRun 'exchange --help' for usage.\n"},
		{[]string{"connector", "--bogus"}, "Run 'exchange connector --help' for usage.\n"},
	}
	for _, tc := range tests {
		code, _, errOut := runArgs(t, tc.args...)
		if code != exitUsage || !strings.HasSuffix(errOut, tc.want) {
			t.Errorf("exchange %q: exit code %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestCtlOutputAnyCase(t *testing.T) {
	addr := ctlServer(t)
	code, out, errOut := runCtl(t, "--addr", addr, "-o", "JSON", "channels", "--target", "t2")
	var chs []management.Channel
	if code != 0 || json.Unmarshal([]byte(out), &chs) != nil || len(chs) != 1 {
		t.Errorf("-o JSON: exit code %d, stdout %q, stderr %q; want the JSON list", code, out, errOut)
	}
	if code, out, _ := runCtl(t, "--addr", addr, "-o", "Table", "targets"); code != 0 || !strings.HasPrefix(out, "TARGET") {
		t.Errorf("-o Table: exit code %d, stdout %q; want the table", code, out)
	}
}

func TestCtlPayloadFromFileOrStdin(t *testing.T) {
	addr := ctlServer(t)
	file := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(file, []byte("{\"from\": \"file\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, stdin, payload, want string
	}{
		{"@file", "", "@" + file, `{"from":"file"}`},
		{"stdin", ` ["from", "stdin"] `, "-", `["from","stdin"]`},
	} {
		code, out, errOut := runCtlIn(t, tc.stdin, "--addr", addr, "send", "--target", "t1", "--type", "ECHO", "--payload", tc.payload)
		if code != 0 || !strings.Contains(out, "PAYLOAD    "+tc.want+"\n") {
			t.Errorf("%s: exit code %d, stdout %q, stderr %q; want the payload %s echoed", tc.name, code, out, errOut, tc.want)
		}
	}
	for _, tc := range []struct {
		name, stdin, payload, want string
	}{
		{"missing file", "", "@/nonexistent/p.json", "--payload: open /nonexistent/p.json"},
		{"empty stdin", "", "-", "--payload: empty input"},
		{"not JSON", "{nope", "-", "--payload is not valid JSON"},
	} {
		code, _, errOut := runCtlIn(t, tc.stdin, "--addr", addr, "send", "--target", "t1", "--type", "ECHO", "--payload", tc.payload)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit code %d, stderr %q; want 2 and %q", tc.name, code, errOut, tc.want)
		}
	}
}

// TestCtlQueryTimeout checks that a management API that does not answer in
// time is reported as unreachable (3), not as a connector failure (6).
func TestCtlQueryTimeout(t *testing.T) {
	entered := make(chan struct{}, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done() // never answers; the client gives up
	}))
	defer ts.Close()
	// The deadline passes once the request is in the handler (a cause of
	// DeadlineExceeded, as a deadline gives): no guess at how long the
	// request takes to get there.
	ctx, expire := context.WithCancelCause(t.Context())
	defer expire(nil)
	go func() {
		select {
		case <-entered:
			expire(context.DeadlineExceeded)
		case <-ctx.Done():
		}
	}()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"ctl", "--addr", ts.URL, "targets"}, &out, &errb)
	if code != exitUnreachable || !strings.Contains(errb.String(), "did not answer in time") {
		t.Errorf("exit code %d, stderr %q; want 3, did not answer in time", code, errb.String())
	}
}

// TestCtlIgnoresConnectorVariables checks that ctl's subcommand flags read
// EXCHANGE_CTL_*, not the EXCHANGE_TARGET a connector's host has set.
func TestCtlIgnoresConnectorVariables(t *testing.T) {
	addr := ctlServer(t)
	t.Setenv("EXCHANGE_TARGET", "t2")
	code, out, errOut := runCtl(t, "--addr", addr, "channels")
	if code != 0 || !strings.Contains(out, "c1") {
		t.Errorf("channels with EXCHANGE_TARGET=t2: exit code %d, stdout %q, stderr %q; want every channel", code, out, errOut)
	}
	if code, _, errOut := runCtl(t, "--addr", addr, "send", "--type", "ECHO"); code != exitUsage {
		t.Errorf("send with EXCHANGE_TARGET only: exit code %d, stderr %q; want 2 (no --target)", code, errOut)
	}
	t.Setenv("EXCHANGE_CTL_TARGET", "t2")
	code, out, errOut = runCtl(t, "--addr", addr, "channels")
	if code != 0 || strings.Contains(out, "c1") || !strings.Contains(out, "c3") {
		t.Errorf("channels with EXCHANGE_CTL_TARGET=t2: exit code %d, stdout %q, stderr %q; want t2's channel only", code, out, errOut)
	}
}
