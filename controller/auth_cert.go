package controller

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
)

// CertBinding says what CertIdentity ties to the client certificate, beyond
// requiring one.
type CertBinding int

// Cert bindings.
const (
	// BindNone accepts any verified client certificate and only records its
	// subject; the connector id and target are taken from the HELLO as sent.
	BindNone CertBinding = iota
	// BindConnectorID requires the HELLO's connector id to be one of the
	// certificate's names (see CertIdentity).
	BindConnectorID
	// BindTarget makes the certificate decide the target: a HELLO target must
	// be one of the certificate's names, and an empty HELLO target becomes
	// the certificate's first name.
	BindTarget
)

// CertIdentity returns an Authenticator for mutual TLS. It requires a client
// certificate that the TLS stack verified (HelloRequest.Peer.TLS with at
// least one verified chain: configure the listener with
// tls.RequireAndVerifyClientCert), records the certificate's subject in the
// channel metadata under MetadataTLSSubject, and applies bind.
//
// A certificate's names are, in order: its subject common name, its DNS
// subject alternative names, then its URI subject alternative names.
//
// Combine it with other checks through Chain, for example
// Chain(CertIdentity(BindTarget), StaticTokens(...)). Refusals wrap
// ErrUnauthenticated.
func CertIdentity(bind CertBinding) Authenticator {
	return AuthenticatorFunc(func(_ context.Context, req HelloRequest) (string, error) {
		st := req.Peer.TLS
		if st == nil {
			return "", fmt.Errorf("%w: a TLS client certificate is required", ErrUnauthenticated)
		}
		if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
			return "", fmt.Errorf("%w: no verified TLS client certificate", ErrUnauthenticated)
		}
		cert := st.PeerCertificates[0]
		names := certNames(cert)
		if req.Metadata != nil {
			req.Metadata[MetadataTLSSubject] = cert.Subject.String()
		}
		switch bind {
		case BindConnectorID:
			if !slices.Contains(names, req.ConnectorID) {
				return "", fmt.Errorf("%w: connector id %q does not match the client certificate %q",
					ErrUnauthenticated, req.ConnectorID, cert.Subject.String())
			}
		case BindTarget:
			if req.TargetID == "" {
				if len(names) == 0 {
					return "", fmt.Errorf("%w: the client certificate %q names no target",
						ErrUnauthenticated, cert.Subject.String())
				}
				return names[0], nil
			}
			if !slices.Contains(names, req.TargetID) {
				return "", fmt.Errorf("%w: target %q does not match the client certificate %q",
					ErrUnauthenticated, req.TargetID, cert.Subject.String())
			}
		}
		return req.TargetID, nil
	})
}

// certNames lists cert's identities: CN, DNS SANs, URI SANs (empty ones
// skipped).
func certNames(cert *x509.Certificate) []string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	for _, n := range cert.DNSNames {
		if n != "" {
			names = append(names, n)
		}
	}
	for _, u := range cert.URIs {
		if u != nil {
			names = append(names, u.String())
		}
	}
	return names
}
