package main

import (
	"bytes"
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
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	t.Setenv("EXCHANGE_LOG_LEVEL", "loud")
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"demo"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `--log-level "loud"`) {
		t.Fatalf("EXCHANGE_LOG_LEVEL=loud: exit %d, stderr %q; want exit 2 naming the flag", code, errb.String())
	}
}

func TestControllerRejectsClusterFlags(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"controller", "--in-memory", "--join", "10.0.0.1:7402"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "multi-node") {
		t.Fatalf("controller --join: exit %d, stderr %q; want exit 2 explaining", code, errb.String())
	}
}
