package main

import (
	"strings"
	"testing"
)

// The tool runs, small, and prints its three figures.
func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(&out, 4, 1000); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"page fault", "system call", "pipe write and read"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
