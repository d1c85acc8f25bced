package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/management"
)

// TestEndToEndBackupRestore saves a running controller's state with exchange
// ctl snapshot save, starts a new controller from it with --restore, checks
// that the batch is there, then restores into that running controller with
// exchange ctl snapshot restore. It also checks GET /exchange/cluster's raft
// figures on a real node.
func TestEndToEndBackupRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	dirA := t.TempDir()
	a, _, urlA := startController(ctx, t, "--data-dir", dirA, "--raft-addr", "127.0.0.1:0")
	ca, err := management.NewClient(urlA, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A batch for a target with no connector: stored, pending.
	if _, err := ca.CreateBatch(ctx, management.BatchRequest{ID: "b1", TargetID: "offline",
		Commands: []management.BatchCommandRequest{{Type: "DEPLOY"}}}); err != nil {
		t.Fatalf("CreateBatch() = %v", err)
	}

	cl, err := ca.Cluster(ctx)
	if err != nil {
		t.Fatalf("Cluster() = %v", err)
	}
	if cl.State != "Leader" || cl.Term == 0 || cl.CommitIndex == 0 || cl.AppliedIndex == 0 || cl.LastContact != nil ||
		len(cl.Members) != 1 || cl.Members[0].Suffrage != "voter" || cl.Members[0].State != "alive" ||
		cl.Members[0].RaftAddress == "" || !cl.Members[0].Leader {
		t.Errorf("GET /exchange/cluster = %+v", cl)
	}

	file := filepath.Join(t.TempDir(), "backup.snap")
	code, out, errOut := runCtl(t, "--addr", urlA, "snapshot", "save", file)
	if code != 0 || !regexp.MustCompile(`^saved .*backup\.snap: \d+ bytes, raft index \d+, term \d+, from node \S+ \(leader\)\n$`).MatchString(out) {
		t.Fatalf("ctl snapshot save: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	data, err := os.ReadFile(file)
	if err != nil || !bytes.HasPrefix(data, []byte("exchange-state v1\n")) || !bytes.Contains(data, []byte(`"b1"`)) {
		t.Fatalf("backup file: %v, %.60q", err, data)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".backup.snap.tmp-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	a.stop(ctx)

	// --restore refuses a data directory that holds anything.
	var o, e bytes.Buffer
	if code := run(ctx, []string{"controller", "--data-dir", dirA, "--restore", file, "--raft-addr", "127.0.0.1:0",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, &o, &e); code != 2 ||
		!strings.Contains(e.String(), "--restore needs an empty --data-dir") {
		t.Errorf("--restore into a used data dir: exit %d, stderr %q", code, e.String())
	}

	b, _, urlB := startController(ctx, t, "--data-dir", filepath.Join(t.TempDir(), "new"), "--raft-addr", "127.0.0.1:0", "--restore", file)
	b.waitLine(ctx, 0, regexp.MustCompile(`^restored .*backup\.snap \(\d+ bytes\) into node`))
	cb, err := management.NewClient(urlB, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cb.Batch(ctx, "b1")
	if err != nil || got.TargetID != "offline" {
		t.Fatalf("batch b1 after --restore: %+v, %v", got, err)
	}

	// Online restore into the running controller: the batch deleted since
	// comes back.
	if _, err := cb.CancelBatch(ctx, "b1"); err != nil {
		t.Fatalf("CancelBatch() = %v", err)
	}
	code, out, errOut = runCtl(t, "--addr", urlB, "snapshot", "restore", file)
	if code != 0 || !strings.HasPrefix(out, "restored "+file) {
		t.Fatalf("ctl snapshot restore: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got, err := cb.Batch(ctx, "b1"); err != nil || got.ID != "b1" {
		t.Errorf("batch b1 after ctl snapshot restore: %+v, %v", got, err)
	}

	// A file that is not a snapshot is refused (400: usage exit code).
	bad := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(bad, []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut = runCtl(t, "--addr", urlB, "snapshot", "restore", bad); code != 2 || !strings.Contains(errOut, "not a valid snapshot") {
		t.Errorf("ctl snapshot restore of a bad file: exit %d, stderr %q", code, errOut)
	}
	b.stop(ctx)
}

// TestControllerRestoreFlags: --restore is refused with flags it cannot
// work with, and with a file that is not a snapshot, before anything starts.
func TestControllerRestoreFlags(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(bad, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--restore", bad, "--in-memory"}, "cannot be combined with --in-memory"},
		{[]string{"--restore", bad, "--cluster-token", "s", "--join", "127.0.0.1:7402"}, "start it without --join"},
		{[]string{"--restore", bad, "--data-dir", dir}, "not a valid exchange state snapshot"},
		{[]string{"--restore", filepath.Join(dir, "missing"), "--data-dir", dir}, "no such file"},
	} {
		var out, errb bytes.Buffer
		code := run(t.Context(), append([]string{"controller", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--raft-addr", "127.0.0.1:0"}, tc.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("controller %v: exit %d, stderr %q; want exit 2 saying %q", tc.args, code, errb.String(), tc.want)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("a refused --restore created %s", dir)
	}
}
