package wschannel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// The LEGACY frames of the reference system (gravitee-exchange §3.3, §3.4):
// a prefix and the JSON envelope, and two literals for PRIMARY.
//
//	command: {"id":"…","type":"HELLO_COMMAND","payload":{"node":{"installationId":"…"}}}
//	reply: {"commandId":"…","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":"…"}}
//	primary: true
//	replica: true
const (
	legacyCommandPrefix = "command: "
	legacyReplyPrefix   = "reply: "
	legacyPrimary       = "primary: true"
	legacyReplica       = "replica: true"
)

// The legacy protocol's own exchange types (reference §1.8, §3.4).
const (
	TypeLegacyHello        command.Type = "HELLO_COMMAND"
	TypeLegacyHelloReply   command.Type = "HELLO_REPLY"
	TypeLegacyGoodBye      command.Type = "GOODBYE_COMMAND"
	TypeLegacyGoodByeReply command.Type = "GOODBYE_REPLY"
	TypeLegacyIgnoredReply command.Type = "IGNORED_REPLY"
)

// errLegacyReconnect is why a GOOD_BYE asking a legacy peer to reconnect is
// not written: legacy peers cannot be asked to (reference §3.4), so the
// connection is closed instead, which makes them reconnect.
var errLegacyReconnect = fmt.Errorf("%w: a legacy peer cannot be asked to reconnect; the connection is closed instead", channel.ErrClosed)

// AppendLegacyFrame appends the LEGACY encoding of f to dst, with the
// reference's legacy adaptations (§3.4) of the built-in types:
//
//	command HELLO{targetId}       command: {"id","type":"HELLO_COMMAND","payload":{"node":{"installationId":targetId}}}
//	command PRIMARY{primary}      primary: true | replica: true (no JSON, no id: the peer never answers it)
//	command GOOD_BYE{reconnect:false}
//	                              command: {"id","type":"GOODBYE_COMMAND"}
//	command GOOD_BYE{reconnect:true}
//	                              none: an error wrapping channel.ErrClosed (close the connection instead)
//	reply HELLO                   reply: {"commandId","type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":targetId}}
//	                              or, refused, {…,"commandStatus":"ERROR","errorDetails":e,"message":e}
//	reply NO_REPLY                reply: {"commandId","type":"IGNORED_REPLY","commandStatus":"ERROR"}
//
// Every other command and reply is the V1 JSON envelope (see AppendFrame)
// after "command: " or "reply: ". Unlike the reference, a HELLO keeps its
// id (the reference gives HELLO_COMMAND a new one, and leaks the pending
// reply of the old one, weakness 26). It fails like AppendFrame.
func AppendLegacyFrame(dst []byte, f *channel.Frame) ([]byte, error) {
	switch {
	case f == nil:
		return dst, fmt.Errorf("wschannel: encode legacy: %w: nil frame", channel.ErrMalformedFrame)
	case f.Command != nil && f.Reply != nil:
		return dst, fmt.Errorf("wschannel: encode legacy: %w: frame carries both a command and a reply", channel.ErrMalformedFrame)
	case f.Command == nil && f.Reply == nil:
		return dst, fmt.Errorf("wschannel: encode legacy: %w: frame carries neither a command nor a reply", channel.ErrMalformedFrame)
	}
	e := encoder{b: dst}
	if c := f.Command; c != nil {
		switch c.Type {
		case command.TypePrimary:
			p, err := command.Decode[command.PrimaryPayload](c.Payload)
			if err != nil {
				return dst, fmt.Errorf("wschannel: encode legacy: %w: PRIMARY payload: %w", channel.ErrMalformedFrame, err)
			}
			if p.Primary {
				return append(dst, legacyPrimary...), nil
			}
			return append(dst, legacyReplica...), nil
		case command.TypeGoodBye:
			p, err := command.Decode[command.GoodByePayload](c.Payload)
			if err != nil {
				return dst, fmt.Errorf("wschannel: encode legacy: %w: GOOD_BYE payload: %w", channel.ErrMalformedFrame, err)
			}
			if p.Reconnect {
				return dst, errLegacyReconnect
			}
			e.b = append(e.b, legacyCommandPrefix...)
			e.command(&command.Command{ID: c.ID, Type: TypeLegacyGoodBye})
		case command.TypeHello:
			p, err := command.Decode[command.HelloPayload](c.Payload)
			if err != nil {
				return dst, fmt.Errorf("wschannel: encode legacy: %w: HELLO payload: %w", channel.ErrMalformedFrame, err)
			}
			e.b = append(e.b, legacyCommandPrefix...)
			e.b = append(e.b, `{"id":`...)
			e.str(c.ID)
			e.b = append(e.b, `,"type":"HELLO_COMMAND","payload":{"node":{"installationId":`...)
			e.str(p.TargetID)
			e.b = append(e.b, `}}}`...)
		default:
			e.b = append(e.b, legacyCommandPrefix...)
			e.command(c)
		}
	} else {
		r := f.Reply
		e.b = append(e.b, legacyReplyPrefix...)
		switch r.Type {
		case command.TypeHello:
			e.b = append(e.b, `{"commandId":`...)
			e.str(r.CommandID)
			if r.Status == command.StatusSucceeded {
				p, err := command.Decode[command.HelloReplyPayload](r.Payload)
				if err != nil {
					return dst, fmt.Errorf("wschannel: encode legacy: %w: HELLO reply payload: %w", channel.ErrMalformedFrame, err)
				}
				e.b = append(e.b, `,"type":"HELLO_REPLY","commandStatus":"SUCCEEDED","payload":{"installationId":`...)
				e.str(p.TargetID)
				e.b = append(e.b, `}}`...)
			} else {
				e.b = append(e.b, `,"type":"HELLO_REPLY","commandStatus":"ERROR","errorDetails":`...)
				e.str(r.Error)
				e.b = append(e.b, `,"message":`...)
				e.str(r.Error)
				e.b = append(e.b, '}')
			}
		case command.TypeNoReply:
			e.b = append(e.b, `{"commandId":`...)
			e.str(r.CommandID)
			e.b = append(e.b, `,"type":"IGNORED_REPLY","commandStatus":"ERROR"}`...)
		default:
			e.reply(r)
		}
	}
	if e.bad != "" {
		return dst, fmt.Errorf("wschannel: encode legacy: %w: %s is not UTF-8", channel.ErrMalformedFrame, e.bad)
	}
	return e.b, nil
}

