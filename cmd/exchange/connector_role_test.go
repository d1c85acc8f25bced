package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A role change is printed on stdout, as before, and logged: JSON logs see it.
func TestOnPrimaryLogs(t *testing.T) {
	var stdout, logs bytes.Buffer
	say := func(format string, args ...any) { fmt.Fprintf(&stdout, format+"\n", args...) }
	fn := onPrimary(say, slog.New(slog.NewJSONHandler(&logs, nil)), func() string { return "gw" }, "t1")
	fn(true, 7)
	fn(false, 8)

	if want := "PRIMARY connector=gw target=t1 epoch=7: this connector is now the primary\n" +
		"REPLICA connector=gw target=t1 epoch=8: this connector is not the primary\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2: %s", len(lines), logs.String())
	}
	for i, want := range []struct {
		msg   string
		epoch float64
	}{
		{"primary: this connector is now the target's primary", 7},
		{"replica: this connector is not the target's primary", 8},
	} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if rec["level"] != "INFO" || rec["msg"] != want.msg || rec["connector"] != "gw" || rec["target"] != "t1" || rec["epoch"] != want.epoch {
			t.Errorf("line %d = %v, want INFO %q connector=gw target=t1 epoch=%v", i, rec, want.msg, want.epoch)
		}
	}
}
