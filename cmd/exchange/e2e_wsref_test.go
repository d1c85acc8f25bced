package main

import (
	"context"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/exchangekit/exchange/internal/refclient"
	"github.com/exchangekit/exchange/internal/testproxy"
)

// The binary against connectors of the reference (internal/refclient,
// written from its documented frames): a V1 one and a legacy one, each
// authenticated by the bearer token of its upgrade request, through hello,
// PRIMARY, health checks, commands both ways and the controller's shutdown.
func TestEndToEndReferenceConnectors(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	ctrl, _, httpURL, wsURL := startControllerWS(ctx, t, "--in-memory", "--token", "s3cret")
	bearer := http.Header{"Authorization": {"Bearer s3cret"}}

	echo := func(proto string) refclient.Handler {
		return func(f refclient.Frame) string {
			return refclient.Reply(proto, f.ID(), "ECHO", "SUCCEEDED", "", `{"from":"`+proto+`"}`)
		}
	}
	// V1.
	c1, err := refclient.Dial(ctx, wsURL+"/exchange/controller", refclient.V1, bearer)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := c1.Hello(ctx, "t-v1"); err != nil || f.Str("commandStatus") != "SUCCEEDED" || f.Payload()["targetId"] != "t-v1" {
		t.Fatalf("V1 hello = (%s, %v)", f.Raw, err)
	}
	v1 := c1.Start(map[string]refclient.Handler{"ECHO": echo(refclient.V1)})
	defer v1.Close()
	// Legacy: no protocol header, the legacy path.
	c2, err := refclient.Dial(ctx, wsURL+"/ws/controller", "", bearer)
	if err != nil {
		t.Fatal(err)
	}
	f, err := c2.Hello(ctx, "t-legacy")
	if want := `reply: {"commandId":"` + f.ID() + `","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":"t-legacy"}}`; err != nil || f.Raw != want {
		t.Fatalf("legacy hello = (%s, %v), want %s", f.Raw, err, want)
	}
	legacy := c2.Start(map[string]refclient.Handler{"ECHO": echo(refclient.Legacy)})
	defer legacy.Close()

	// A legacy connector without the token is refused in its HELLO_REPLY.
	c3, err := refclient.Dial(ctx, wsURL+"/ws/controller", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := c3.Hello(ctx, "t-legacy"); err != nil || f.Type != "HELLO_REPLY" || f.Str("commandStatus") != "ERROR" || f.Str("message") == "" {
		t.Errorf("legacy hello without the token = (%s, %v), want HELLO_REPLY ERROR", f.Raw, err)
	}
	_ = c3.WS.CloseNow()

	// Both are their target's primary; the V1 one answers health checks.
	isPrimary := func(_ []refclient.Frame, p []bool) bool { return len(p) > 0 && p[len(p)-1] }
	if err := v1.WaitFor(ctx, "PRIMARY", isPrimary); err != nil {
		t.Fatal(err)
	}
	if err := legacy.WaitFor(ctx, "primary: true", isPrimary); err != nil {
		t.Fatal(err)
	}
	if err := v1.WaitFor(ctx, "a HEALTH_CHECK", func(r []refclient.Frame, _ []bool) bool { return countType(r, "HEALTH_CHECK") > 0 }); err != nil {
		t.Fatal(err)
	}
	// The legacy one is healthy without answering any (a ping stands for
	// it), and stays.
	var channels []struct {
		TargetID      string    `json:"targetId"`
		Primary       bool      `json:"primary"`
		LastHealthyAt time.Time `json:"lastHealthyAt"`
	}
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		channels = channels[:0]
		getJSON(ctx, t, httpURL+"/exchange/targets/t-legacy/channels", &channels)
		if len(channels) == 1 && !channels[0].LastHealthyAt.IsZero() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the legacy channel never had a healthy health check: %+v", channels)
		case <-poll.C:
		}
	}
	if !channels[0].Primary {
		t.Errorf("management API: the legacy channel is not primary: %+v", channels)
	}

	// Controller → connector, through ctl.
	for target, want := range map[string]string{"t-v1": `"from": "v1"`, "t-legacy": `"from": "legacy"`} {
		var out, errb strings.Builder
		if code := run(ctx, []string{"ctl", "--addr", httpURL, "-o", "json", "send", "--target", target, "--type", "ECHO",
			"--payload", `{"q":"a;;b"}`}, &out, &errb); code != 0 || !strings.Contains(out.String(), want) {
			t.Errorf("ctl send ECHO to %s: exit %d, %s %s; want %s", target, code, out.String(), errb.String(), want)
		}
	}
	// Connector → controller: the binary has no handler of its own, so an
	// UNKNOWN reply, in each protocol's frame.
	id := refclient.NewID()
	if f, err := v1.Send(ctx, id, refclient.Command(refclient.V1, id, "STATUS", `{}`)); err != nil ||
		!strings.HasPrefix(f.Raw, `t:REPLY;;et:UNKNOWN;;e:{"commandId":"`+id+`","type":"UNKNOWN","commandStatus":"ERROR","errorDetails":`) {
		t.Errorf("V1 connector's command: reply (%s, %v), want UNKNOWN", f.Raw, err)
	}
	id = refclient.NewID()
	if f, err := legacy.Send(ctx, id, refclient.Command(refclient.Legacy, id, "STATUS", `{}`)); err != nil ||
		!strings.HasPrefix(f.Raw, `reply: {"commandId":"`+id+`","type":"UNKNOWN","commandStatus":"ERROR","errorDetails":`) {
		t.Errorf("legacy connector's command: reply (%s, %v), want UNKNOWN", f.Raw, err)
	}

	// The controller stops: GOOD_BYE{reconnect:true} to the V1 connector,
	// which closes; the legacy connector's socket is closed with 1013.
	ctrl.stop(ctx)
	<-v1.Done()
	if err := v1.WaitFor(ctx, "GOOD_BYE", func(r []refclient.Frame, _ []bool) bool { return countType(r, "GOOD_BYE") == 1 }); err != nil {
		t.Error(err)
	}
	<-legacy.Done()
	if code, reason := legacy.CloseStatus(); code != websocket.StatusTryAgainLater || reason != "GoodBye Command with reconnection requested." {
		t.Errorf("legacy connector: close %d %q (%v), want 1013", code, reason, legacy.Err())
	}
}