// legacyEnvelope is a legacy exchange: the V1 envelope and the top-level
// fields of the legacy replies.
type legacyEnvelope struct {
	envelope
	InstallationID *string `json:"installationId"`
	Message        string  `json:"message"`
}

// legacyHelloPayload is the payload of HELLO_COMMAND.
type legacyHelloPayload struct {
	Node struct {
		InstallationID string `json:"installationId"`
	} `json:"node"`
}

// DecodeLegacyFrame decodes a LEGACY frame, with the reference's adaptations
// of the legacy types (§3.4) into ours:
//
//	command: {…"type":"HELLO_COMMAND","payload":{"node":{"installationId":X}}}
//	                                   command HELLO{targetId:X}, same id
//	reply: {…"type":"GOODBYE_REPLY"…,"installationId":X}
//	                                   reply GOOD_BYE{targetId:X}, same status
//	reply: {…"type":"HELLO_REPLY"…,"payload":{"installationId":X}}
//	                                   reply HELLO{targetId:X}, same status
//	reply: {…"type":"IGNORED_REPLY"…}  reply NO_REPLY, status ERROR
//	primary: true, replica: true       command PRIMARY{primary:true|false}, a new id
//
// Everything else after "command: " or "reply: " is read as the V1 envelope
// (see DecodeFrame). Only the leading prefix is removed (the reference
// removes every occurrence of it in the frame, weakness 26). Anything else
// fails with an error wrapping channel.ErrMalformedFrame.
func DecodeLegacyFrame(b []byte) (*channel.Frame, error) {
	t := bytes.TrimSpace(b)
	switch string(t) {
	case legacyPrimary, legacyReplica:
		return &channel.Frame{Command: &command.Command{
			ID:      command.NewID(),
			Type:    command.TypePrimary,
			Payload: fmt.Appendf(nil, `{"primary":%t}`, string(t) == legacyPrimary),
		}}, nil
	}
	var kind string
	switch {
	case bytes.HasPrefix(t, []byte(strings.TrimSpace(legacyCommandPrefix))):
		kind, t = kindCommand, t[len(legacyCommandPrefix)-1:]
	case bytes.HasPrefix(t, []byte(strings.TrimSpace(legacyReplyPrefix))):
		kind, t = kindReply, t[len(legacyReplyPrefix)-1:]
	default:
		return nil, fmt.Errorf("wschannel: decode legacy: %w: Exchange message unknown: %s", channel.ErrMalformedFrame, abbrev(b))
	}
	var env legacyEnvelope
	if err := json.Unmarshal(t, &env); err != nil {
		return nil, fmt.Errorf("wschannel: decode legacy: %w: %s exchange: %v", channel.ErrMalformedFrame, strings.ToLower(kind), err)
	}
	f := env.frame(kind)
	switch {
	case f.Command != nil && f.Command.Type == TypeLegacyHello:
		var p legacyHelloPayload
		if len(f.Command.Payload) > 0 {
			if err := json.Unmarshal(f.Command.Payload, &p); err != nil {
				return nil, fmt.Errorf("wschannel: decode legacy: %w: HELLO_COMMAND payload: %v", channel.ErrMalformedFrame, err)
			}
		}
		f.Command.Type = command.TypeHello
		f.Command.Payload = mustJSON(command.HelloPayload{TargetID: p.Node.InstallationID})
	case f.Reply != nil && f.Reply.Type == TypeLegacyGoodByeReply:
		f.Reply.Type = command.TypeGoodBye
		f.Reply.Payload = nil
		if env.InstallationID != nil {
			f.Reply.Payload = mustJSON(command.GoodByeReplyPayload{TargetID: *env.InstallationID})
		}
	case f.Reply != nil && f.Reply.Type == TypeLegacyHelloReply:
		var p struct {
			InstallationID string `json:"installationId"`
		}
		if len(f.Reply.Payload) > 0 {
			if err := json.Unmarshal(f.Reply.Payload, &p); err != nil {
				return nil, fmt.Errorf("wschannel: decode legacy: %w: HELLO_REPLY payload: %v", channel.ErrMalformedFrame, err)
			}
		}
		f.Reply.Type = command.TypeHello
		f.Reply.Payload = nil
		if f.Reply.Status == command.StatusSucceeded {
			f.Reply.Payload = mustJSON(map[string]string{"targetId": p.InstallationID})
		}
		if f.Reply.Error == "" {
			f.Reply.Error = env.Message
		}
	case f.Reply != nil && f.Reply.Type == TypeLegacyIgnoredReply:
		f.Reply.Type = command.TypeNoReply
		f.Reply.Status = command.StatusError
		if f.Reply.Error == "" {
			f.Reply.Error = "the legacy peer ignored the command (IGNORED_REPLY)"
		}
	}
	return f, nil
}

// mustJSON marshals one of the built-in payloads, which cannot fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
