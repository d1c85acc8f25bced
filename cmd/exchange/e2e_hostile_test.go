package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/channel/grpcchannel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/connector"
)

// TestEndToEndHostileReplyCannotStopRestarts is the regression test of a
// controller that could never start again: a connector answered a batch
// command with JSON nested 20,000 deep. The batch ends, the runner says so
// in the controller's log (its logger is wired), and the controller restarts
// from its data directory with the batch and the reply intact.
func TestEndToEndHostileReplyCannotStopRestarts(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--raft-addr", "127.0.0.1:0", "--node-id", "n1", "--log-level", "debug"}
	ctrl, grpcAddr, httpURL := startController(ctx, t, args...)

	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	mux := command.NewMux()
	mux.Register("ECHO", command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return &command.Reply{Status: command.StatusSucceeded, Payload: []byte(deep)}, nil
	}))
	d, err := grpcchannel.NewDialer(grpcAddr, grpcchannel.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cfg := connector.DefaultConfig()
	cfg.ConnectorID, cfg.TargetID = "hostile", "t1"
	conn, err := connector.New(cfg, mux, d)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopConn := context.WithCancel(ctx)
	connDone := make(chan error, 1)
	go func() { connDone <- conn.Run(cctx) }()
	defer func() {
		stopConn()
		<-connDone
	}()

	req := map[string]any{"id": "b1", "targetId": "t1", "commands": []map[string]any{{"type": "ECHO"}}}
	if code := postJSON(ctx, t, httpURL+"/exchange/batchs", req, nil); code != http.StatusCreated {
		t.Fatalf("POST /exchange/batchs: %d", code)
	}
	// The runner's own log line, at debug level: proof that its logger is
	// the controller's.
	ctrl.waitLine(ctx, 0, regexp.MustCompile(`batch: succeeded.*batch=b1`))

	ctrl.stop(ctx)
	ctrl2, _, httpURL2 := startController(ctx, t, args...)
	var got struct {
		Status   string `json:"status"`
		Commands []struct {
			Reply struct {
				Payload json.RawMessage `json:"payload"`
			} `json:"reply"`
		} `json:"commands"`
	}
	if code := getJSON(ctx, t, httpURL2+"/exchange/batchs/b1", &got); code != http.StatusOK {
		t.Fatalf("after restart, GET /exchange/batchs/b1: %d", code)
	}
	var shown string
	if err := json.Unmarshal(got.Commands[0].Reply.Payload, &shown); got.Status != "SUCCEEDED" || err != nil || shown != deep {
		t.Errorf("after restart: batch %s, reply payload shown as a string holding the reply: %v", got.Status, err == nil && shown == deep)
	}
	ctrl2.stop(ctx)
}
