package main

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var wsURLRe = regexp.MustCompile(`grpc=\S+ http=\S+ ws=(\S+)`)

// startControllerWS starts a controller with --ws-addr on an ephemeral port
// too, and returns its WebSocket URL besides.
func startControllerWS(ctx context.Context, t *testing.T, args ...string) (p *proc, grpcAddr, httpURL, wsURL string) {
	t.Helper()
	p, grpcAddr, httpURL = startController(ctx, t, append([]string{"--ws-addr", "127.0.0.1:0"}, args...)...)
	m, _ := p.waitLine(ctx, 0, wsURLRe)
	return p, grpcAddr, httpURL, m[1]
}

// One connector over gRPC and one over WebSocket serve the same target: both
// register, exactly one is primary, ctl send reaches the target, and when
// the primary's process is killed the other becomes primary with a higher
// epoch, whichever transport each uses.
func TestEndToEndGRPCAndWebSocket(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	ctrl, grpcAddr, httpURL, wsURL := startControllerWS(ctx, t, "--in-memory")
	if !strings.HasPrefix(wsURL, "ws://127.0.0.1:") {
		t.Fatalf("controller announces ws=%s, want ws://127.0.0.1:PORT", wsURL)
	}

	anyLine := make(chan struct{}, 1)
	conns := map[string]*proc{
		"c-grpc": startNotify(t, anyLine, "c-grpc", "connector", "--controller", grpcAddr, "--target", "t1", "--id", "c-grpc"),
		"c-ws":   startNotify(t, anyLine, "c-ws", "connector", "--controller", wsURL, "--target", "t1", "--id", "c-ws"),
	}
	conns["c-ws"].waitLine(ctx, 0, regexp.MustCompile(`^CONNECTED connector=c-ws target=t1 controller=`+regexp.QuoteMeta(wsURL)))
	first, firstEpoch := waitPrimary(ctx, t, anyLine, conns, nil)

	// Both are registered, one of them primary.
	var target struct {
		Channels []struct {
			ConnectorID string `json:"connectorId"`
			Primary     bool   `json:"primary"`
		} `json:"channels"`
	}
	poll := time.NewTicker(20 * time.Millisecond) // Eventually-style, bounded by ctx
	defer poll.Stop()
	for getJSON(ctx, t, httpURL+"/exchange/targets/t1", &target) != http.StatusOK || len(target.Channels) != 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the management API never listed 2 channels")
		case <-poll.C:
		}
	}
	primaries := 0
	for _, ch := range target.Channels {
		if ch.Primary {
			primaries++
			if ch.ConnectorID != first.name {
				t.Errorf("management API: %s is primary, but %s was told it is", ch.ConnectorID, first.name)
			}
		}
	}
	if primaries != 1 {
		t.Errorf("management API: %d primaries, want 1: %+v", primaries, target.Channels)
	}

	// ctl send reaches the target, over either transport.
	var out, errb strings.Builder
	if code := run(ctx, []string{"ctl", "--addr", httpURL, "-o", "json", "send", "--primary", "--target", "t1", "--type", "ECHO",
		"--payload", `{"via":"primary"}`}, &out, &errb); code != 0 {
		t.Fatalf("ctl send: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), `"via"`) || !strings.Contains(out.String(), first.name) {
		t.Errorf("ctl send --primary output lacks the echoed payload or %s:\n%s", first.name, out.String())
	}

	// kill -9 the primary's connector: the other becomes primary.
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	second, secondEpoch := waitPrimary(ctx, t, anyLine, conns, first)
	t.Logf("kill -9 of %s: %s became primary (epoch %d → %d)", first.name, second.name, firstEpoch, secondEpoch)
	if secondEpoch <= firstEpoch {
		t.Errorf("epoch did not grow: %d → %d", firstEpoch, secondEpoch)
	}
	out.Reset()
	errb.Reset()
	if code := run(ctx, []string{"ctl", "--addr", httpURL, "-o", "json", "send", "--primary", "--target", "t1", "--type", "ECHO"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), second.name) {
		t.Errorf("ctl send --primary after failover: exit %d, output %s %s; want it answered by %s", code, out.String(), errb.String(), second.name)
	}

	second.stop(ctx)
	ctrl.stop(ctx)
}

// Over wss:// with mutual TLS the controller's certificate binding applies as
// over gRPC: conn-a's certificate cannot register as conn-b, only as conn-a.
func TestEndToEndWebSocketMutualTLS(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	p := newPKI(t, t.TempDir(), "conn-a")
	ctrl, _, _, wsURL := startControllerWS(ctx, t, "--in-memory",
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca)
	if !strings.HasPrefix(wsURL, "wss://") {
		t.Fatalf("controller with TLS announces ws=%s, want wss://", wsURL)
	}
	tlsArgs := []string{"--controller", wsURL, "--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey}

	impostor := start(t, "impostor", append([]string{"connector", "--target", "t-1", "--id", "conn-b"}, tlsArgs...)...)
	impostor.waitLine(ctx, 0, regexp.MustCompile(`hello rejected.*"conn-b".*certificate`))
	if code := impostor.waitExit(ctx); code != 4 {
		t.Errorf("connector conn-b with conn-a's certificate exited %d, want 4 (refused)", code)
	}

	conn := start(t, "conn-a", append([]string{"connector", "--target", "t-1", "--id", "conn-a"}, tlsArgs...)...)
	conn.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=conn-a target=t-1`))
	conn.stop(ctx)
	ctrl.stop(ctx)
}
