package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
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

// A forwarded command travels on a link with an id of its own, which also
// carries its address: "f<seq>.<len(channel)>.<channel><command id>". Ids
// are the correlation keys of a link, and two commands of one id may be
// forwarded at once, so seq (per process) keeps them apart; carrying the
// channel and the command's own id in the id rather than in metadata spares
// a map on the wire for every forwarded command (protobuf maps cost an
// allocation per entry to decode), which measured about a fifth of the
// forwarded path's allocations.
var forwardSeq atomic.Uint64

// forwardCommand wraps cmd, for channel ch, as the command sent on a link,
// and returns it with the id the command goes by (cmd's, or the link's when
// cmd has none: a channel fills in an empty id, and so does the link). An id
// the link makes is made for this forward alone, as a channel's is: the link
// command says so (FreshID), and so does the command delivered on the other
// node, whose connector then keeps no dedup entry for it (decision 0051).
func forwardCommand(ch state.ChannelID, cmd *command.Command) (*command.Command, string) {
	seq := forwardSeq.Add(1)
	id, fresh := cmd.ID, cmd.FreshID
	if id == "" {
		id, fresh = command.NewID(), true
	}
	// One allocation for the id: the digits go through a buffer on the
	// stack, and the Builder's string is its own buffer.
	var num [20]byte
	var sb strings.Builder
	sb.Grow(1 + 13 + 1 + 20 + 1 + len(ch) + len(id))
	sb.WriteByte('f')
	sb.Write(strconv.AppendUint(num[:0], seq, 36))
	sb.WriteByte('.')
	sb.Write(strconv.AppendInt(num[:0], int64(len(ch)), 10))
	sb.WriteByte('.')
	sb.WriteString(string(ch))
	sb.WriteString(id)
	return &command.Command{ID: sb.String(), Type: cmd.Type, Payload: cmd.Payload, Metadata: cmd.Metadata, FreshID: fresh}, id
}

// forwardedCommand unwraps a command received on a link: the channel it is
// for and the command as its sender sent it.
func forwardedCommand(lc *command.Command) (state.ChannelID, *command.Command, bool) {
	rest, ok := strings.CutPrefix(lc.ID, "f")
	if !ok {
		return "", nil, false
	}
	_, rest, ok = strings.Cut(rest, ".") // seq
	if !ok {
		return "", nil, false
	}
	n, rest, ok := strings.Cut(rest, ".")
	chLen, err := strconv.Atoi(n)
	if !ok || err != nil || chLen < 0 || chLen > len(rest) {
		return "", nil, false
	}
	ch, id := rest[:chLen], rest[chLen:]
	if id == "" {
		return "", nil, false
	}
	return state.ChannelID(ch), &command.Command{ID: id, Type: lc.Type, Payload: lc.Payload, Metadata: lc.Metadata, FreshID: lc.FreshID}, true
}
