package management

import (
	"cmp"
	"encoding/json"
	"slices"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/internal/jsonlimit"
)

// The JSON documents of the API. Server and Client share them. Like the
// reference, absent values are written as null rather than left out.

// Channel is a channel as the API shows it: the reference's ChannelMetric
// (id, targetId, active, primary) plus Exchange's fields.
type Channel struct {
	ID            string            `json:"id"`
	TargetID      string            `json:"targetId"`
	Active        bool              `json:"active"`
	Primary       bool              `json:"primary"`
	ConnectorID   string            `json:"connectorId"`
	Node          string            `json:"node"`
	Epoch         uint64            `json:"epoch"`
	RegisteredAt  time.Time         `json:"registeredAt"`
	LastHealthyAt *time.Time        `json:"lastHealthyAt"`
	InFlight      int               `json:"inFlight"`
	Local         bool              `json:"local"`
	RemoteAddr    *string           `json:"remoteAddr"`
	Metadata      map[string]string `json:"metadata"`
}

// Target is one element of GET /exchange/targets.
type Target struct {
	ID       string    `json:"id"`
	Channels []Channel `json:"channels"`
	Batchs   []Batch   `json:"batchs"`
}

// TargetDetail is the body of GET /exchange/targets/:id (no id field, like
// the reference).
type TargetDetail struct {
	Channels []Channel `json:"channels"`
	Batchs   []Batch   `json:"batchs"`
}

// Batch is a batch as the API shows it: the reference's BatchMetric (id, key,
// targetId, status, errorDetails, maxRetry, retry, lastRetryAt) plus
// Exchange's fields.
type Batch struct {
	ID            string         `json:"id"`
	Key           *string        `json:"key"`
	TargetID      string         `json:"targetId"`
	Status        string         `json:"status"`
	ErrorDetails  *string        `json:"errorDetails"`
	MaxRetry      int            `json:"maxRetry"`
	Retry         int            `json:"retry"`
	LastRetryAt   *time.Time     `json:"lastRetryAt"`
	Commands      []BatchCommand `json:"commands"`
	NextAttemptAt *time.Time     `json:"nextAttemptAt"`
	CreatedAt     time.Time      `json:"createdAt"`
	UpdatedAt     time.Time      `json:"updatedAt"`
}

// BatchCommand is one command of a Batch, with its status and reply.
type BatchCommand struct {
	Command      Command `json:"command"`
	Status       string  `json:"status"`
	Reply        *Reply  `json:"reply"`
	ErrorDetails *string `json:"errorDetails"`
}

// Command is a command inside a Batch.
type Command struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// Reply is a command's reply: the body of POST /exchange/targets/:id/commands
// (whatever its status: a reply with status ERROR is still a 200). Payload is
// the reply's payload as JSON, or a JSON string when it is not JSON; null
// when empty. Code is the optional application status (null when unset).
type Reply struct {
	CommandID    string          `json:"commandId"`
	Type         string          `json:"type"`
	Status       string          `json:"status"`
	Payload      json.RawMessage `json:"payload"`
	Error        *string         `json:"error"`
	Code         *int32          `json:"code"`
	RetryAfterMs *int64          `json:"retryAfterMs"`
	// ChannelID, ConnectorID and NodeID say who answered a command sent
	// with POST /exchange/targets/:id/commands: the channel the controller
	// chose, its connector and the node holding it. Absent elsewhere (the
	// replies of a batch's commands).
	ChannelID   string `json:"channelId,omitempty"`
	ConnectorID string `json:"connectorId,omitempty"`
	NodeID      string `json:"nodeId,omitempty"`
}

// Cluster is the body of GET /exchange/cluster.
type Cluster struct {
	NodeID   string   `json:"nodeId"`
	LeaderID string   `json:"leaderId"`
	State    string   `json:"state"`
	Members  []Member `json:"members"`
	// Term, CommitIndex and AppliedIndex are this node's raft figures (0
	// when standalone); LastContact is when it last heard from the leader
	// (absent on the leader and when standalone).
	Term         uint64     `json:"term"`
	CommitIndex  uint64     `json:"commitIndex"`
	AppliedIndex uint64     `json:"appliedIndex"`
	LastContact  *time.Time `json:"lastContact,omitempty"`
}

// Member is one node of the cluster.
type Member struct {
	NodeID string `json:"nodeId"`
	// Address is the gossip address; State the gossip state ("alive",
	// "dead", "left", "unknown").
	Address string `json:"address"`
	State   string `json:"state"`
	Leader  bool   `json:"leader"`
	// Suffrage is "voter", "nonvoter", "staging" or "none" (not in the raft
	// configuration, or no raft).
	Suffrage    string `json:"suffrage"`
	RaftAddress string `json:"raftAddress"`
	GRPCAddress string `json:"grpcAddress"`
}

// Status is the body of GET /healthz and GET /readyz when all is well.
type Status struct {
	Status string `json:"status"`
}

