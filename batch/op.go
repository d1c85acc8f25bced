package batch

import (
	"encoding/json"
	"time"

	"github.com/exchangekit/exchange/command"
)

// Op is one change to the batches: exactly one field is set. Ops travel as
// raft log entries (JSON), so they carry every time and delay they need and
// their JSON must stay compatible across versions.
type Op struct {
	Create *CreateBatch     `json:"create,omitempty"`
	Start  *StartAttempt    `json:"start,omitempty"`
	Result *CommandResult   `json:"result,omitempty"`
	Finish *FinishAttempt   `json:"finish,omitempty"`
	Reset  *ResetInProgress `json:"reset,omitempty"`
	Delete *DeleteBatch     `json:"delete,omitempty"`
}

// CreateBatch stores a new batch, as returned by Prepare. A taken id fails
// with ErrExists.
type CreateBatch struct {
	Batch Batch `json:"batch"`
}

// StartAttempt starts an attempt of batch ID at Now (see Batch.StartAttempt).
// The batch must be the oldest unfinished batch of its target: batches of a
// target run one at a time, in creation order.
type StartAttempt struct {
	ID  string    `json:"id"`
	Now time.Time `json:"now"`
}

// CommandResult records the outcome of the command in progress of batch ID
// (see Batch.CommandResult).
type CommandResult struct {
	ID string `json:"id"`
	// Attempt is the batch's Attempts when the command was sent.
	Attempt   int       `json:"attempt"`
	CommandID string    `json:"commandId"`
	Now       time.Time `json:"now"`
	// Status is SUCCEEDED or ERROR (see Outcome).
	Status Status `json:"status"`
	// Reply is the connector's reply, if one came.
	Reply *command.Reply `json:"-"`
	// Error says why the command failed; required with ERROR.
	Error string `json:"error,omitempty"`
	// Offline marks a failure to reach the target at all (no channel): it
	// does not count against MaxRetry.
	Offline bool `json:"offline,omitempty"`
	// RetryDelay is the backoff before the next attempt, used if this result
	// fails the attempt. The runner draws its jitter.
	RetryDelay time.Duration `json:"retryDelay,omitempty"`
}

type commandResultJSON CommandResult

type wireCommandResult struct {
	commandResultJSON
	Reply *wireReply `json:"reply,omitempty"`
}

// MarshalJSON encodes r, its reply as in a batch's JSON.
func (r CommandResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireCommandResult{commandResultJSON: commandResultJSON(r), Reply: toWireReply(r.Reply)})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (r *CommandResult) UnmarshalJSON(b []byte) error {
	var w wireCommandResult
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = CommandResult(w.commandResultJSON)
	r.Reply = fromWireReply(w.Reply)
	return nil
}

// FinishAttempt ends the current attempt of batch ID as a failure that is not
// a command's reply (see Batch.FinishAttempt).
type FinishAttempt struct {
	ID         string        `json:"id"`
	Attempt    int           `json:"attempt"`
	Now        time.Time     `json:"now"`
	Error      string        `json:"error"`
	Offline    bool          `json:"offline,omitempty"`
	RetryDelay time.Duration `json:"retryDelay,omitempty"`
}

// ResetInProgress makes IN_PROGRESS batches PENDING and due at Now: every one
// when ID is empty (a new leader's runner does this on start), or only batch
// ID (a runner recovering an attempt that nobody is running any more).
type ResetInProgress struct {
	ID  string    `json:"id,omitempty"`
	Now time.Time `json:"now"`
}

// DeleteBatch removes batch ID, whatever its status (ErrNotFound if absent).
// The runner deletes terminal batches once Config.Retention has passed.
type DeleteBatch struct {
	ID string `json:"id"`
}

// EventKind names a change to the batches.
type EventKind string

// Event kinds. Table.Apply returns the first five; stores add the last two.
const (
	EventCreated  EventKind = "created"  // a batch was stored
	EventStarted  EventKind = "started"  // an attempt started
	EventPending  EventKind = "pending"  // an attempt ended without success and will be retried, or was interrupted
	EventTerminal EventKind = "terminal" // the batch ended: Status is SUCCEEDED or ERROR
	EventDeleted  EventKind = "deleted"  // the batch was removed
	// EventChannelRegistered: a channel of TargetID registered, so its
	// waiting batches are worth retrying now.
	EventChannelRegistered EventKind = "channel_registered"
	// EventRestored: the whole table was replaced (a snapshot was restored);
	// there are no ids, subscribers resync from View.
	EventRestored EventKind = "restored"
)

// Event describes one change.
type Event struct {
	Kind     EventKind
	BatchID  string
	TargetID string
	// Status is the batch's status after the change.
	Status Status
}