func countType(fs []refclient.Frame, typ string) int {
	n := 0
	for _, f := range fs {
		if f.Type == typ {
			n++
		}
	}
	return n
}

// `exchange connector` reaches a WebSocket controller through the HTTP
// proxy of its environment (a real CONNECT proxy here, which counts the
// tunnels), authenticated by a --header.
func TestEndToEndConnectorThroughProxy(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	ctrl, _, _, wsURL := startControllerWS(ctx, t, "--in-memory", "--token", "s3cret")
	target := strings.TrimPrefix(wsURL, "ws://")
	_, port, _ := net.SplitHostPort(target)
	p := testproxy.Start(t, testproxy.Options{Name: "controller.test", Target: target})

	// Set for the connector's process only (the controller runs already);
	// "controller.test" is not loopback, which is never proxied.
	for k, v := range map[string]string{"HTTP_PROXY": p.URL(), "HTTPS_PROXY": "", "NO_PROXY": "", "http_proxy": "", "https_proxy": "", "no_proxy": ""} {
		t.Setenv(k, v)
	}
	url := "ws://controller.test:" + port
	conn := start(t, "c-proxy", "connector", "--controller", url, "--target", "t-p", "--id", "c-proxy",
		"--header", "Authorization: Bearer s3cret")
	conn.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=c-proxy target=t-p`))
	if n, hosts := p.Connects(), p.Hosts(); n < 1 || hosts[0] != "controller.test:"+port {
		t.Errorf("the proxy tunnelled %d connections to %v, want the connector's to controller.test:%s", n, hosts, port)
	}
	conn.stop(ctx)
	ctrl.stop(ctx)
}
