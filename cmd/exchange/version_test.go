package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	info := func(version string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: version}, Settings: settings}, true
		}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123abcd"}
	tests := []struct {
		name string
		read func() (*debug.BuildInfo, bool)
		want string
	}{
		{"release", info("v1.2.3", rev, debug.BuildSetting{Key: "vcs.modified", Value: "false"}), "exchange v1.2.3, commit 0123abcd, go1.26.8\n"},
		{"dirty work tree", info("(devel)", rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"}), "exchange (devel), commit 0123abcd+dirty, go1.26.8\n"},
		{"no VCS", info(""), "exchange (devel), commit unknown, go1.26.8\n"},
		{"no build info", func() (*debug.BuildInfo, bool) { return nil, false }, "exchange unknown (no build information)\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old := readBuildInfo
			readBuildInfo = tc.read
			t.Cleanup(func() { readBuildInfo = old })
			for _, args := range [][]string{{"version"}, {"--version"}} {
				code, out, errOut := runArgs(t, args...)
				if code != 0 || out != tc.want {
					t.Errorf("exchange %v: exit code %d, stdout %q, stderr %q; want 0, %q", args, code, out, errOut, tc.want)
				}
			}
		})
	}
}

// runArgs runs "exchange args..." and returns its exit code and outputs.
func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb strings.Builder
	code = run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}
