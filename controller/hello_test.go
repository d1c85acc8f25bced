package controller_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/channel/embedded"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// recvUntilClosed reads frames until the conn fails, and returns them.
func recvUntilClosed(t *testing.T, conn channel.Conn) []*channel.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	var got []*channel.Frame
	for {
		f, err := conn.Recv()
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("conn still open after %s", testTimeout)
			}
			if !errors.Is(err, channel.ErrClosed) {
				t.Errorf("Recv() = %v, want ErrClosed", err)
			}
			return got
		}
		got = append(got, f)
	}
}

// A first frame that is not HELLO gets a clear ERROR reply and the conn is
// closed (reference weakness 24: the refused socket must not linger).
func TestHelloGating(t *testing.T) {
	cfg := fastConfig()
	cfg.HelloTimeout = 200 * time.Millisecond // also bounds how long a refused conn lingers
	h := newHarness(t, cfg)
	conn, err := h.dialer.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := command.MustCommand("ECHO", nil)
	if err := conn.Send(&channel.Frame{Command: cmd}); err != nil {
		t.Fatal(err)
	}
	frames := recvUntilClosed(t, conn)
	if len(frames) != 1 || frames[0].Reply == nil {
		t.Fatalf("got frames %+v, want one reply", frames)
	}
	r := frames[0].Reply
	if r.CommandID != cmd.ID || r.Status != command.StatusError || !strings.Contains(r.Error, "Hello") {
		t.Errorf("reply = %+v, want an ERROR naming the HELLO requirement", r)
	}
	h.waitFor("metric", func() bool { return h.metrics.count("hello:protocol") == 1 })
	if n := len(h.ctrl.Channels()); n != 0 {
		t.Errorf("%d channels registered", n)
	}
}

func TestHelloWithoutTarget(t *testing.T) {
	h := newHarness(t, fastConfig())
	_, err := h.dial(t.Context(), connOpts{})
	var rej *channel.HelloRejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "targetId") {
		t.Fatalf("dial without target = %v, want a HelloRejectedError naming targetId", err)
	}
	h.waitFor("metric", func() bool { return h.metrics.count("hello:protocol") == 1 })
}

func TestHelloWrongToken(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.StaticTokens("s3cret", "other")
	h := newHarness(t, cfg)

	_, err := h.dial(t.Context(), connOpts{target: "t1", token: "wrong"})
	var rej *channel.HelloRejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "invalid token") {
		t.Fatalf("dial with a wrong token = %v, want a HelloRejectedError saying invalid token", err)
	}
	h.waitFor("metric", func() bool { return h.metrics.count("hello:unauthenticated") == 1 })

	c := h.connect(connOpts{target: "t1", token: "other"})
	h.waitRegistered(c.id(), true)
	if n := len(h.ctrl.Channels()); n != 1 {
		t.Errorf("%d channels registered, want only the authenticated one", n)
	}
}

// An authenticator error that is not ErrUnauthenticated refuses too, without
// leaking its detail to the connector.
func TestHelloAuthenticatorFailure(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.AuthenticatorFunc(func(context.Context, controller.HelloRequest) (string, error) {
		return "", errors.New("ldap down at 10.0.0.7")
	})
	h := newHarness(t, cfg)
	_, err := h.dial(t.Context(), connOpts{target: "t1"})
	var rej *channel.HelloRejectedError
	if !errors.As(err, &rej) || strings.Contains(rej.Reason, "ldap") || !strings.Contains(rej.Reason, "authentication failed") {
		t.Fatalf("dial = %v, want a generic refusal", err)
	}
}

// The authenticator may rewrite the target; reserved metadata from the
// connector is dropped, the authenticator's kept.
func TestHelloTargetRewriteAndMetadata(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.AuthenticatorFunc(func(_ context.Context, req controller.HelloRequest) (string, error) {
		req.Metadata["exchange.tenant"] = "acme"
		return "acme/" + req.TargetID, nil
	})
	h := newHarness(t, cfg)
	c := h.connect(connOpts{target: "t1", metadata: map[string]string{"exchange.tls.subject": "forged", "zone": "eu"}})
	if c.hello.TargetID != "acme/t1" {
		t.Fatalf("hello target = %q, want the rewritten one", c.hello.TargetID)
	}
	h.waitRegistered(c.id(), true)
	info, _ := h.ctrl.Channel(c.id())
	want := map[string]string{"exchange.tenant": "acme", "zone": "eu"}
	if len(info.Metadata) != len(want) || info.Metadata["exchange.tenant"] != "acme" || info.Metadata["zone"] != "eu" {
		t.Errorf("metadata = %v, want %v", info.Metadata, want)
	}
	if info.TargetID != "acme/t1" {
		t.Errorf("registered target = %q", info.TargetID)
	}
}

func TestHelloTimeout(t *testing.T) {
	cfg := fastConfig()
	cfg.HelloTimeout = 50 * time.Millisecond
	h := newHarness(t, cfg)
	conn, err := h.dialer.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if frames := recvUntilClosed(t, conn); len(frames) != 0 {
		t.Errorf("got %d frames from a silent handshake", len(frames))
	}
	h.waitFor("metric", func() bool { return h.metrics.count("hello:timeout") == 1 })
}

// tlsListener hands out conns that report a TLS peer, as the gRPC twin does
// under mTLS.
type tlsListener struct {
	*embedded.Listener
	st *tls.ConnectionState
}

func (l tlsListener) Accept(ctx context.Context) (channel.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return tlsConn{Conn: c, st: l.st}, nil
}

type tlsConn struct {
	channel.Conn
	st *tls.ConnectionState
}

func (c tlsConn) PeerInfo() channel.PeerInfo {
	return channel.PeerInfo{Addr: "10.1.2.3:5555", TLS: c.st}
}

func verifiedState(cn string, dns ...string) *tls.ConnectionState {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"Acme"}}, DNSNames: dns}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
}

func TestCertIdentity(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.CertIdentity(controller.BindTarget)
	el := embedded.Listen()
	h := newHarness(t, cfg, harnessOpts{lis: tlsListener{Listener: el, st: verifiedState("edge-7")}, dial: el})

	c := h.connect(connOpts{connectorID: "gw-1"}) // no target: the certificate names it
	if c.hello.TargetID != "edge-7" {
		t.Fatalf("hello target = %q, want the certificate's CN", c.hello.TargetID)
	}
	h.waitRegistered(c.id(), true)
	info, _ := h.ctrl.Channel(c.id())
	if got := info.Metadata[controller.MetadataTLSSubject]; got != "CN=edge-7,O=Acme" {
		t.Errorf("recorded subject = %q", got)
	}
	if info.RemoteAddr != "10.1.2.3:5555" {
		t.Errorf("RemoteAddr = %q", info.RemoteAddr)
	}

	_, err := h.dial(t.Context(), connOpts{target: "edge-8"})
	if !errors.As(err, new(*channel.HelloRejectedError)) {
		t.Errorf("dial for another target = %v, want a rejection", err)
	}
}

func TestCertIdentityNeedsTLS(t *testing.T) {
	cfg := fastConfig()
	cfg.Authenticator = controller.CertIdentity(controller.BindNone)
	h := newHarness(t, cfg) // plain embedded: no TLS
	_, err := h.dial(t.Context(), connOpts{target: "t1"})
	var rej *channel.HelloRejectedError
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "certificate") {
		t.Fatalf("dial without TLS = %v, want a rejection naming the certificate", err)
	}
	h.waitFor("metric", func() bool { return h.metrics.count("hello:unauthenticated") == 1 })
}
