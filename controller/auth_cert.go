package controller

import (
	"context"
	"crypto/x509"
	"errors"
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
	// Any certificate from the CA can then claim any connector id.
	BindNone CertBinding = iota
	// BindConnectorID requires the HELLO's connector id to be one of the
	// certificate's names (see CertIdentity).
	BindConnectorID
	// BindTarget makes the certificate decide the target: a HELLO target must
	// be one of the certificate's names, and an empty HELLO target becomes
	// the certificate's first name.
	BindTarget
	// BindCommonName requires the HELLO's connector id to be exactly the
	// certificate's subject common name (and the certificate to have one).
	BindCommonName
	// BindURISAN requires the certificate to carry exactly one URI subject
	// alternative name (a SPIFFE id, for example) and the HELLO's connector
	// id to be exactly that URI.
	BindURISAN
)

// String returns the binding's name as the --tls-identity flag spells it
// where there is one ("none", "cn", "san-uri").
func (b CertBinding) String() string {
	switch b {
	case BindNone:
		return "none"
	case BindConnectorID:
		return "connector-id"
	case BindTarget:
		return "target"
	case BindCommonName:
		return "cn"
	case BindURISAN:
		return "san-uri"
	}
	return fmt.Sprintf("CertBinding(%d)", int(b))
}

// CertRule restricts the targets a certificate identity may serve. Patterns
// are path.Match globs, as in TokenRule.
type CertRule struct {
	// Identity is the pattern the certificate's identity must match (see
	// CertIdentity for what the identity is).
	Identity string
	// Targets are the patterns of which the HELLO's target must match one.
	// Empty: any target.
	Targets []string
}

// Validate reports an empty identity pattern and malformed patterns.
func (r CertRule) Validate() error {
	if r.Identity == "" {
		return errors.New("empty certificate identity")
	}
	return validPatterns(append([]string{r.Identity}, r.Targets...))
}

// CertIdentity returns an Authenticator for mutual TLS. It requires a client
// certificate that the TLS stack verified (HelloRequest.Peer.TLS with at
// least one verified chain: configure the listener with
// tls.RequireAndVerifyClientCert), records the certificate's subject in the
// channel metadata under MetadataTLSSubject, and applies bind.
//
// A certificate's names are, in order: its subject common name, its DNS
// subject alternative names, then its URI subject alternative names.
//
// With rules, the certificate's identity must also match the Identity of
// one of them, and the target (after bind) one of that rule's Targets; the
// first rule whose Identity matches applies, in order. The identity is the
// connector id that bind checked: the common name (BindCommonName), the URI
// (BindURISAN), the matched name (BindConnectorID); with BindNone and
// BindTarget it is the common name. Without rules every identity may serve
// every target. A malformed pattern matches nothing (check rules with
// CertRule.Validate, as ParseCredentials does).
//
// Combine it with other checks through Chain, for example
// Chain(CertIdentity(BindTarget), StaticTokens(...)). Refusals wrap
// ErrUnauthenticated.
func CertIdentity(bind CertBinding, rules ...CertRule) Authenticator {
	rules = slices.Clone(rules)
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
		subject := cert.Subject.String()
		if req.Metadata != nil {
			req.Metadata[MetadataTLSSubject] = subject
		}
		identity := cert.Subject.CommonName
		target := req.TargetID
		switch bind {
		case BindConnectorID:
			if !slices.Contains(names, req.ConnectorID) {
				return "", fmt.Errorf("%w: connector id %q does not match the client certificate %q",
					ErrUnauthenticated, req.ConnectorID, subject)
			}
			identity = req.ConnectorID
		case BindTarget:
			if target == "" {
				if len(names) == 0 {
					return "", fmt.Errorf("%w: the client certificate %q names no target",
						ErrUnauthenticated, subject)
				}
				target = names[0]
			} else if !slices.Contains(names, target) {
				return "", fmt.Errorf("%w: target %q does not match the client certificate %q",
					ErrUnauthenticated, target, subject)
			}
		case BindCommonName:
			if identity == "" {
				return "", fmt.Errorf("%w: the client certificate %q has no common name to bind the connector id to",
					ErrUnauthenticated, subject)
			}
			if req.ConnectorID != identity {
				return "", fmt.Errorf("%w: connector id %q is not the client certificate's common name %q",
					ErrUnauthenticated, req.ConnectorID, identity)
			}
		case BindURISAN:
			if len(cert.URIs) != 1 || cert.URIs[0] == nil {
				return "", fmt.Errorf("%w: the client certificate %q has %d URI subject alternative names, want exactly one to bind the connector id to",
					ErrUnauthenticated, subject, len(cert.URIs))
			}
			identity = cert.URIs[0].String()
			if req.ConnectorID != identity {
				return "", fmt.Errorf("%w: connector id %q is not the client certificate's URI %q",
					ErrUnauthenticated, req.ConnectorID, identity)
			}
		}
		if len(rules) > 0 {
			i := slices.IndexFunc(rules, func(r CertRule) bool { return matchAny([]string{r.Identity}, identity) })
			if i < 0 {
				return "", fmt.Errorf("%w: the client certificate identity %q is not allowed to connect",
					ErrUnauthenticated, identity)
			}
			if r := rules[i]; len(r.Targets) > 0 && !matchAny(r.Targets, target) {
				return "", fmt.Errorf("%w: target %q is not allowed for the client certificate identity %q",
					ErrUnauthenticated, target, identity)
			}
		}
		return target, nil
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
