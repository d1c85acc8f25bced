package batch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/internal/jsonlimit"
)

// DefaultMaxRetry is the retry budget of a batch that does not set MaxRetry:
// 5 retries, so 6 attempts, as in the reference system.
const DefaultMaxRetry = 5

// MaxRetryLimit is the largest MaxRetry a batch may ask for (and the largest
// Config.MaxRetry): 100 retries at the default backoff (capped at 5 min) already
// span several hours. A bound keeps a typo (or 2^63-1) from making a batch that never
// ends and holds its target's queue for ever.
const MaxRetryLimit = 100

// Batch is an ordered list of commands for one target, persisted and executed
// in order, and retried with backoff until it succeeds or its retries run out.
//
// Fill ID (optional), Key (optional), TargetID, Commands and MaxRetry
// (optional) and hand it to Runner.ExecuteBatch; the other fields belong to
// the store and are overwritten at creation. A Batch read from the store is a
// copy: changing it changes nothing.
type Batch struct {
	// ID identifies the batch; a random UUID is assigned when empty.
	ID string `json:"id"`
	// Key is an optional grouping key, for Filter and ObserveKey.
	Key string `json:"key,omitempty"`
	// TargetID is the target every command is sent to. Required.
	TargetID string `json:"targetId"`
	// Commands run in this order. At least one is required.
	Commands []Command `json:"commands"`
	// Status is the batch's state.
	Status Status `json:"status,omitempty"`
	// Error describes the last failure (the failing command's message), in
	// plain words. It is cleared when the batch succeeds.
	Error string `json:"errorDetails,omitempty"`
	// MaxRetry is how many times a failed attempt is retried before the batch
	// ends in ERROR: MaxRetry 5 allows 6 attempts. Nil means the runner's
	// Config.MaxRetry (default 5); write new(0) for a single attempt.
	MaxRetry *int `json:"maxRetry,omitempty"`
	// Retry counts the retries granted so far: it grows by one each time a
	// failed attempt is rescheduled, so a batch that ends in ERROR has
	// Retry == MaxRetry. Attempts that could not reach the target (no
	// channel) or that a controller restart interrupted do not count.
	Retry int `json:"retry"`
	// Attempts counts every attempt started, counted or not. Result ops name
	// the attempt they belong to, so a stale one (from a deposed leader) is
	// rejected instead of corrupting a newer attempt.
	Attempts int `json:"attempts"`
	// LastRetryAt is when the last attempt started (zero before the first).
	LastRetryAt time.Time `json:"lastRetryAt,omitzero"`
	// NextAttemptAt is when a PENDING batch is due (zero otherwise). A channel
	// of the target registering makes it due at once.
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// CreatedAt is when the batch was created.
	CreatedAt time.Time `json:"createdAt,omitzero"`
	// UpdatedAt is when the batch last changed; for a terminal batch, when it
	// ended (retention counts from it).
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// Command is one command of a batch and what became of it.
type Command struct {
	// Command is what is sent: its ID (stable across retries, so a connector
	// can deduplicate), Type, Payload and Metadata. OneWay and Timeout are not
	// used: batch commands always expect a reply, within the runner's
	// Config.CommandTimeout.
	Command *command.Command
	// Status is PENDING (not sent in the current attempt), IN_PROGRESS (sent,
	// reply awaited), SUCCEEDED or ERROR.
	Status Status
	// Reply is the connector's last reply, if any. Only its Status, Payload,
	// Error and Code are kept.
	Reply *command.Reply
	// Error describes why the command failed, in plain words.
	Error string
}

// Clone returns a deep copy of b.
func (b Batch) Clone() Batch {
	b.Commands = cloneCommands(b.Commands)
	if b.MaxRetry != nil {
		b.MaxRetry = new(*b.MaxRetry)
	}
	return b
}

func cloneCommands(cs []Command) []Command {
	if cs == nil {
		return nil
	}
	out := make([]Command, len(cs))
	for i, c := range cs {
		out[i] = Command{Command: c.Command.Clone(), Status: c.Status, Reply: c.Reply.Clone(), Error: c.Error}
	}
	return out
}

// maxRetry returns the batch's retry budget (DefaultMaxRetry when unset).
func (b *Batch) maxRetry() int {
	if b.MaxRetry == nil {
		return DefaultMaxRetry
	}
	return *b.MaxRetry
}

// current returns the index of the command in progress, or -1.
func (b *Batch) current() int {
	for i := range b.Commands {
		if b.Commands[i].Status == StatusInProgress {
			return i
		}
	}
	return -1
}

// Prepare validates b for creation and returns the batch to store: ids
// assigned where missing (newID for the batch and its commands; they never
// change afterwards), MaxRetry defaulted to defaultMaxRetry, status CREATED,
// every command PENDING, counters and results cleared, CreatedAt and UpdatedAt
// set to now. Empty payloads and metadata are normalised to nil so that the
// stored batch survives a JSON round trip unchanged.
//
// Validation failures are *ValidationError naming the field: targetId is
// required; there must be at least one command; every command needs a type,
// must not be one-way, and must have an id unique within the batch; maxRetry
// must be between 0 and MaxRetryLimit.
func Prepare(b Batch, now time.Time, defaultMaxRetry int, newID func() string) (Batch, error) {
	if b.TargetID == "" {
		return Batch{}, invalid("targetId", "required")
	}
	if len(b.Commands) == 0 {
		return Batch{}, invalid("commands", "a batch needs at least one command")
	}
	maxRetry := defaultMaxRetry
	if b.MaxRetry != nil {
		maxRetry = *b.MaxRetry
	}
	if maxRetry < 0 {
		return Batch{}, invalid("maxRetry", "must not be negative, got %d", maxRetry)
	}
	if maxRetry > MaxRetryLimit {
		return Batch{}, invalid("maxRetry", "must be at most %d, got %d", MaxRetryLimit, maxRetry)
	}
	now = norm(now)
	out := Batch{
		ID:        b.ID,
		Key:       b.Key,
		TargetID:  b.TargetID,
		Commands:  make([]Command, len(b.Commands)),
		Status:    StatusCreated,
		MaxRetry:  new(maxRetry),
		CreatedAt: now,
		UpdatedAt: now,
	}
	if out.ID == "" {
		out.ID = newID()
	}
	seen := make(map[string]int, len(b.Commands))
	for i, c := range b.Commands {
		field := fmt.Sprintf("commands[%d].command", i)
		if c.Command == nil {
			return Batch{}, invalid(field, "required")
		}
		if c.Command.Type == "" {
			return Batch{}, invalid(field+".type", "required")
		}
		if c.Command.OneWay {
			return Batch{}, invalid(field+".oneWay", "batch commands need a reply; one-way commands are not allowed")
		}
		cmd := &command.Command{ID: c.Command.ID, Type: c.Command.Type, Payload: c.Command.Payload, Metadata: c.Command.Metadata}
		if cmd.ID == "" {
			cmd.ID = newID()
		}
		if j, dup := seen[cmd.ID]; dup {
			return Batch{}, invalid(field+".id", "duplicate command id %q (also commands[%d])", cmd.ID, j)
		}
		seen[cmd.ID] = i
		out.Commands[i] = Command{Command: normCommand(cmd), Status: StatusPending}
	}
	return out, nil
}

// validateStored checks a batch handed to CreateBatch: Prepare's output.
func validateStored(b *Batch) error {
	switch {
	case b.ID == "":
		return invalid("id", "required")
	case b.TargetID == "":
		return invalid("targetId", "required")
	case len(b.Commands) == 0:
		return invalid("commands", "a batch needs at least one command")
	case b.MaxRetry == nil || *b.MaxRetry < 0 || *b.MaxRetry > MaxRetryLimit:
		return invalid("maxRetry", "must be set, between 0 and %d", MaxRetryLimit)
	case b.Status != StatusCreated:
		return invalid("status", "a new batch must be CREATED, not %s", b.Status)
	}
	seen := make(map[string]bool, len(b.Commands))
	for i, c := range b.Commands {
		field := fmt.Sprintf("commands[%d].command", i)
		switch {
		case c.Command == nil:
			return invalid(field, "required")
		case c.Command.ID == "":
			return invalid(field+".id", "required")
		case c.Command.Type == "":
			return invalid(field+".type", "required")
		case seen[c.Command.ID]:
			return invalid(field+".id", "duplicate command id %q", c.Command.ID)
		case c.Status != StatusPending:
			return invalid(fmt.Sprintf("commands[%d].status", i), "a new command must be PENDING, not %s", c.Status)
		}
		seen[c.Command.ID] = true
	}
	return nil
}

// norm strips the monotonic clock reading and the location from t, so that
// times compare the same on every node and survive JSON unchanged.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// normCommand keeps what a batch stores of a command.
func normCommand(c *command.Command) *command.Command {
	out := &command.Command{ID: c.ID, Type: c.Type}
	if len(c.Payload) > 0 {
		out.Payload = bytes.Clone(c.Payload)
	}
	if len(c.Metadata) > 0 {
		out.Metadata = make(map[string]string, len(c.Metadata))
		for k, v := range c.Metadata {
			out.Metadata[k] = v
		}
	}
	return out
}

// normReply keeps what a batch stores of a reply: Status, Payload, Error and
// Code. A status the command package does not know becomes ERROR.
func normReply(r *command.Reply) *command.Reply {
	if r == nil {
		return nil
	}
	out := &command.Reply{Status: r.Status, Error: r.Error, Code: r.Code}
	if r.Status < command.StatusUnspecified || r.Status > command.StatusInProgress {
		out.Status = command.StatusError
	}
	if len(r.Payload) > 0 {
		out.Payload = bytes.Clone(r.Payload)
	}
	return out
}

// JSON encoding of commands and replies.
//
// A payload is written as raw JSON in "payload" when it is JSON nested at most
// jsonlimit.MaxDepth deep that encoding/json writes back byte for byte
// (compact, no HTML-escaped characters), which is the usual case and keeps the
// stored batch readable. Any other payload (binary, indented JSON, JSON with
// '<', '>' or '&', JSON nested deeper) is written base64-encoded in
// "payloadBase64" instead: opaque bytes, so that every payload survives
// snapshots and the raft log exactly, and no payload can push a stored
// document past encoding/json's nesting limit (a reply nested 9,993 deep once
// made every snapshot unreadable). Readers accept either.

type wireCommand struct {
	Command *wireCmd   `json:"command,omitempty"`
	Status  Status     `json:"status,omitempty"`
	Reply   *wireReply `json:"reply,omitempty"`
	Error   string     `json:"errorDetails,omitempty"`
}

type wireCmd struct {
	ID            string            `json:"id,omitempty"`
	Type          command.Type      `json:"type"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 []byte            `json:"payloadBase64,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

type wireReply struct {
	Status        string          `json:"status"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payloadBase64,omitempty"`
	Error         string          `json:"errorDetails,omitempty"`
	Code          int32           `json:"code,omitempty"`
}

// splitPayload decides how a payload is written (see above).
func splitPayload(p []byte) (raw json.RawMessage, b64 []byte) {
	if len(p) == 0 {
		return nil, nil
	}
	if jsonlimit.Embeddable(p) {
		if out, err := json.Marshal(json.RawMessage(p)); err == nil && bytes.Equal(out, p) {
			return p, nil
		}
	}
	return nil, p
}

func joinPayload(raw json.RawMessage, b64 []byte) []byte {
	switch {
	case len(raw) > 0:
		return bytes.Clone(raw)
	case len(b64) > 0:
		return b64
	}
	return nil
}

func toWireReply(r *command.Reply) *wireReply {
	if r == nil {
		return nil
	}
	raw, b64 := splitPayload(r.Payload)
	return &wireReply{Status: r.Status.String(), Payload: raw, PayloadBase64: b64, Error: r.Error, Code: r.Code}
}

func fromWireReply(w *wireReply) *command.Reply {
	if w == nil {
		return nil
	}
	st := command.StatusUnspecified
	if w.Status != "" && w.Status != command.StatusUnspecified.String() {
		st, _ = command.ParseStatus(w.Status)
	}
	return &command.Reply{Status: st, Payload: joinPayload(w.Payload, w.PayloadBase64), Error: w.Error, Code: w.Code}
}

// MarshalJSON encodes c as {command{id, type, payload|payloadBase64,
// metadata}, status, reply{status, payload|payloadBase64, errorDetails,
// code}, errorDetails}.
func (c Command) MarshalJSON() ([]byte, error) {
	w := wireCommand{Status: c.Status, Reply: toWireReply(c.Reply), Error: c.Error}
	if c.Command != nil {
		raw, b64 := splitPayload(c.Command.Payload)
		w.Command = &wireCmd{ID: c.Command.ID, Type: c.Command.Type, Payload: raw, PayloadBase64: b64, Metadata: c.Command.Metadata}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (c *Command) UnmarshalJSON(b []byte) error {
	var w wireCommand
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("batch: decode command: %w", err)
	}
	*c = Command{Status: w.Status, Reply: fromWireReply(w.Reply), Error: w.Error}
	if w.Command != nil {
		c.Command = &command.Command{
			ID:       w.Command.ID,
			Type:     w.Command.Type,
			Payload:  joinPayload(w.Command.Payload, w.Command.PayloadBase64),
			Metadata: w.Command.Metadata,
		}
	}
	return nil
}
