package controller_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

func TestBoundTokensRules(t *testing.T) {
	auth, err := controller.BoundTokens(
		controller.TokenRule{Token: "tok-a", Connector: "conn-a", Targets: []string{"t-*"}},
		controller.TokenRule{Token: "tok-edge", Connector: "edge-*"},
	)
	if err != nil {
		t.Fatalf("BoundTokens() = %v", err)
	}
	tests := []struct {
		token, connector, target string
		want                     string // "" accepts; else in the refusal
	}{
		{"tok-a", "conn-a", "t-1", ""},
		{"tok-a", "conn-a", "t-", ""},
		{"tok-a", "conn-b", "t-1", `connector id "conn-b" is not allowed`},
		{"tok-a", "", "t-1", `connector id "" is not allowed`},
		{"tok-a", "conn-a", "u-1", `target "u-1" is not allowed`},
		{"tok-a", "conn-a", "t-1/x", `target "t-1/x" is not allowed`}, // '*' does not cross '/'
		{"tok-edge", "edge-7", "anything/at-all", ""},
		{"tok-edge", "conn-a", "t-1", `connector id "conn-a" is not allowed`},
		{"tok-b", "conn-a", "t-1", "invalid token"},
		{"", "conn-a", "t-1", "no token"},
	}
	for _, tt := range tests {
		got, err := auth.Authenticate(t.Context(), controller.HelloRequest{Token: tt.token, ConnectorID: tt.connector, TargetID: tt.target})
		switch {
		case tt.want == "" && (err != nil || got != tt.target):
			t.Errorf("%s as %q on %q: Authenticate() = %q, %v; want accepted", tt.token, tt.connector, tt.target, got, err)
		case tt.want != "" && (!errors.Is(err, controller.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s as %q on %q: Authenticate() = %q, %v; want a refusal saying %s", tt.token, tt.connector, tt.target, got, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "tok-") {
			t.Errorf("refusal %q quotes a token", err)
		}
	}

	for _, bad := range [][]controller.TokenRule{
		{{Token: "", Connector: "*"}},
		{{Token: "x", Connector: ""}},
		{{Token: "x", Connector: "a["}},
		{{Token: "x", Connector: "*", Targets: []string{"["}}},
		{{Token: "x", Connector: "a"}, {Token: "x", Connector: "b"}},
	} {
		if _, err := controller.BoundTokens(bad...); err == nil {
			t.Errorf("BoundTokens(%+v) = nil error", bad)
		}
	}
	none, _ := controller.BoundTokens()
	if _, err := none.Authenticate(t.Context(), controller.HelloRequest{Token: "x", TargetID: "t"}); err == nil {
		t.Errorf("BoundTokens() with no rules accepted a HELLO")
	}
}

// Through real channels: token A may only be connector conn-a, on targets
// t-*; the refusal is an ERROR reply (401) with the reason.
func TestHelloBoundToken(t *testing.T) {
	auth, err := controller.BoundTokens(
		controller.TokenRule{Token: "tok-a", Connector: "conn-a", Targets: []string{"t-*"}},
		controller.TokenRule{Token: "tok-b", Connector: "conn-b"},
	)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.Authenticator = auth
	cfg.HelloTimeout = 200 * time.Millisecond // also bounds how long a refused conn lingers
	h := newHarness(t, cfg)

	for _, tt := range []struct{ connector, target, want string }{
		{"conn-b", "t-1", `connector id "conn-b" is not allowed`},
		{"conn-a", "other", `target "other" is not allowed`},
	} {
		reply := helloReply(t, h.dialer, command.HelloPayload{TargetID: tt.target, ConnectorID: tt.connector, Token: "tok-a"})
		if reply.Status != command.StatusError || reply.Code != 401 || !strings.Contains(reply.Error, tt.want) {
			t.Errorf("HELLO as %s on %s with token A: reply %+v, want ERROR 401 saying %s", tt.connector, tt.target, reply, tt.want)
		}
	}
	h.waitFor("refusals counted", func() bool { return h.metrics.count("hello:unauthenticated") == 2 })

	a := h.connect(connOpts{connectorID: "conn-a", target: "t-1", token: "tok-a"})
	b := h.connect(connOpts{connectorID: "conn-b", target: "other", token: "tok-b"})
	h.waitRegistered(a.id(), true)
	h.waitRegistered(b.id(), true)
	if n := len(h.ctrl.Channels()); n != 2 {
		t.Errorf("%d channels registered, want only the two allowed", n)
	}
}

// Through real channels: the certificate of CN=conn-a cannot register as
// conn-b, and with a cert rule only on targets t-*.
func TestHelloBoundCertificate(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.CertIdentity(controller.BindCommonName, controller.CertRule{Identity: "conn-a", Targets: []string{"t-*"}})
	el := embedded.Listen()
	h := newHarness(t, cfg, harnessOpts{lis: tlsListener{Listener: el, st: verifiedState("conn-a")}, dial: el})

	for _, tt := range []struct{ connector, target, want string }{
		{"conn-b", "t-1", `connector id "conn-b" is not the client certificate's common name "conn-a"`},
		{"", "t-1", `connector id "" is not the client certificate's common name`},
		{"conn-a", "other", `target "other" is not allowed for the client certificate identity "conn-a"`},
	} {
		_, err := h.dial(t.Context(), connOpts{connectorID: tt.connector, target: tt.target})
		var rej *channel.HelloRejectedError
		if !errors.As(err, &rej) || !strings.Contains(rej.Reason, tt.want) {
			t.Errorf("HELLO as %q on %s with conn-a's certificate = %v, want a refusal saying %s", tt.connector, tt.target, err, tt.want)
		}
	}
	c := h.connect(connOpts{connectorID: "conn-a", target: "t-1"})
	h.waitRegistered(c.id(), true)
	if n := len(h.ctrl.Channels()); n != 1 {
		t.Errorf("%d channels registered, want only conn-a's", n)
	}
}

func TestCertIdentityBindings(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://acme/edge-9")
	other, _ := url.Parse("spiffe://acme/edge-10")
	state := func(cn string, uris ...*url.URL) *tls.ConnectionState {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, URIs: uris}
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
	}
	rules := []controller.CertRule{
		{Identity: "spiffe://acme/edge-*", Targets: []string{"edge/*"}},
		{Identity: "edge-*"},
	}
	tests := []struct {
		name      string
		bind      controller.CertBinding
		st        *tls.ConnectionState
		connector string
		target    string
		want      string // "" accepts
	}{
		{"cn", controller.BindCommonName, state("edge-7"), "edge-7", "anything", ""},
		{"cn other id", controller.BindCommonName, state("edge-7"), "edge-8", "t", "not the client certificate's common name"},
		{"cn missing", controller.BindCommonName, state(""), "", "t", "no common name"},
		{"cn not in rules", controller.BindCommonName, state("gw-1"), "gw-1", "t", `identity "gw-1" is not allowed`},
		{"uri", controller.BindURISAN, state("x", spiffe), "spiffe://acme/edge-9", "edge/a", ""},
		{"uri other target", controller.BindURISAN, state("x", spiffe), "spiffe://acme/edge-9", "core/a", `target "core/a" is not allowed`},
		{"uri other id", controller.BindURISAN, state("x", spiffe), "x", "edge/a", "not the client certificate's URI"},
		{"uri none", controller.BindURISAN, state("x"), "x", "edge/a", "0 URI"},
		{"uri two", controller.BindURISAN, state("x", spiffe, other), "spiffe://acme/edge-9", "edge/a", "2 URI"},
		{"none: rules on CN", controller.BindNone, state("edge-7"), "whatever", "t", ""},
		{"none: CN not in rules", controller.BindNone, state("gw-1"), "whatever", "t", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := controller.HelloRequest{ConnectorID: tt.connector, TargetID: tt.target, Metadata: map[string]string{},
				Peer: channel.PeerInfo{TLS: tt.st}}
			got, err := controller.CertIdentity(tt.bind, rules...).Authenticate(t.Context(), req)
			if tt.want == "" {
				if err != nil || got != tt.target {
					t.Fatalf("Authenticate() = %q, %v; want %q", got, err, tt.target)
				}
				return
			}
			if !errors.Is(err, controller.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Authenticate() = %q, %v; want a refusal saying %s", got, err, tt.want)
			}
		})
	}
}

// helloReply says HELLO on a fresh connection and returns the reply.
func helloReply(t *testing.T, d channel.Dialer, hello command.HelloPayload) *command.Reply {
	t.Helper()
	conn, err := d.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := command.MustCommand(command.TypeHello, hello)
	if err := conn.Send(&channel.Frame{Command: cmd}); err != nil {
		t.Fatal(err)
	}
	frames := recvUntilClosed(t, conn)
	if len(frames) != 1 || frames[0].Reply == nil {
		t.Fatalf("got frames %+v, want one reply", frames)
	}
	return frames[0].Reply
}