// ErrorBody is the body of every error; Code equals the HTTP status.
type ErrorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// CommandRequest is the body of POST /exchange/targets/:id/commands. Type is
// required; Payload is any JSON value, passed to the connector as is;
// TimeoutMs defaults to the server's Config.CommandTimeout; ID defaults to a
// fresh UUID; Primary false means any active channel of the target.
type CommandRequest struct {
	ID        string            `json:"id,omitempty"`
	Type      string            `json:"type"`
	Payload   json.RawMessage   `json:"payload,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	TimeoutMs int64             `json:"timeoutMs,omitempty"`
	// Primary sends to the target's primary channel only: 404 if it has
	// none.
	Primary bool `json:"primary,omitempty"`
}

// BatchRequest is the body of POST /exchange/batchs. TargetID and at least one
// command (each with a type) are required; the batch runner fills the
// defaults of the others.
type BatchRequest struct {
	ID       string                `json:"id,omitempty"`
	Key      string                `json:"key,omitempty"`
	TargetID string                `json:"targetId"`
	MaxRetry *int                  `json:"maxRetry,omitempty"`
	Commands []BatchCommandRequest `json:"commands"`
}

// BatchCommandRequest is one command of a BatchRequest.
type BatchCommandRequest struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// noMetadata is the metadata of a channel that has none: written {} (not
// null), like the reference. Shared: the documents of the API are only
// encoded, never changed.
var noMetadata = map[string]string{}

// channelOf converts c, whose Metadata the Channel then shares: c is a copy
// the Exchange made for the caller (controller.ChannelInfo), and the
// Channel is only encoded.
func channelOf(c controller.ChannelInfo) Channel {
	md := c.Metadata
	if md == nil {
		md = noMetadata
	}
	return Channel{
		ID:            c.ID,
		TargetID:      c.TargetID,
		Active:        c.Active,
		Primary:       c.Primary,
		ConnectorID:   c.ConnectorID,
		Node:          c.NodeID,
		Epoch:         c.Epoch,
		RegisteredAt:  c.RegisteredAt.UTC(),
		LastHealthyAt: timePtr(c.LastHealthyAt),
		InFlight:      c.InFlight,
		Local:         c.Local,
		RemoteAddr:    strPtr(c.RemoteAddr),
		Metadata:      md,
	}
}

// channelsOf converts and sorts channels by target and registration time,
// keeping the given order (the controller's registration order) on ties.
func channelsOf(in []controller.ChannelInfo) []Channel {
	out := make([]Channel, 0, len(in))
	for _, c := range in {
		out = append(out, channelOf(c))
	}
	slices.SortStableFunc(out, compareChannels)
	return out
}

func batchOf(b batch.Batch) Batch {
	cmds := make([]BatchCommand, 0, len(b.Commands))
	for _, c := range b.Commands {
		var bc BatchCommand
		if c.Command != nil {
			bc.Command = Command{ID: c.Command.ID, Type: string(c.Command.Type), Payload: payloadJSON(c.Command.Payload)}
		}
		bc.Status = c.Status.String()
		if c.Reply != nil {
			r := replyOf(c.Reply)
			r.CommandID, r.Type = cmp.Or(r.CommandID, bc.Command.ID), cmp.Or(r.Type, bc.Command.Type)
			bc.Reply = &r
		}
		bc.ErrorDetails = strPtr(c.Error)
		cmds = append(cmds, bc)
	}
	out := Batch{
		ID:            b.ID,
		Key:           strPtr(b.Key),
		TargetID:      b.TargetID,
		Status:        b.Status.String(),
		ErrorDetails:  strPtr(b.Error),
		MaxRetry:      batch.DefaultMaxRetry,
		Retry:         b.Retry,
		LastRetryAt:   timePtr(b.LastRetryAt),
		Commands:      cmds,
		NextAttemptAt: timePtr(b.NextAttemptAt),
		CreatedAt:     b.CreatedAt.UTC(),
		UpdatedAt:     b.UpdatedAt.UTC(),
	}
	if b.MaxRetry != nil {
		out.MaxRetry = *b.MaxRetry
	}
	return out
}

// batchesOf converts and sorts batches by creation time and id.
func batchesOf(in []batch.Batch) []Batch {
	out := make([]Batch, 0, len(in))
	for _, b := range in {
		out = append(out, batchOf(b))
	}
	slices.SortStableFunc(out, func(a, b Batch) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

func replyOf(r *command.Reply) Reply {
	out := Reply{
		CommandID: r.CommandID,
		Type:      string(r.Type),
		Status:    r.Status.String(),
		Payload:   payloadJSON(r.Payload),
		Error:     strPtr(r.Error),
	}
	if r.Code != 0 {
		out.Code = &r.Code
	}
	if r.RetryAfter > 0 {
		ms := r.RetryAfter.Milliseconds()
		out.RetryAfterMs = &ms
	}
	return out
}

func clusterOf(c controller.ClusterInfo) Cluster {
	out := Cluster{NodeID: c.NodeID, LeaderID: c.LeaderID, State: c.State, Members: make([]Member, 0, len(c.Members)),
		Term: c.Term, CommitIndex: c.CommitIndex, AppliedIndex: c.AppliedIndex, LastContact: timePtr(c.LastContact)}
	for _, m := range c.Members {
		suffrage := m.Suffrage
		if suffrage == "" {
			suffrage = "none"
		}
		out.Members = append(out.Members, Member{NodeID: m.NodeID, Address: m.Address, State: m.State, Leader: m.Leader,
			Suffrage: suffrage, RaftAddress: m.RaftAddress, GRPCAddress: m.GRPCAddress})
	}
	slices.SortStableFunc(out.Members, func(a, b Member) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out
}

// payloadJSON returns p as JSON: itself when it is JSON nested at most
// jsonlimit.MaxDepth deep, a JSON string otherwise (not JSON, or nested
// deeper: such a payload is shown, not embedded), and nil (null) when empty.
func payloadJSON(p []byte) json.RawMessage {
	if len(p) == 0 {
		return nil
	}
	if jsonlimit.Embeddable(p) {
		return json.RawMessage(slices.Clone(p))
	}
	s, _ := json.Marshal(string(p)) // a string always marshals
	return s
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
