package controller

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"path"
)

// TokenRule binds a connector token to the connector ids and targets it may
// use. Patterns are path.Match globs: '*' matches any run of characters but
// '/', '?' one character but '/', '[...]' a class; a pattern without
// metacharacters matches only itself.
type TokenRule struct {
	// Token is the secret the connector presents in HELLO. Not empty.
	Token string
	// Connector is the pattern the HELLO's connector id must match ("*":
	// any id, the empty one included).
	Connector string
	// Targets are the patterns of which the HELLO's target must match one.
	// Empty: any target.
	Targets []string
}

// Validate reports an empty token, an empty connector pattern and malformed
// patterns.
func (r TokenRule) Validate() error {
	if r.Token == "" {
		return errors.New("empty token")
	}
	if r.Connector == "" {
		return errors.New("no connector id pattern")
	}
	return validPatterns(append([]string{r.Connector}, r.Targets...))
}

// BoundTokens returns an Authenticator that accepts a HELLO whose token is
// one of rules' and whose connector id and target that rule allows. The
// token is compared with every rule's in constant time (over SHA-256
// digests, without early exit), so timing reveals neither which token
// matched nor the tokens' lengths. The target is kept as asked; an
// Authenticator that rewrites it must run before this one in a Chain.
// Refusals wrap ErrUnauthenticated and say what was not allowed, never which
// connector ids or targets are. It returns an error if a rule is invalid or
// two rules have the same token. With no rules it refuses everything.
func BoundTokens(rules ...TokenRule) (Authenticator, error) {
	type entry struct {
		sum  [sha256.Size]byte
		rule TokenRule
	}
	entries := make([]entry, len(rules))
	seen := make(map[[sha256.Size]byte]int, len(rules))
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("controller: token rule %d: %w", i+1, err)
		}
		sum := sha256.Sum256([]byte(r.Token))
		if j, dup := seen[sum]; dup {
			return nil, fmt.Errorf("controller: token rule %d: same token as rule %d", i+1, j+1)
		}
		seen[sum] = i
		entries[i] = entry{sum: sum, rule: r}
	}
	return AuthenticatorFunc(func(_ context.Context, req HelloRequest) (string, error) {
		if req.Token == "" {
			return "", fmt.Errorf("%w: no token", ErrUnauthenticated)
		}
		got := sha256.Sum256([]byte(req.Token))
		match := -1
		for i := range entries {
			eq := subtle.ConstantTimeCompare(got[:], entries[i].sum[:])
			match = subtle.ConstantTimeSelect(eq, i, match)
		}
		if match < 0 {
			return "", fmt.Errorf("%w: invalid token", ErrUnauthenticated)
		}
		r := entries[match].rule
		if !matchAny([]string{r.Connector}, req.ConnectorID) {
			return "", fmt.Errorf("%w: connector id %q is not allowed for this token", ErrUnauthenticated, req.ConnectorID)
		}
		if len(r.Targets) > 0 && !matchAny(r.Targets, req.TargetID) {
			return "", fmt.Errorf("%w: target %q is not allowed for connector %q with this token",
				ErrUnauthenticated, req.TargetID, req.ConnectorID)
		}
		return req.TargetID, nil
	}), nil
}

// validPatterns reports the first malformed path.Match pattern.
func validPatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return errors.New("empty pattern")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	return nil
}

// matchAny reports whether name matches one of patterns; a malformed
// pattern matches nothing.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}
