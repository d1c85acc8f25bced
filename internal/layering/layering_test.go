package layering

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const module = "github.com/exchangekit/exchange"

// rules says, for each package of the module (a prefix matches it and its
// subpackages, unless a longer prefix has a rule of its own), which module
// packages and which third-party modules it must never depend on, directly
// or not. This is the dependency direction of ARCHITECTURE §2:
//
//	command ← channel ← twins ← connector
//	controller depends on channel, batch, state and the cluster slice it
//	declares itself, never on cluster's implementation, raft or memberlist;
//	management declares the read interfaces it needs; cmd wires everything;
//	nothing imports cmd.
var rules = []struct {
	pkg       string
	forbidden []string
	stdOnly   bool // nothing outside the standard library
}{
	{pkg: "command", stdOnly: true},
	{pkg: "internal/jsonlimit", stdOnly: true},
	{pkg: "internal/testlog", stdOnly: true},
	{pkg: "internal/testproxy", stdOnly: true},
	{pkg: "internal/backoff", stdOnly: true},
	{pkg: "internal/queue", stdOnly: true},
	{pkg: "internal/logthrottle", stdOnly: true},
	{pkg: "channel", forbidden: []string{module + "/connector", module + "/controller", module + "/cluster", module + "/state", module + "/batch", module + "/management", raft, memberlist, bbolt, echo}},
	{pkg: "connector", forbidden: []string{module + "/controller", module + "/cluster", module + "/state", module + "/batch", module + "/management", raft, memberlist, bbolt, echo}},
	{pkg: "state", forbidden: []string{module + "/channel", module + "/connector", module + "/controller", module + "/cluster", module + "/management", raft, memberlist, bbolt, echo, "google.golang.org/grpc"}},
	{pkg: "batch", forbidden: []string{module + "/channel", module + "/connector", module + "/controller", module + "/cluster", module + "/state", module + "/management", raft, memberlist, bbolt, echo, "google.golang.org/grpc"}},
	{pkg: "controller", forbidden: []string{module + "/connector", module + "/cluster", module + "/management", raft, memberlist, bbolt, echo}},
	{pkg: "management", forbidden: []string{module + "/cluster", module + "/connector", raft, memberlist, bbolt}},
	{pkg: "metrics", forbidden: []string{module + "/cluster", module + "/management", raft, memberlist, bbolt, echo}},
	{pkg: "cluster", forbidden: []string{module + "/management", module + "/connector", echo}},
}

const (
	raft       = "github.com/hashicorp/raft"
	memberlist = "github.com/hashicorp/memberlist"
	bbolt      = "go.etcd.io/bbolt"
	echo       = "github.com/labstack/echo"

	otelSDK       = "go.opentelemetry.io/otel/sdk"
	otelExporters = "go.opentelemetry.io/otel/exporters"
)

type listed struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

func TestLayering(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps=false", "-json=ImportPath,Deps", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	std := standardPackages(ctx, t)
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, d := range p.Deps {
			if d == module+"/cmd/exchange" || strings.HasPrefix(d, module+"/cmd/") {
				t.Errorf("%s depends on %s: nothing imports cmd", p.ImportPath, d)
			}
			// The libraries use the OpenTelemetry API only; the program
			// (cmd) chooses the SDK and the exporter (tests may use the SDK,
			// through internal/testtrace, which only tests import).
			if !strings.HasPrefix(rel, "cmd/") && rel != "internal/testtrace" && (strings.HasPrefix(d, otelSDK) || strings.HasPrefix(d, otelExporters)) {
				t.Errorf("%s depends on %s: only cmd may import the OpenTelemetry SDK and exporters", p.ImportPath, d)
			}
		}
		r := ruleFor(rel)
		if r < 0 {
			continue
		}
		checked++
		for _, d := range p.Deps {
			if rules[r].stdOnly && !std[d] && !strings.HasPrefix(d, module+"/") {
				t.Errorf("%s depends on %s: it must use the standard library only", p.ImportPath, d)
			}
			for _, f := range rules[r].forbidden {
				if strings.HasPrefix(d, f) { // raft also covers raft-boltdb; echo, echo/v4

					t.Errorf("%s depends on %s (ARCHITECTURE §2 forbids %s)", p.ImportPath, d, f)
				}
			}
			if rules[r].stdOnly && strings.HasPrefix(d, module+"/") {
				t.Errorf("%s depends on %s: it must use the standard library only", p.ImportPath, d)
			}
		}
	}
	if checked < len(rules) {
		t.Fatalf("checked %d packages, want at least one per rule (%d): has a package moved?", checked, len(rules))
	}
}

// ruleFor returns the index of the longest rule prefix matching rel, or -1.
func ruleFor(rel string) int {
	best := -1
	for i, r := range rules {
		if rel == r.pkg || strings.HasPrefix(rel, r.pkg+"/") {
			if best < 0 || len(r.pkg) > len(rules[best].pkg) {
				best = i
			}
		}
	}
	return best
}

func standardPackages(ctx context.Context, t *testing.T) map[string]bool {
	out, err := exec.CommandContext(ctx, "go", "list", "std").Output()
	if err != nil {
		t.Fatalf("go list std: %v", err)
	}
	std := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		std[p] = true
	}
	return std
}
