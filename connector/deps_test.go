package connector_test

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNoForbiddenDependencies keeps the connector light enough to embed in
// an edge agent: it must not pull in, even transitively, the controller's
// cluster and management stack (tailscale's deptest; depguard sees only
// direct imports).
func TestNoForbiddenDependencies(t *testing.T) {
	ctx := testContext(t)
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", ".").Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/exchangekit/exchange/channel") {
		t.Fatalf("go list -deps did not list the channel package; got %v", deps)
	}
	forbidden := []string{
		"github.com/hashicorp/raft", // also raft-boltdb
		"github.com/hashicorp/memberlist",
		"go.etcd.io/bbolt",
		"github.com/boltdb/bolt",
		"github.com/labstack/echo",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("connector depends on %s (forbidden: %s)", d, f)
			}
		}
	}
}
