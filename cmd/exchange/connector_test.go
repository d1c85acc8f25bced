package main

import (
	"strings"
	"testing"
)

// TestConnectorRefusesBadControllerAddr checks that a --controller that is
// neither HOST:PORT nor a WebSocket URL is refused at start, with exit code 2
// and the right forms.
func TestConnectorRefusesBadControllerAddr(t *testing.T) {
	for _, addr := range []string{
		"grpc://ctl-1:7400",
		"ftp://ctl-1:7400",
		"ws://",
		"wss://:7410",
		"ws://ctl-1:0",
		"ws://ctl-1:x",
		"ws://ctl-1:",
		"wss://user:pw@ctl-1:7410",
		"wss://ctl-1:7410/?a=b",
		"wss://ctl-1:7410/#frag",
		"ws://ctl-1:7410,wss://ctl-2:99999", // the second of two
		"127.0.0.1",
		"ctl-1",
		":7400",
		"ctl-1:http",
		"ctl-1:0",
		"ctl-1:7400/path",
		"ctl-1:7400,127.0.0.1", // the second of two
	} {
		code, _, errOut := runArgs(t, "connector", "--target", "t1", "--controller", addr)
		if code != exitUsage || !strings.Contains(errOut, "want HOST:PORT, the controller's gRPC address, such as 127.0.0.1:7400, or the URL of its WebSocket endpoint") ||
			!strings.Contains(errOut, "Run 'exchange connector --help' for usage.") {
			t.Errorf("--controller %q: exit code %d, stderr %q; want 2 and the right form", addr, code, errOut)
		}
	}
	for _, addr := range []string{"127.0.0.1:7400", "ctl-1.example.com:7400", "[::1]:7400", "ctl-1:7400,",
		"ws://127.0.0.1:7410", "wss://ctl-1.example.com", "http://ctl-1:7410/root/", "https://[::1]:7410/exchange/controller"} {
		if err := checkControllerAddr(strings.TrimSuffix(addr, ",")); err != nil {
			t.Errorf("checkControllerAddr(%q) = %v, want nil", addr, err)
		}
	}
}

// TestConnectorRefusesPlainURLWithTLS checks that TLS flags with a ws:// or
// http:// endpoint are refused: the scheme decides, and the token would go
// in clear.
func TestConnectorRefusesPlainURLWithTLS(t *testing.T) {
	for _, addr := range []string{"ws://ctl-1:7410", "127.0.0.1:7400,http://ctl-1:7410"} {
		code, _, errOut := runArgs(t, "connector", "--target", "t1", "--tls-ca", "ca.pem", "--controller", addr)
		if code != exitUsage || !strings.Contains(errOut, "need wss:// or https://") {
			t.Errorf("--controller %q with --tls-ca: exit code %d, stderr %q; want 2 and wss://", addr, code, errOut)
		}
	}
}

// TestHelpListsVariables checks that --help names the EXCHANGE_* variables,
// and those of ctl's subcommands EXCHANGE_CTL_*.
func TestHelpListsVariables(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"EXCHANGE_GRPC_ADDR", "EXCHANGE_CTL_TARGET", "EXCHANGE_MANAGEMENT_TOKEN"}},
		{[]string{"connector", "--help"}, []string{"EXCHANGE_CONTROLLER     --controller", "EXCHANGE_TARGET         --target"}},
		{[]string{"ctl", "send", "--help"}, []string{"EXCHANGE_CTL_TARGET", "EXCHANGE_MANAGEMENT_TOKEN  --token", "EXCHANGE_ADDR"}},
	} {
		code, out, errOut := runArgs(t, tc.args...)
		if code != 0 {
			t.Fatalf("%v: exit code %d; stderr %s", tc.args, code, errOut)
		}
		// The column is as wide as the longest variable: compare words.
		words := strings.Join(strings.Fields(out), " ")
		for _, w := range tc.want {
			if !strings.Contains(words, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("exchange %v lacks %q:\n%s", tc.args, w, out)
			}
		}
		if strings.Contains(strings.Join(tc.args, " "), "ctl send") && strings.Contains(out, "EXCHANGE_TARGET ") {
			t.Errorf("ctl send --help names EXCHANGE_TARGET:\n%s", out)
		}
	}
}
