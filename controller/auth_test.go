package controller_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/controller"
)

func TestStaticTokens(t *testing.T) {
	auth := controller.StaticTokens("alpha", "beta-longer-token")
	tests := []struct {
		token string
		ok    bool
	}{
		{"alpha", true},
		{"beta-longer-token", true},
		{"alph", false},
		{"alphaa", false},
		{"", false},
		{"ALPHA", false},
	}
	for _, tt := range tests {
		target, err := auth.Authenticate(t.Context(), controller.HelloRequest{TargetID: "t1", Token: tt.token})
		switch {
		case tt.ok && (err != nil || target != "t1"):
			t.Errorf("token %q: Authenticate() = %q, %v; want t1, nil", tt.token, target, err)
		case !tt.ok && !errors.Is(err, controller.ErrUnauthenticated):
			t.Errorf("token %q: Authenticate() = %q, %v; want ErrUnauthenticated", tt.token, target, err)
		}
	}
	if _, err := controller.StaticTokens().Authenticate(t.Context(), controller.HelloRequest{Token: "x"}); err == nil {
		t.Errorf("StaticTokens() with no tokens accepted a HELLO")
	}
}

func TestChain(t *testing.T) {
	rewrite := controller.AuthenticatorFunc(func(_ context.Context, req controller.HelloRequest) (string, error) {
		req.Metadata["exchange.step1"] = "done"
		return "tenant/" + req.TargetID, nil
	})
	var seen controller.HelloRequest
	record := controller.AuthenticatorFunc(func(_ context.Context, req controller.HelloRequest) (string, error) {
		seen = req
		return req.TargetID, nil
	})
	refuse := controller.AuthenticatorFunc(func(context.Context, controller.HelloRequest) (string, error) {
		return "", controller.ErrUnauthenticated
	})
	req := controller.HelloRequest{TargetID: "t1", Metadata: map[string]string{}}

	target, err := controller.Chain(rewrite, record).Authenticate(t.Context(), req)
	if err != nil || target != "tenant/t1" {
		t.Errorf("Chain(rewrite, record) = %q, %v", target, err)
	}
	if seen.TargetID != "tenant/t1" || seen.Metadata["exchange.step1"] != "done" {
		t.Errorf("second authenticator saw %+v, want the rewritten target and metadata", seen)
	}
	seen = controller.HelloRequest{}
	if _, err := controller.Chain(refuse, record).Authenticate(t.Context(), req); !errors.Is(err, controller.ErrUnauthenticated) {
		t.Errorf("Chain(refuse, record) = %v, want ErrUnauthenticated", err)
	}
	if seen.TargetID != "" {
		t.Errorf("Chain went on after a refusal")
	}
	if target, err := controller.Chain().Authenticate(t.Context(), req); err != nil || target != "t1" {
		t.Errorf("Chain() = %q, %v; want t1, nil", target, err)
	}
}

func TestCertIdentityRules(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://acme/edge-9")
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "edge-7"}, DNSNames: []string{"edge-7.acme.test"}, URIs: []*url.URL{spiffe}}
	verified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert}}}
	unverified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	noCN := &x509.Certificate{}
	noNames := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{noCN}, VerifiedChains: [][]*x509.Certificate{{noCN}}}

	tests := []struct {
		name       string
		bind       controller.CertBinding
		tls        *tls.ConnectionState
		connector  string
		target     string
		wantTarget string // "" with wantErr
		wantErr    bool
	}{
		{name: "no TLS", bind: controller.BindNone, target: "t1", wantErr: true},
		{name: "unverified certificate", bind: controller.BindNone, tls: unverified, target: "t1", wantErr: true},
		{name: "any verified cert, target kept", bind: controller.BindNone, tls: verified, target: "t1", wantTarget: "t1"},
		{name: "connector id = CN", bind: controller.BindConnectorID, tls: verified, connector: "edge-7", target: "t1", wantTarget: "t1"},
		{name: "connector id = DNS SAN", bind: controller.BindConnectorID, tls: verified, connector: "edge-7.acme.test", target: "t1", wantTarget: "t1"},
		{name: "connector id = URI SAN", bind: controller.BindConnectorID, tls: verified, connector: "spiffe://acme/edge-9", target: "t1", wantTarget: "t1"},
		{name: "connector id mismatch", bind: controller.BindConnectorID, tls: verified, connector: "edge-8", target: "t1", wantErr: true},
		{name: "empty connector id", bind: controller.BindConnectorID, tls: verified, target: "t1", wantErr: true},
		{name: "target from CN", bind: controller.BindTarget, tls: verified, wantTarget: "edge-7"},
		{name: "target matches SAN", bind: controller.BindTarget, tls: verified, target: "edge-7.acme.test", wantTarget: "edge-7.acme.test"},
		{name: "target mismatch", bind: controller.BindTarget, tls: verified, target: "edge-8", wantErr: true},
		{name: "cert names no target", bind: controller.BindTarget, tls: noNames, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := map[string]string{}
			req := controller.HelloRequest{ConnectorID: tt.connector, TargetID: tt.target, Metadata: md,
				Peer: channel.PeerInfo{Addr: "x", TLS: tt.tls}}
			got, err := controller.CertIdentity(tt.bind).Authenticate(t.Context(), req)
			if tt.wantErr {
				if !errors.Is(err, controller.ErrUnauthenticated) {
					t.Fatalf("Authenticate() = %q, %v; want ErrUnauthenticated", got, err)
				}
				return
			}
			if err != nil || got != tt.wantTarget {
				t.Fatalf("Authenticate() = %q, %v; want %q", got, err, tt.wantTarget)
			}
			if md[controller.MetadataTLSSubject] != "CN=edge-7" {
				t.Errorf("recorded subject = %q", md[controller.MetadataTLSSubject])
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []controller.Config{
		{HelloTimeout: -1}, {HealthInterval: -1}, {HealthTimeout: -1}, {HealthConcurrency: -1},
		{GoodByeTimeout: -1}, {ReconcileInterval: -1}, {PrimaryConcurrency: -1},
	} {
		if cfg.Validate() == nil {
			t.Errorf("Validate(%+v) = nil, want an error", cfg)
		}
		if _, err := controller.New(cfg, nil, nil); err == nil {
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
	if err := controller.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}
