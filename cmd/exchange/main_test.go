package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const defaultTestTimeout = 60 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDemoNarratesFailover(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"demo"}, &out, &errb); code != 0 {
		t.Fatalf("exchange demo exit code %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"PRIMARY of alpha is channel",
		"is now the PRIMARY of beta (epoch ", // epochs are cluster-wide: the value depends on alpha's elections
		"killing alpha-",
		"new primary of alpha elected",
		"knows it is the primary",
		`<- SUCCEEDED "still there?"`,
		`no channel for target "gamma"`,
		"batch rollout-1 (3 commands) stored for gamma, which has no connector",
		`gamma-1      <- ECHO "3. reboot"`,
		"batch rollout-1 SUCCEEDED, 0 retries used",
		"demo         done",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	// What the README says the demo runs: three targets, four connectors.
	connectors, targets := map[string]bool{}, map[string]bool{}
	for _, m := range regexp.MustCompile(`(\S+)\s+connecting as target (\S+)`).FindAllStringSubmatch(out.String(), -1) {
		connectors[m[1]], targets[m[2]] = true, true
	}
	if len(connectors) != 4 || len(targets) != 3 {
		t.Errorf("the demo ran %d connectors for %d targets (%v, %v); the README says four for three", len(connectors), len(targets), connectors, targets)
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	t.Setenv("EXCHANGE_LOG_LEVEL", "loud")
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"demo"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `--log-level "loud"`) {
		t.Fatalf("EXCHANGE_LOG_LEVEL=loud: exit %d, stderr %q; want exit 2 naming the flag", code, errb.String())
	}
}

// Cluster flags that cannot work are refused before anything starts.
func TestControllerRejectsClusterFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--in-memory", "--join", "127.0.0.1:7402"}, "--in-memory runs a single node"},
		{[]string{"--join", "127.0.0.1:7402"}, "a cluster needs --cluster-token"},
		{[]string{"--bootstrap-expect", "3"}, "a cluster needs --cluster-token"},
		{[]string{"--bootstrap-expect", "0"}, "--bootstrap-expect 0: at least 1"},
		{[]string{"--cluster-token", "s", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--raft-addr", "127.0.0.1:0"}, "--raft-addr \"127.0.0.1:0\": a cluster node needs a fixed port"},
	} {
		var out, errb bytes.Buffer
		code := run(t.Context(), append([]string{"controller"}, tc.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("controller %v: exit %d, stderr %q; want exit 2 saying %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestControllerRefusesDamagedDataDir: a data directory whose marker says it
// held state but whose raft.db is gone stops the controller with the damaged
// file and the recovery, instead of starting an empty node.
func TestControllerRefusesDamagedDataDir(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"node-id":            "n1\n",
		"exchange-data.json": `{"format":1,"nodeId":"n1","createdAt":"2026-01-02T03:04:05Z","appliedIndex":42}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"controller", "--data-dir", dir, "--raft-addr", "127.0.0.1:0",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, &out, &errb)
	db := filepath.Join(dir, "raft.db")
	if code != 1 || !strings.Contains(errb.String(), db) || !strings.Contains(errb.String(), "To recover") {
		t.Fatalf("controller on a data dir without raft.db: exit %d, stderr %q; want exit 1 naming %s and the recovery",
			code, errb.String(), db)
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("raft.db after the refused start: %v, want it still missing", err)
	}
}

func TestDemoClusterNarratesFailover(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"demo", "--cluster"}, &out, &errb); code != 0 {
		t.Fatalf("exchange demo --cluster exit code %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"cluster      formed: every node bootstrapped the same three voters; the leader is n",
		"alpha-1      connected to n", "(a follower)",
		"beta-1       connected to n", "(the leader)",
		"is now the PRIMARY of alpha",
		`-> ECHO to alpha: "hello from n`,
		"in one hop)",
		", the leader, as SIGTERM does",
		"cluster      new leader n",
		`<- SUCCEEDED "still there?" from beta`,
		`<- SUCCEEDED "still there?" from alpha`,
		"demo         done",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo --cluster output lacks %q:\n%s", want, out.String())
		}
	}
	if errb.Len() > 0 {
		t.Errorf("demo --cluster wrote to stderr:\n%s", errb.String())
	}
	t.Logf("demo --cluster:\n%s", out.String())
}
