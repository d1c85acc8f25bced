package controller

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
)

// CertRulePrefix starts the lines of a credentials file that restrict a
// certificate identity (see ParseCredentials).
const CertRulePrefix = "cert:"

// Credentials are the connector credentials of a credentials file: tokens
// bound to connector ids and targets (for BoundTokens) and target
// restrictions of certificate identities (for CertIdentity).
type Credentials struct {
	Tokens []TokenRule
	Certs  []CertRule
}

// CredentialsError is ParseCredentials' error: what is wrong, and on which
// line (1-based). It never quotes a token.
type CredentialsError struct {
	Line int
	Err  error
}

func (e *CredentialsError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the cause.
func (e *CredentialsError) Unwrap() error { return e.Err }

// ParseCredentials reads a credentials file. Each line is one rule, its
// fields separated by spaces or tabs:
//
//	# a comment: the whole line
//	TOKEN CONNECTOR-ID-PATTERN [TARGET-PATTERN...]
//	cert:IDENTITY-PATTERN [TARGET-PATTERN...]
//
// A token line lets the connector presenting TOKEN in its HELLO use a
// connector id matching CONNECTOR-ID-PATTERN and a target matching one of the
// TARGET-PATTERNs (any target when there are none). A cert: line lets a
// client certificate whose identity matches IDENTITY-PATTERN serve the
// targets matching one of its TARGET-PATTERNs (any when there are none);
// once there is a cert: line, a certificate matching none is refused.
// Patterns are path.Match globs ('*' does not match '/'). Blank lines are
// skipped; '#' starts a comment only at the start of a line (a field
// starting with '#' elsewhere is an error, so "TOKEN id # note" is not
// mistaken for target patterns). A token cannot start with '#' or "cert:".
//
// It refuses, with a *CredentialsError naming the line: a token line without
// a connector id pattern, an empty cert: identity, a malformed pattern, a
// token or cert: identity already given on an earlier line, and a line
// longer than 64 KiB.
func ParseCredentials(r io.Reader) (Credentials, error) {
	var (
		creds  Credentials
		tokens = map[[sha256.Size]byte]int{} // token digest → line
		certs  = map[string]int{}            // identity pattern → line
	)
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		fail := func(format string, args ...any) error {
			return &CredentialsError{Line: n, Err: fmt.Errorf(format, args...)}
		}
		for _, f := range fields[1:] {
			if strings.HasPrefix(f, "#") {
				return Credentials{}, fail("%q: a comment must start the line", f)
			}
		}
		if id, ok := strings.CutPrefix(fields[0], CertRulePrefix); ok {
			rule := CertRule{Identity: id, Targets: fields[1:]}
			if id == "" {
				return Credentials{}, fail("%s needs a certificate identity pattern right after it (cert:conn-a)", CertRulePrefix)
			}
			if err := rule.Validate(); err != nil {
				return Credentials{}, fail("%w", err)
			}
			if prev, dup := certs[id]; dup {
				return Credentials{}, fail("%s%s is already on line %d", CertRulePrefix, id, prev)
			}
			certs[id] = n
			creds.Certs = append(creds.Certs, rule)
			continue
		}
		if len(fields) < 2 {
			return Credentials{}, fail("a token needs a connector id pattern after it (TOKEN CONNECTOR-ID-PATTERN [TARGET-PATTERN...])")
		}
		rule := TokenRule{Token: fields[0], Connector: fields[1], Targets: fields[2:]}
		if err := rule.Validate(); err != nil {
			return Credentials{}, fail("%w", err)
		}
		sum := sha256.Sum256([]byte(rule.Token))
		if prev, dup := tokens[sum]; dup {
			return Credentials{}, fail("the same token is already on line %d", prev)
		}
		tokens[sum] = n
		creds.Tokens = append(creds.Tokens, rule)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Credentials{}, &CredentialsError{Line: n + 1, Err: err}
		}
		return Credentials{}, fmt.Errorf("controller: read credentials: %w", err)
	}
	return creds, nil
}
