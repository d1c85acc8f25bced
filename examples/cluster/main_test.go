package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, t.TempDir(), &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	want := regexp.MustCompile(`^cluster formed, leader (n\d)
READ sent on (n\d), answered through (n\d): SUCCEEDED {"celsius":21.5}
leader (n\d) stopped; (n\d) elected \d+(\.\d+)?m?s after
READ sent on (n\d), answered through (n\d): SUCCEEDED {"celsius":21.5}
$`)
	m := want.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output does not tell the story:\n%s", out.String())
	}
	leader, via, at, stopped, next := m[1], m[2], m[3], m[4], m[5]
	if via == at || via == leader || at == leader || stopped != leader || next == leader {
		t.Errorf("leader %s, sent on %s through %s, stopped %s, next %s: want a forward between followers and a new leader",
			leader, via, at, stopped, next)
	}
	t.Log("\n" + out.String())
}
