package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/management"
)

// stepBatches is ctlBatches whose batches w-ok and w-err move on one status
// per read (w-ok: CREATED, IN_PROGRESS, SUCCEEDED; w-err: PENDING, PENDING,
// ERROR), and whose ExecuteBatch stores nothing and returns the batch as
// created.
type stepBatches struct {
	ctlBatches
	mu    sync.Mutex
	reads map[string]int
	got   []batch.Batch // what ExecuteBatch was given
}

func (s *stepBatches) ExecuteBatch(_ context.Context, b batch.Batch) (batch.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, b)
	b.ID, b.Status, b.CreatedAt = "new-1", batch.StatusCreated, ctlBase
	for i := range b.Commands {
		b.Commands[i].Status = batch.StatusPending
	}
	return b, nil
}

func (s *stepBatches) GetBatch(id string) (batch.Batch, error) {
	steps := map[string][]batch.Status{
		"w-ok":  {batch.StatusCreated, batch.StatusInProgress, batch.StatusSucceeded},
		"w-err": {batch.StatusPending, batch.StatusPending, batch.StatusError},
	}[id]
	if steps == nil {
		return s.ctlBatches.GetBatch(id)
	}
	s.mu.Lock()
	n := min(s.reads[id], len(steps)-1)
	s.reads[id]++
	s.mu.Unlock()
	three := 3
	b := batch.Batch{ID: id, TargetID: "t1", Status: steps[n], MaxRetry: &three, CreatedAt: ctlBase,
		Commands: []batch.Command{{Command: &command.Command{ID: "x", Type: "ECHO"}, Status: batch.StatusPending}}}
	switch b.Status {
	case batch.StatusSucceeded:
		b.Commands[0].Status = batch.StatusSucceeded
	case batch.StatusError:
		b.Error, b.Retry = "no channel", 3
	}
	return b, nil
}

func stepServer(t *testing.T) (string, *stepBatches) {
	t.Helper()
	sb := &stepBatches{reads: map[string]int{}}
	s, err := management.New(management.Config{}, ctlExchange{}, sb, nil)
	if err != nil {
		t.Fatalf("management.New() = %v", err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL, sb
}

// runCtlIn is runCtl with stdin.
func runCtlIn(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ctlTestTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	code = runIO(ctx, append([]string{"ctl"}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

const batchRequestJSON = `{"targetId": "t1", "key": "k9", "commands": [{"type": "ECHO", "payload": {"x": 1}}]}`

func TestCtlBatchCreate(t *testing.T) {
	addr, sb := stepServer(t)
	file := filepath.Join(t.TempDir(), "batch.json")
	if err := os.WriteFile(file, []byte(batchRequestJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCtlIn(t, "", "--addr", addr, "batches", "create", "-f", file)
	if code != 0 {
		t.Fatalf("create -f FILE: exit code %d; stderr %s", code, errOut)
	}
	want := `created batch new-1

BATCH         new-1
KEY           k9
TARGET        t1
STATUS        CREATED
`
	if !strings.HasPrefix(out, want) || !strings.Contains(out, "ECHO  PENDING") {
		t.Errorf("create output:\n%s\nwant it to start with:\n%s", out, want)
	}
	code, out, errOut = runCtlIn(t, batchRequestJSON, "--addr", addr, "-o", "json", "batches", "create", "-f", "-")
	var b management.Batch
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.ID != "new-1" || b.Status != "CREATED" {
		t.Errorf("create -f - -o json: exit code %d, batch %+v; stderr %s", code, b, errOut)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if len(sb.got) != 2 || sb.got[1].Key != "k9" || string(sb.got[1].Commands[0].Command.Payload) != `{"x":1}` {
		t.Errorf("ExecuteBatch was given %+v, want twice the request", sb.got)
	}
}

func TestCtlBatchCreateFailures(t *testing.T) {
	addr, _ := stepServer(t)
	tests := []struct {
		name, stdin string
		args        []string
		wantCode    int
		wantErr     string
	}{
		{"no file", "", []string{"batches", "create"}, 2, "batches create needs -f FILE (or -f - for stdin)\nRun 'exchange ctl batches create --help' for usage.\n"},
		{"missing file", "", []string{"batches", "create", "-f", "/nonexistent/b.json"}, 2, "-f: open /nonexistent/b.json"},
		{"not JSON", "{nope", []string{"batches", "create", "-f", "-"}, 2, "-f -: not a batch request"},
		{"unknown field", `{"target": "t1"}`, []string{"batches", "create", "-f", "-"}, 2, `unknown field "target"`},
		{"two values", batchRequestJSON + batchRequestJSON, []string{"batches", "create", "-f", "-"}, 2, "more than one JSON value"},
		{"rejected by the API", `{"targetId": "t1", "commands": []}`, []string{"batches", "create", "-f", "-"}, 2, "invalid request: invalid field commands: must hold at least one command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCtlIn(t, tc.stdin, append([]string{"--addr", addr}, tc.args...)...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit code %d, stderr %q; want %d and %q", code, errOut, tc.wantCode, tc.wantErr)
			}
		})
	}
}

func TestCtlBatchWatch(t *testing.T) {
	addr, _ := stepServer(t)
	code, out, errOut := runCtl(t, "--addr", addr, "batches", "watch", "w-ok", "--interval", "10ms")
	if code != 0 {
		t.Fatalf("watch w-ok: exit code %d; stderr %s", code, errOut)
	}
	var states []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(l, "  ", 3) // time, id, state
		if len(f) != 3 || f[1] != "w-ok" {
			t.Fatalf("watch line %q: want TIME  ID  STATE", l)
		}
		states = append(states, f[2])
	}
	want := []string{"CREATED retry 0/3 done 0/1", "IN_PROGRESS retry 0/3 done 0/1", "SUCCEEDED retry 0/3 done 1/1"}
	if strings.Join(states, "|") != strings.Join(want, "|") {
		t.Errorf("watch w-ok printed %q, want %q", states, want)
	}

	code, out, errOut = runCtl(t, "--addr", addr, "-o", "json", "batches", "watch", "w-err", "--interval", "10ms")
	if code != 6 || !strings.Contains(errOut, "batch w-err ended in ERROR: no channel") {
		t.Errorf("watch w-err: exit code %d, stderr %q; want 6, ended in ERROR", code, errOut)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var seen []string
	for dec.More() {
		var b management.Batch
		if err := dec.Decode(&b); err != nil {
			t.Fatalf("watch -o json: %v\n%s", err, out)
		}
		seen = append(seen, b.Status)
	}
	if strings.Join(seen, ",") != "PENDING,ERROR" { // the second PENDING is no change
		t.Errorf("watch -o json statuses = %v, want PENDING, ERROR", seen)
	}

	for _, tc := range []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"watch", "b9"}, 5, "no batch b9 (cancelled?)"},
		{[]string{"watch", "b2", "--interval", "10ms", "--timeout", "50ms"}, 1, "batch b2 has not ended: --timeout passed (last seen PENDING retry 2/5 done 1/2)"},
		{[]string{"watch", "b2", "--interval", "1ms"}, 2, "--interval 1ms: must be between 10ms and 1m0s"},
		{[]string{"watch"}, 2, "a batch id is required"},
	} {
		code, _, errOut := runCtl(t, append([]string{"--addr", addr, "batches"}, tc.args...)...)
		if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
			t.Errorf("%v: exit code %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.wantCode, tc.wantErr)
		}
	}
}
