// Package batch runs persisted batches: ordered lists of commands for one
// target, stored in the replicated state, executed in order, retried with
// backoff, observed from any node, and never lost.
//
// The package has two layers. The pure core — Batch, its state machine
// (StartAttempt, CommandResult, FinishAttempt, ResetInProgress), Backoff,
// Outcome, and Table with its ops — has no goroutines, reads no clock and
// draws no random numbers: times and retry delays travel inside the ops, so
// every node applies them identically (package state embeds the Table in the
// replicated State and applies the ops; package cluster makes them raft log
// entries). The Runner is the imperative shell: it decides what is due, sends
// the commands through a Sender, and writes every outcome to the Store.
//
// # Usage
//
// Step 1: build a Runner over the node's store and the controller's Send
// (mem is a *state.Memory or the raft-backed store):
//
//	r, err := batch.NewRunner(batch.DefaultConfig(), sender, state.NewBatchStore(mem))
//	defer r.Close()
//
// Step 2: let it execute batches while this node leads (always, for a single
// node; in a cluster, cancel leaderCtx when leadership is lost and call Run
// again when it comes back):
//
//	go r.Run(leaderCtx)
//
// Step 3: submit a batch. It is stored and acknowledged at once; an invalid
// one is refused with a *ValidationError naming the field:
//
//	b, err := r.ExecuteBatch(ctx, batch.Batch{
//		TargetID: "gateway-1",
//		Key:      "deploy-42",
//		Commands: []batch.Command{
//			{Command: &command.Command{Type: "DEPLOY", Payload: p1}},
//			{Command: &command.Command{Type: "RELOAD"}},
//		},
//	})
//	var ve *batch.ValidationError
//	if errors.As(err, &ve) {
//		// ve.Field is "targetId", "commands[1].command.type", ...
//	}
//
// Step 4: learn the outcome, on any node:
//
//	done, err := r.AwaitBatch(ctx, b.ID)
//	cancel := r.Observe(b.ID, func(b batch.Batch) { /* once, when it ends */ })
//	cancel = r.ObserveKey("deploy-42", func(b batch.Batch) { /* every batch of the key */ })
//
// # Execution
//
// A target runs one batch at a time, in creation order: its next batch waits
// until the current one has ended, even while the current one waits for a
// retry. Up to Config.Concurrency targets run at once. Within an attempt the
// commands run in order, each result written to the store before the next
// command is sent, and the first failure ends the attempt; commands that
// succeeded are not re-sent by later attempts. A failed attempt is retried
// after Backoff (base 1 s, doubling, capped at 5 min, jittered) until the
// batch has used MaxRetry retries (default 5: 6 attempts); then it ends in
// ERROR. A reply whose status is not terminal (PENDING, IN_PROGRESS) is a
// failure. When the target has no channel (the Sender's error wraps
// ErrNoChannel) the attempt does not count against MaxRetry: the batch waits,
// and runs as soon as a channel of the target registers. Finished batches are
// deleted Config.Retention (default 24 h) after they end.
//
// Command ids are assigned once, at creation, and never change, so a command
// re-sent by a retry or after a crash carries the id the connector saw
// before: a connector's dedup window turns at-least-once delivery into
// effectively-once. docs/reliability.md states the guarantees precisely.
//
// # JSON
//
// A Batch encodes with the reference's field names (id, key, targetId,
// commands, status, errorDetails, maxRetry, retry, lastRetryAt, plus
// attempts, nextAttemptAt, createdAt, updatedAt). A command encodes as
// {command{id, type, payload, metadata}, status, reply{status, payload,
// errorDetails, code}, errorDetails}. A payload is written as raw JSON in
// "payload" when it is JSON that encodes back byte for byte (compact, without
// '<', '>' or '&'); any other payload is written base64-encoded in
// "payloadBase64", so every payload survives the raft log and snapshots
// exactly.
//
// # Goroutines
//
// NewRunner starts the notifier (delivers observer calls; stopped by Close).
// Run runs the scheduling loop in the caller's goroutine and one goroutine per
// attempt in progress (at most Config.Concurrency); they stop when Run's
// context is cancelled or the Runner is closed, and Run waits for them.
package batch
