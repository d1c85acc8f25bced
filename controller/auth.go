package controller

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"

	"github.com/exchangekit/exchange/channel"
)

// ReservedMetadataPrefix starts the channel metadata keys that only the
// controller and its Authenticators may set (for example
// "exchange.tls.subject"). The controller removes such keys from the
// metadata a connector sends in its HELLO, so a connector cannot forge them.
const ReservedMetadataPrefix = "exchange."

// MetadataTLSSubject is the channel metadata key under which CertIdentity
// records the subject of the connector's verified client certificate.
const MetadataTLSSubject = ReservedMetadataPrefix + "tls.subject"

// HelloRequest is what an Authenticator decides on: the connector's HELLO and
// the transport's view of the peer.
type HelloRequest struct {
	// ConnectorID is the connector's own id (may be empty).
	ConnectorID string
	// TargetID is the target the connector asks to serve; earlier
	// Authenticators of a Chain may have rewritten it.
	TargetID string
	// Token is the connector's credential, if any.
	Token string
	// Metadata is the connector's metadata, copied, with reserved keys
	// (ReservedMetadataPrefix) removed. An Authenticator may add entries,
	// reserved ones included; they are stored with the channel.
	Metadata map[string]string
	// ProtocolVersion is the highest protocol version the connector speaks.
	ProtocolVersion int
	// Peer is the transport's description of the connection (address, TLS
	// state).
	Peer channel.PeerInfo
}

// Authenticator decides whether a connector may open a channel. It returns
// the target the channel serves: normally req.TargetID, or a rewritten one
// (for example a target derived from the credential). To refuse, return an
// error wrapping ErrUnauthenticated: its text is sent to the connector.
// Other errors also refuse, but the connector is only told that
// authentication failed (the detail is logged). Authenticate runs within the
// handshake deadline (Config.HelloTimeout) and must honour ctx. It is called
// concurrently for different connections.
type Authenticator interface {
	Authenticate(ctx context.Context, req HelloRequest) (targetID string, err error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, req HelloRequest) (string, error)

// Authenticate calls f(ctx, req).
func (f AuthenticatorFunc) Authenticate(ctx context.Context, req HelloRequest) (string, error) {
	return f(ctx, req)
}

// StaticTokens returns an Authenticator that accepts a HELLO whose token is
// one of tokens, compared in constant time (over SHA-256 digests, so neither
// the matching token nor the tokens' lengths leak through timing). The target
// is kept as asked. With no tokens it refuses everything. Refusals wrap
// ErrUnauthenticated.
func StaticTokens(tokens ...string) Authenticator {
	sums := make([][sha256.Size]byte, 0, len(tokens))
	for _, t := range tokens {
		sums = append(sums, sha256.Sum256([]byte(t)))
	}
	return AuthenticatorFunc(func(_ context.Context, req HelloRequest) (string, error) {
		got := sha256.Sum256([]byte(req.Token))
		ok := 0
		for i := range sums {
			ok |= subtle.ConstantTimeCompare(got[:], sums[i][:])
		}
		if ok != 1 || req.Token == "" {
			if req.Token == "" {
				return "", fmt.Errorf("%w: no token", ErrUnauthenticated)
			}
			return "", fmt.Errorf("%w: invalid token", ErrUnauthenticated)
		}
		return req.TargetID, nil
	})
}

// Chain returns an Authenticator that runs auths in order; all must accept.
// Each sees the target chosen by the previous one (in HelloRequest.TargetID)
// and may rewrite it again; the last one's target wins. Metadata added by one
// is visible to the next. An empty Chain accepts every HELLO.
func Chain(auths ...Authenticator) Authenticator {
	return AuthenticatorFunc(func(ctx context.Context, req HelloRequest) (string, error) {
		for _, a := range auths {
			if a == nil {
				continue
			}
			target, err := a.Authenticate(ctx, req)
			if err != nil {
				return "", err
			}
			req.TargetID = target
		}
		return req.TargetID, nil
	})
}

// stripReserved copies md without the reserved keys.
func stripReserved(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if !strings.HasPrefix(k, ReservedMetadataPrefix) {
			out[k] = v
		}
	}
	return out
}
