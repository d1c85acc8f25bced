package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// waitExit waits for p to exit on its own and returns its exit code.
func (p *proc) waitExit(ctx context.Context) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.t.Fatalf("%s did not exit: %v", p.name, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

// With mutual TLS and no other flag, the connector id is bound to the client
// certificate's common name: conn-a's certificate cannot register as conn-b
// (which would then be sent conn-b's commands), only as conn-a.
func TestEndToEndCertificateBindsConnectorID(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	p := newPKI(t, t.TempDir(), "conn-a")
	ctrl, grpcAddr, _ := startController(ctx, t, "--in-memory",
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca)
	tlsArgs := []string{"--controller", grpcAddr, "--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey}

	impostor := start(t, "impostor", append([]string{"connector", "--target", "t-1", "--id", "conn-b"}, tlsArgs...)...)
	impostor.waitLine(ctx, 0, regexp.MustCompile(`hello rejected.*"conn-b".*certificate`))
	if code := impostor.waitExit(ctx); code != 4 {
		t.Errorf("connector conn-b with conn-a's certificate exited %d, want 4 (refused)", code)
	}

	conn := start(t, "conn-a", append([]string{"connector", "--target", "t-1", "--id", "conn-a"}, tlsArgs...)...)
	conn.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=conn-a target=t-1`))
	conn.stop(ctx)
	ctrl.stop(ctx)
}

// A tokens file binds each token to connector ids and targets, and a cert:
// line restricts the targets of a certificate identity.
func TestEndToEndTokensFile(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	dir := t.TempDir()
	p := newPKI(t, dir, "conn-a")
	file := filepath.Join(dir, "tokens")
	if err := os.WriteFile(file, []byte("# token  connector  targets\ntok-a conn-a t-*\ntok-b conn-b t-*\ncert:conn-a t-*\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrl, grpcAddr, _ := startController(ctx, t, "--in-memory", "--tokens-file", file,
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca)
	tlsArgs := []string{"--controller", grpcAddr, "--tls-ca", p.ca, "--tls-cert", p.clientCert, "--tls-key", p.clientKey}

	refused := []struct{ name, id, token, target, why string }{
		{"token-of-conn-b", "conn-b", "tok-b", "t-1", `hello rejected.*"conn-b".*certificate`},
		{"token-not-own", "conn-a", "tok-b", "t-1", `hello rejected.*connector id "conn-a" is not allowed`},
		{"target-not-allowed", "conn-a", "tok-a", "other", `hello rejected.*target "other" is not allowed`},
	}
	for _, r := range refused {
		c := start(t, r.name, append([]string{"connector", "--target", r.target, "--id", r.id, "--token", r.token}, tlsArgs...)...)
		c.waitLine(ctx, 0, regexp.MustCompile(r.why))
		if code := c.waitExit(ctx); code != 4 {
			t.Errorf("%s: exit %d, want 4 (refused)", r.name, code)
		}
	}
	conn := start(t, "conn-a", append([]string{"connector", "--target", "t-1", "--id", "conn-a", "--token", "tok-a"}, tlsArgs...)...)
	conn.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=conn-a target=t-1`))
	conn.stop(ctx)
	ctrl.stop(ctx)
}

// A malformed tokens file, or credential flags that do not fit together,
// stop the controller at start with exit code 2, saying why.
func TestControllerRefusesBadCredentialFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	malformed := write("malformed", "tok-a conn-a\n\ntok-b conn-[\n")
	empty := write("empty", "# nobody\n")
	certs := write("certs", "cert:conn-a t-*\n")
	dup := write("dup", "tok-a conn-a\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--tokens-file", malformed}, `tokens-file.*line 3: pattern "conn-\[": syntax error`},
		{[]string{"--tokens-file", filepath.Join(dir, "missing")}, `tokens-file.*no such file`},
		{[]string{"--tokens-file", empty}, `holds no rules`},
		{[]string{"--tokens-file", certs}, `cert: lines: they need --tls-client-ca`},
		{[]string{"--tokens-file", dup, "--token", "tok-a"}, `same token`},
		{[]string{"--tls-identity", "cn"}, `--tls-identity needs --tls-client-ca`},
		{[]string{"--tls-identity", "dn"}, `--tls-identity "dn": want cn, san-uri or none`},
	}
	for _, tt := range tests {
		var out, errb strings.Builder
		args := append([]string{"controller", "--in-memory", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, tt.args...)
		code := run(t.Context(), args, &out, &errb)
		if code != 2 || !regexp.MustCompile(tt.want).MatchString(errb.String()) {
			t.Errorf("controller %v: exit %d, stderr %q; want 2 and %q", tt.args, code, errb.String(), tt.want)
		}
		if strings.Contains(errb.String(), "tok-") {
			t.Errorf("controller %v: stderr %q quotes a token", tt.args, errb.String())
		}
	}
}

// SIGHUP reads the tokens file again: a malformed file keeps the rules in
// force, a good one replaces them for the HELLOs that follow.
func TestEndToEndTokensFileReload(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	file := filepath.Join(t.TempDir(), "tokens")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tok-a conn-a t-*\n")
	ctrl, grpcAddr, _ := startController(ctx, t, "--in-memory", "--tokens-file", file)
	_, next := ctrl.waitLine(ctx, 0, regexp.MustCompile(`^connector credentials: .*1 token rules, 0 cert rules`))
	hup := func() {
		t.Helper()
		if err := ctrl.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	write("tok-b conn-[\n")
	hup()
	_, next = ctrl.waitLine(ctx, next, regexp.MustCompile(`tokens file not reloaded.*line 1`))
	a := start(t, "conn-a", "connector", "--controller", grpcAddr, "--target", "t-1", "--id", "conn-a", "--token", "tok-a")
	a.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=conn-a target=t-1`))

	write("tok-b conn-b t-*\n")
	hup()
	ctrl.waitLine(ctx, next, regexp.MustCompile(`^connector credentials reloaded: .*1 token rules`))
	b := start(t, "conn-b", "connector", "--controller", grpcAddr, "--target", "t-2", "--id", "conn-b", "--token", "tok-b")
	b.waitLine(ctx, 0, regexp.MustCompile(`^PRIMARY connector=conn-b target=t-2`))
	old := start(t, "old-token", "connector", "--controller", grpcAddr, "--target", "t-1", "--id", "conn-a", "--token", "tok-a")
	old.waitLine(ctx, 0, regexp.MustCompile(`hello rejected.*invalid token`))
	if code := old.waitExit(ctx); code != 4 {
		t.Errorf("connector with the removed token exited %d, want 4 (refused)", code)
	}
	a.stop(ctx)
	b.stop(ctx)
	ctrl.stop(ctx)
}
