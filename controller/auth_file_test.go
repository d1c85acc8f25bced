package controller_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/controller"
)

func TestParseCredentials(t *testing.T) {
	const file = `# connector tokens
tok-a   conn-a  t-*  site/?
	tok-b	edge-*

# certificates
cert:conn-a t-*
cert:spiffe://acme/edge-*
`
	got, err := controller.ParseCredentials(strings.NewReader(file))
	if err != nil {
		t.Fatalf("ParseCredentials() = %v", err)
	}
	want := controller.Credentials{
		Tokens: []controller.TokenRule{
			{Token: "tok-a", Connector: "conn-a", Targets: []string{"t-*", "site/?"}},
			{Token: "tok-b", Connector: "edge-*", Targets: []string{}},
		},
		Certs: []controller.CertRule{
			{Identity: "conn-a", Targets: []string{"t-*"}},
			{Identity: "spiffe://acme/edge-*", Targets: []string{}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseCredentials() mismatch (-want +got):\n%s", diff)
	}

	empty, err := controller.ParseCredentials(strings.NewReader("\n# nothing\n"))
	if err != nil || len(empty.Tokens)+len(empty.Certs) != 0 {
		t.Errorf("ParseCredentials(comments only) = %+v, %v", empty, err)
	}
}

func TestParseCredentialsMalformed(t *testing.T) {
	tests := []struct {
		name, file string
		line       int
		want       string // in the error
	}{
		{"token without connector", "tok-a conn-a\nsecret-b\n", 2, "connector id pattern"},
		{"bad connector pattern", "# c\n\ntok-a conn-[\n", 3, "syntax error in pattern"},
		{"bad target pattern", "tok-a conn-a t-[a-\n", 1, "syntax error in pattern"},
		{"duplicate token", "tok-a conn-a\ntok-b conn-b\ntok-a conn-c\n", 3, "already on line 1"},
		{"cert without identity", "cert: t-*\n", 1, "identity"},
		{"bad cert identity", "cert:conn-[ t-*\n", 1, "syntax error in pattern"},
		{"bad cert target", "cert:conn-a [\n", 1, "syntax error in pattern"},
		{"duplicate cert", "cert:conn-a t-1\ntok-a conn-a\ncert:conn-a t-2\n", 3, "already on line 1"},
		{"trailing comment", "tok-a conn-a t-* # site 1\n", 1, "comment must start the line"},
		{"line too long", "tok-a conn-a\n" + strings.Repeat("x", 70<<10) + "\n", 2, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := controller.ParseCredentials(strings.NewReader(tt.file))
			var ce *controller.CredentialsError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseCredentials() = %v, want a *CredentialsError", err)
			}
			if ce.Line != tt.line || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCredentials() = %q (line %d), want line %d and %q", err, ce.Line, tt.line, tt.want)
			}
			if strings.Contains(err.Error(), "tok-a") || strings.Contains(err.Error(), "secret-b") {
				t.Errorf("error %q quotes a token", err)
			}
		})
	}
}
