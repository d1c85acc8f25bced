package channel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exchangekit/exchange/command"
)

// Hello runs the connector side of the handshake on a fresh conn: it sends
// HELLO with the given payload and waits for the reply, until ctx is done (in
// which case conn is closed). It must be called before New(conn, …).
//
// A reply with status ERROR yields a *HelloRejectedError: the controller
// refused this connector and retrying will not help. Transport failures and
// timeouts yield other errors (worth a retry).
func Hello(ctx context.Context, conn Conn, hello command.HelloPayload) (command.HelloReplyPayload, error) {
	var none command.HelloReplyPayload
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	if hello.ProtocolVersion == 0 {
		hello.ProtocolVersion = command.ProtocolVersion
	}
	cmd, err := command.NewCommand(command.TypeHello, hello)
	if err != nil {
		return none, err
	}
	if dl, ok := ctx.Deadline(); ok {
		cmd.Timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := conn.Send(&Frame{Command: cmd}); err != nil {
		return none, ctxErr(ctx, fmt.Errorf("channel: hello: send: %w", err))
	}
	f, err := conn.Recv()
	if err != nil {
		return none, ctxErr(ctx, fmt.Errorf("channel: hello: await reply: %w", err))
	}
	if !stop() {
		// ctx ended while the reply arrived: conn is being closed under us.
		return none, ctxErr(ctx, fmt.Errorf("channel: hello: %w", ErrClosed))
	}
	if f == nil || f.Reply == nil || f.Reply.CommandID != cmd.ID {
		return none, fmt.Errorf("channel: hello: %w: first frame from controller is not the HELLO reply", ErrProtocol)
	}
	r := f.Reply
	if r.Status != command.StatusSucceeded {
		reason := r.Error
		if reason == "" {
			reason = "status " + r.Status.String()
		}
		return none, &HelloRejectedError{Reason: reason, Code: r.Code}
	}
	out, err := command.Decode[command.HelloReplyPayload](r.Payload)
	if err != nil {
		return none, fmt.Errorf("channel: hello: %w: reply payload: %w", ErrProtocol, err)
	}
	return out, nil
}

// HelloDecider decides on a connector's HELLO: it returns the reply to send
// (SUCCEEDED with a command.HelloReplyPayload to accept, or an ERROR reply
// built with command.Failed to refuse). An error refuses the channel with the
// error's text.
type HelloDecider func(ctx context.Context, cmd *command.Command, hello command.HelloPayload) (*command.Reply, error)

// AcceptHello runs the controller side of the handshake on a freshly accepted
// conn: the first frame must be a HELLO command; decide produces the reply,
// which is written back. It returns the HELLO payload and the reply sent.
//
// When the first frame is a command but not a HELLO, a HELLO that arrived
// in a batch (conn is a BatchReporter), or a HELLO whose payload is over
// command.MaxHelloBytes (checked before it is decoded), the sender gets an
// ERROR reply (code 400) saying so and the error wraps ErrProtocol. When it
// cannot be answered (no command, no id, a reply, or a one-way HELLO: one-way
// commands get no reply), AcceptHello closes conn itself, through
// CloseWithError when conn has it (the gRPC twin ends the stream with
// INVALID_ARGUMENT), and the error wraps both ErrProtocol and
// ErrMalformedFrame. When decide refuses, the error is a *HelloRejectedError.
// In every case the caller should close conn. If ctx ends first, conn is
// closed. After a SUCCEEDED
// reply it calls conn's HandshakeComplete, if conn is a HandshakeCompleter.
func AcceptHello(ctx context.Context, conn Conn, decide HelloDecider) (command.HelloPayload, *command.Reply, error) {
	var none command.HelloPayload
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	f, err := conn.Recv()
	if err != nil {
		return none, nil, ctxErr(ctx, fmt.Errorf("channel: hello: await HELLO: %w", err))
	}
	if f == nil || f.Command == nil || f.Command.ID == "" || f.Reply != nil {
		// Nothing to answer: end the conn telling the peer why (over gRPC,
		// INVALID_ARGUMENT, docs/protocol.md §3.3).
		return none, nil, unanswerable(conn, "first frame is not a HELLO command")
	}
	if f.Command.OneWay {
		// A one-way command must not be answered, not even refused, and a
		// handshake without a reply is none (docs/protocol.md §4).
		return none, nil, unanswerable(conn, "the HELLO is one-way; it must expect a reply")
	}
	if f.Command.Type != command.TypeHello {
		r := command.Failed(f.Command, "Hello Command is first expected to initialize the exchange channel")
		r.Code = codeBadRequest
		_ = conn.Send(&Frame{Reply: r})
		return none, nil, fmt.Errorf("channel: hello: %w: first frame is not a HELLO command", ErrProtocol)
	}
	if br, ok := conn.(BatchReporter); ok && br.RecvBatched() {
		// Before the handshake the peer knows of no "batch" capability: the
		// HELLO must come alone (docs/protocol.md §3.2).
		r := command.Failed(f.Command, "HELLO must be sent alone, as the first frame, not in a batch")
		r.Code = codeBadRequest
		_ = conn.Send(&Frame{Reply: r})
		return none, nil, fmt.Errorf("channel: hello: %w: HELLO arrived in a batch", ErrProtocol)
	}
	cmd := f.Command
	if n := len(cmd.Payload); n > command.MaxHelloBytes {
		// Refused before decoding: the decoder would allocate what a
		// connector puts in its HELLO, megabytes of it, before any identity
		// check could look at it.
		r := command.Failed(cmd, fmt.Sprintf("HELLO payload is %d bytes; the limit is %d", n, command.MaxHelloBytes))
		r.Code = codeBadRequest
		_ = conn.Send(&Frame{Reply: r})
		return none, nil, fmt.Errorf("channel: hello: %w: payload is %d bytes, over the limit of %d", ErrProtocol, n, command.MaxHelloBytes)
	}
	hello, err := command.Decode[command.HelloPayload](cmd.Payload)
	if err != nil {
		r := command.Failed(cmd, "invalid HELLO payload: "+err.Error())
		r.Code = codeBadRequest
		_ = conn.Send(&Frame{Reply: r})
		return none, nil, fmt.Errorf("channel: hello: %w: %w", ErrProtocol, err)
	}
	reply, err := decide(ctx, cmd, hello)
	switch {
	case err != nil:
		reply = command.Failed(cmd, err.Error())
		reply.Code = 401
	case reply == nil:
		// Never leave the connector waiting for an answer that will not come.
		r := command.Failed(cmd, "internal error: no decision on HELLO")
		r.Code = codeInternal
		_ = conn.Send(&Frame{Reply: r})
		return hello, nil, errors.New("channel: hello: decider returned neither a reply nor an error")
	}
	reply.CommandID = cmd.ID
	reply.Type = command.TypeHello
	if reply.Status == command.StatusUnspecified {
		reply.Status = command.StatusSucceeded
		if reply.Error != "" {
			reply.Status = command.StatusError
		}
	}
	if err := conn.Send(&Frame{Reply: reply}); err != nil {
		return hello, reply, ctxErr(ctx, fmt.Errorf("channel: hello: send reply: %w", err))
	}
	if reply.Status != command.StatusSucceeded {
		reason := reply.Error
		if reason == "" {
			reason = "status " + reply.Status.String()
		}
		return hello, reply, &HelloRejectedError{Reason: reason, Code: reply.Code}
	}
	if !stop() {
		// ctx ended as the reply went out: conn is being closed under us.
		return hello, reply, ctxErr(ctx, fmt.Errorf("channel: hello: %w", ErrClosed))
	}
	if hc, ok := conn.(HandshakeCompleter); ok {
		hc.HandshakeComplete()
	}
	return hello, reply, nil
}

// unanswerable refuses a first frame that cannot be answered: it closes conn
// with the reason (a CloseWithErrorer tells the peer) and returns an error
// wrapping both ErrProtocol and ErrMalformedFrame.
func unanswerable(conn Conn, why string) error {
	err := fmt.Errorf("channel: hello: %w: %w: %s", ErrProtocol, ErrMalformedFrame, why)
	if cw, ok := conn.(CloseWithErrorer); ok {
		_ = cw.CloseWithError(err)
	} else {
		_ = conn.Close()
	}
	return err
}

// ctxErr prefers ctx's error when ctx ending is what broke the conn; the
// transport's error stays wrapped too.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return err
}
