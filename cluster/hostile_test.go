package cluster_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// nested returns a JSON array nested depth levels deep.
func nested(depth int) []byte {
	return []byte(strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth))
}

// TestHostilePayloadsSurviveLogSnapshotAndRestart is the regression test of a
// controller that could never start again: a connector answered a batch
// command with a JSON array nested 9,993 deep, the next snapshot wrapped it
// in more levels than encoding/json reads back, and every later start failed
// with "exceeded max depth". Whatever a peer sends is stored; the stored
// state must go through the raft log, a snapshot and a restart unchanged.
func TestHostilePayloadsSurviveLogSnapshotAndRestart(t *testing.T) {
	payloads := map[string][]byte{
		"depth-9993":  nested(9993),
		"depth-9994":  nested(9994),
		"depth-20000": nested(20000),
		"depth-65":    nested(65),
		"binary":      {0xff, 0x00, '[', '{'},
		"unclosed":    []byte(strings.Repeat("[", 30000)),
	}
	for name, p := range payloads {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			cfg.TrailingLogs = 0 // the snapshot must carry the payload alone
			n := open(t, cfg)
			bs := state.NewBatchStore(n)
			ctx := testCtx(t)
			now := time.Unix(1700000000, 0)
			b, err := batch.Prepare(batch.Batch{ID: "b1", TargetID: "t1", Commands: []batch.Command{
				{Command: &command.Command{ID: "c1", Type: "ECHO", Payload: p}},
				{Command: &command.Command{ID: "c2", Type: "ECHO"}},
			}}, now, 5, command.NewID)
			if err != nil {
				t.Fatal(err)
			}
			ops := []batch.Op{
				{Create: &batch.CreateBatch{Batch: b}},
				{Start: &batch.StartAttempt{ID: "b1", Now: now}},
				{Result: &batch.CommandResult{ID: "b1", Attempt: 1, CommandID: "c1", Now: now, Status: batch.StatusSucceeded,
					Reply: &command.Reply{Status: command.StatusSucceeded, Payload: p}}},
			}
			// The ops go through the log one by one, then a snapshot, then
			// more log, then a restart that reads both.
			for _, op := range ops {
				if err := bs.Apply(ctx, op); err != nil {
					t.Fatalf("Apply(%+v) = %v", op, err)
				}
			}
			if err := n.Snapshot(ctx); err != nil {
				t.Fatalf("Snapshot() = %v", err)
			}
			res := batch.CommandResult{ID: "b1", Attempt: 1, CommandID: "c2", Now: now, Status: batch.StatusSucceeded,
				Reply: &command.Reply{Status: command.StatusSucceeded, Payload: p}}
			if err := bs.Apply(ctx, batch.Op{Result: &res}); err != nil {
				t.Fatalf("Apply(result c2) = %v", err)
			}
			closeNode(t, n)

			n = open(t, cfg)
			got := snapshotOf(t, n).Batches
			stored, ok := got.Get("b1")
			if !ok {
				t.Fatal("batch b1 lost across the restart")
			}
			if stored.Status != batch.StatusSucceeded {
				t.Errorf("batch status = %v, want SUCCEEDED", stored.Status)
			}
			if !bytes.Equal(stored.Commands[0].Command.Payload, p) {
				t.Error("command payload changed across log, snapshot and restart")
			}
			for i, c := range stored.Commands {
				if c.Reply == nil || !bytes.Equal(c.Reply.Payload, p) {
					t.Errorf("commands[%d]: reply payload changed across log, snapshot and restart", i)
				}
			}
			// And a second snapshot of the restored state is readable too.
			if err := n.Snapshot(ctx); err != nil {
				t.Fatalf("Snapshot() after restart = %v", err)
			}
			closeNode(t, n)
			n = open(t, cfg)
			closeNode(t, n)
		})
	}
}
