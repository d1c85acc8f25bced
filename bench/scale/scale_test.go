package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/bench/results"
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "client" { // re-executed as a client process
		os.Exit(clientMain(os.Stdin, os.Stdout))
	}
	goleak.VerifyTestMain(m)
}

// TestScaleEndToEnd runs the whole tool at a small size: the exchange binary
// built and started, one client process (this test binary re-executed) with
// 200 connectors on a connection each, then 200 sharing two connections;
// every phase, the storms included, and the results file.
func TestScaleEndToEnd(t *testing.T) {
	dir := t.TempDir()
	resultsPath := filepath.Join(dir, "latest.json")
	// A figure of another runner, kept by the merge.
	if _, err := results.Merge(resultsPath, []results.Result{{Name: "other", Unit: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	c, err := parseFlags([]string{
		"-sizes", "200", "-shared-sizes", "200", "-clients", "1", "-conns-per-client", "2",
		"-settle", "200ms", "-idle", "1s", "-health-interval", "500ms", "-send-for", "1s", "-workers", "4",
		"-outage", "300ms", "-start-profile", "1s", "-stable", "0s", "-wait", "60s",
		"-results", resultsPath, "-dir", filepath.Join(dir, "logs"), "-profiles", filepath.Join(dir, "profiles"),
		"-client-profiles", filepath.Join(dir, "client-profiles"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out, log bytes.Buffer
	if err := measureAll(t.Context(), c, &out, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	rs, err := results.Read(resultsPath)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]results.Result{}
	for _, r := range rs {
		byName[r.Name] = r
	}
	if _, ok := byName["other"]; !ok {
		t.Error("the merge dropped another runner's figure")
	}
	for _, label := range []string{"conn-200", "shared-200"} {
		for _, name := range []string{"register_s", "primary_s", "kib_per_connector", "goroutines_per_connector",
			"idle_cpu_pct", "health_sweep_s", "targets_first_page_ms", "channels_first_page_ms", "metrics_scrape_ms", "send_per_s",
			"storm_immediate_back_s", "storm_immediate_peak_per_s", "storm_outage_back_s", "storm_outage_peak_per_s"} {
			r, ok := byName["scale/"+label+"/"+name]
			switch {
			case !ok:
				t.Errorf("%s/%s: missing", label, name)
			case r.Value <= 0 && name != "idle_cpu_pct":
				t.Errorf("%s/%s = %v, want > 0 (%s)", label, name, r.Value, r.Note)
			case strings.Contains(r.Note, "NOT all"):
				t.Errorf("%s/%s: %s", label, name, r.Note)
			}
		}
	}
	if !strings.Contains(out.String(), "| scale/conn-200/register_s |") {
		t.Errorf("no markdown table:\n%s", out.String())
	}
	for _, p := range []string{"conn-200-start.cpu.pprof", "conn-200-heap.pprof", "shared-200-idle.cpu.pprof"} {
		if fi, err := os.Stat(filepath.Join(dir, "profiles", p)); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v", p, err)
		}
	}
	for _, p := range []string{"conn-200-client-0-start.cpu.pprof", "shared-200-client-0-storm-immediate.cpu.pprof", "shared-200-client-0-storm-outage.cpu.pprof"} {
		if fi, err := os.Stat(filepath.Join(dir, "client-profiles", p)); err != nil || fi.Size() == 0 {
			t.Errorf("client profile %s: %v", p, err)
		}
	}
	if t.Failed() {
		t.Log(log.String())
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("10k, 19_000,,100000")
	if err != nil || len(got) != 3 || got[0] != 10000 || got[1] != 19000 || got[2] != 100000 {
		t.Fatalf("parseSizes = %v, %v", got, err)
	}
	if _, err := parseSizes("0"); err == nil {
		t.Error("0 accepted")
	}
}
