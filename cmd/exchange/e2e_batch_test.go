package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// postJSON posts body to url and decodes a JSON answer into v.
func postJSON(ctx context.Context, t *testing.T, url string, body, v any) int {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("POST %s: decode: %v", url, err)
		}
	}
	return resp.StatusCode
}

type batchView struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Commands []struct {
		Status string `json:"status"`
		Reply  *struct {
			Payload json.RawMessage `json:"payload"`
		} `json:"reply"`
	} `json:"commands"`
}

// A batch accepted for an offline target survives kill -9 of the controller
// (it is in the raft log on disk), and completes, in order, once a connector
// of the target appears after the restart.
func TestEndToEndBatchSurvivesKill9(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--raft-addr", "127.0.0.1:0", "--node-id", "n1"}

	ctrl, _, httpURL := startController(ctx, t, args...)
	req := map[string]any{
		"id": "b1", "key": "rollout-7", "targetId": "offline", "maxRetry": 20,
		"commands": []map[string]any{
			{"type": "ECHO", "payload": map[string]int{"step": 1}},
			{"type": "ECHO", "payload": map[string]int{"step": 2}},
			{"type": "ECHO", "payload": map[string]int{"step": 3}},
		},
	}
	var created batchView
	if code := postJSON(ctx, t, httpURL+"/exchange/batchs", req, &created); code != http.StatusCreated {
		t.Fatalf("POST /exchange/batchs: %d", code)
	}
	if code := postJSON(ctx, t, httpURL+"/exchange/batchs", req, nil); code != http.StatusConflict {
		t.Errorf("POST of the same batch id again: %d, want 409", code)
	}

	// ctl targets lists the target, which has a batch and no channel.
	var out, errb strings.Builder
	if code := run(ctx, []string{"ctl", "--addr", httpURL, "targets"}, &out, &errb); code != 0 ||
		!regexp.MustCompile(`(?m)^offline +0 +0 +- +- +- +1$`).MatchString(out.String()) {
		t.Errorf("ctl targets: exit %d, stderr %q; want the offline target with its batch:\n%s", code, errb.String(), out.String())
	}

	// kill -9: no shutdown, no goodbye, no flush beyond what was acknowledged.
	if err := ctrl.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-ctrl.done

	ctrl2, grpcAddr, httpURL2 := startController(ctx, t, args...)
	var got batchView
	if code := getJSON(ctx, t, httpURL2+"/exchange/batchs/b1", &got); code != http.StatusOK {
		t.Fatalf("after kill -9 and restart, GET /exchange/batchs/b1: %d, want 200 (the batch was acknowledged)", code)
	}
	if got.Status == "SUCCEEDED" || got.Status == "ERROR" {
		t.Fatalf("batch for an offline target is %s before any connector exists", got.Status)
	}

	conn := start(t, "connector", "connector", "--controller", grpcAddr, "--target", "offline", "--id", "late")
	conn.waitLine(ctx, 0, regexp.MustCompile(`serving target offline`))

	// ctl batches watch follows it to the end.
	out.Reset()
	errb.Reset()
	if code := run(ctx, []string{"ctl", "--addr", httpURL2, "batches", "watch", "b1", "--interval", "20ms"}, &out, &errb); code != 0 {
		t.Fatalf("ctl batches watch b1: exit %d, stderr %q, want 0 (SUCCEEDED):\n%s", code, errb.String(), out.String())
	}
	if !strings.Contains(out.String(), "b1  SUCCEEDED retry ") {
		t.Errorf("ctl batches watch b1 did not print the end:\n%s", out.String())
	}
	if code := getJSON(ctx, t, httpURL2+"/exchange/batchs/b1", &got); code != http.StatusOK || got.Status != "SUCCEEDED" {
		t.Fatalf("GET /exchange/batchs/b1 after watch: %d, %s", code, got.Status)
	}
	for i, c := range got.Commands {
		var p struct{ Step int }
		if c.Reply != nil {
			_ = json.Unmarshal(c.Reply.Payload, &p)
		}
		if c.Status != "SUCCEEDED" || p.Step != i+1 {
			t.Errorf("command %d: status %s, echoed step %d; want SUCCEEDED, step %d", i, c.Status, p.Step, i+1)
		}
	}
	conn.stop(ctx)
	ctrl2.stop(ctx)
}
