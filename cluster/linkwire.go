package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/state"
)

// The node-to-node link protocol: commands over a channel.Channel carried
// by the Cluster/Link gRPC service (docs/protocol.md, "Node-to-node links").
const (
	// linkTarget is the target a node names in its link HELLO.
	linkTarget = "exchange-cluster"
	// typeApply asks the leader to apply ops: payload an entry (as in the
	// raft log), reply payload the []state.Result.
	typeApply command.Type = "EXCHANGE_CLUSTER_APPLY"
	// typeLinkError marks a reply whose payload is a linkError: the command
	// failed on the receiving node.
	typeLinkError command.Type = "EXCHANGE_CLUSTER_ERROR"
	// metaChannel and metaCommandID carry, on a forwarded command, the
	// channel it is for and the command's own id (the link command has an
	// id of its own: ids are correlation keys per link, and two commands of
	// one id may be forwarded at once).
	metaChannel   = "exchange-forward-channel"
	metaCommandID = "exchange-forward-id"
)

// Kinds of linkError: how a failure on the receiving node is told to the
// sender, which turns it back into the same typed error.
const (
	kindClosed      = "closed"      // channel.ErrClosed
	kindBusy        = "busy"        // *channel.BusyError
	kindRemote      = "remote"      // *channel.RemoteError
	kindUnknown     = "unknown"     // *channel.UnknownCommandError
	kindTimeout     = "timeout"     // context.DeadlineExceeded
	kindCanceled    = "canceled"    // context.Canceled
	kindUnavailable = "unavailable" // state.ErrNodeUnavailable
	kindNotLeader   = "not_leader"  // *NotLeaderError
	kindInternal    = "internal"    // anything else
)

// linkError is a failure as it crosses a link.
type linkError struct {
	Kind         string       `json:"kind"`
	Message      string       `json:"message"`
	RetryAfterMs int64        `json:"retryAfterMs,omitempty"`
	CommandID    string       `json:"commandId,omitempty"`
	Type         command.Type `json:"type,omitempty"`
	LeaderID     string       `json:"leaderId,omitempty"`
}

// encodeLinkError classifies err for the wire.
func encodeLinkError(err error) linkError {
	le := linkError{Kind: kindInternal, Message: err.Error()}
	var (
		busy     *channel.BusyError
		remote   *channel.RemoteError
		unknown  *channel.UnknownCommandError
		nl       *NotLeaderError
		noLeader = errors.Is(err, ErrNotLeader)
	)
	switch {
	case errors.As(err, &busy):
		le.Kind, le.RetryAfterMs = kindBusy, busy.RetryAfter.Milliseconds()
	case errors.As(err, &unknown):
		le.Kind, le.CommandID, le.Type, le.Message = kindUnknown, unknown.CommandID, unknown.Type, unknown.Message
	case errors.As(err, &remote):
		le.Kind, le.CommandID, le.Type, le.Message = kindRemote, remote.CommandID, remote.Type, remote.Message
	case errors.As(err, &nl):
		le.Kind, le.LeaderID = kindNotLeader, nl.LeaderID
	case noLeader:
		le.Kind = kindNotLeader
	case errors.Is(err, context.DeadlineExceeded):
		le.Kind = kindTimeout
	case errors.Is(err, context.Canceled):
		le.Kind = kindCanceled
	case errors.Is(err, channel.ErrClosed):
		le.Kind = kindClosed
	case errors.Is(err, state.ErrNodeUnavailable), errors.Is(err, ErrClosed):
		le.Kind = kindUnavailable
	}
	return le
}

// err turns a linkError back into the typed error it was.
func (le linkError) err(node string) error {
	msg := le.Message
	switch le.Kind {
	case kindBusy:
		return &channel.BusyError{RetryAfter: time.Duration(le.RetryAfterMs) * time.Millisecond, Remote: true}
	case kindUnknown:
		return &channel.UnknownCommandError{CommandID: le.CommandID, Type: le.Type, Message: msg}
	case kindRemote:
		return &channel.RemoteError{CommandID: le.CommandID, Type: le.Type, Message: msg}
	case kindNotLeader:
		return &NotLeaderError{LeaderID: le.LeaderID}
	case kindTimeout:
		return fmt.Errorf("node %s: %s: %w", node, msg, context.DeadlineExceeded)
	case kindCanceled:
		return fmt.Errorf("node %s: %s: %w", node, msg, context.Canceled)
	case kindClosed:
		return fmt.Errorf("node %s: %s: %w", node, msg, channel.ErrClosed)
	case kindUnavailable:
		return fmt.Errorf("node %s: %s: %w", node, msg, state.ErrNodeUnavailable)
	}
	return fmt.Errorf("node %s: %s", node, msg)
}

// errorReply is the reply that carries err to the sender of cmd.
func errorReply(cmd *command.Command, err error) *command.Reply {
	b, _ := json.Marshal(encodeLinkError(err)) // plain strings and numbers always marshal
	return &command.Reply{CommandID: cmd.ID, Type: typeLinkError, Status: command.StatusError, Payload: b, Error: err.Error()}
}

// replyError returns the error a reply carries, if it is an error reply.
func replyError(node string, r *command.Reply) (error, bool) {
	if r == nil || r.Type != typeLinkError {
		return nil, false
	}
	var le linkError
	if err := json.Unmarshal(r.Payload, &le); err != nil {
		return fmt.Errorf("node %s: undecodable link error %q: %w", node, r.Error, err), true
	}
	return le.err(node), true
}

// forwardCommand wraps cmd, for channel ch, as the command sent on a link,
// and returns the id the command goes by on the receiving node: cmd.ID, or
// a new id when cmd has none (as channel.Send gives one), which the link
// command then shares.
func forwardCommand(ch state.ChannelID, cmd *command.Command) (*command.Command, string) {
	lid, id := command.NewID(), cmd.ID
	if id == "" {
		id = lid
	}
	md := make(map[string]string, len(cmd.Metadata)+2)
	for k, v := range cmd.Metadata {
		md[k] = v
	}
	md[metaChannel], md[metaCommandID] = string(ch), id
	return &command.Command{ID: lid, Type: cmd.Type, Payload: cmd.Payload, Metadata: md}, id
}

// forwardedCommand unwraps a command received on a link: the channel it is
// for and the command as its sender sent it.
func forwardedCommand(lc *command.Command) (state.ChannelID, *command.Command, bool) {
	ch, ok := lc.Metadata[metaChannel]
	id := lc.Metadata[metaCommandID]
	if !ok || id == "" {
		return "", nil, false
	}
	var md map[string]string
	if len(lc.Metadata) > 2 {
		md = make(map[string]string, len(lc.Metadata)-2)
		for k, v := range lc.Metadata {
			if k != metaChannel && k != metaCommandID {
				md[k] = v
			}
		}
	}
	return state.ChannelID(ch), &command.Command{ID: id, Type: lc.Type, Payload: lc.Payload, Metadata: md}, true
}
