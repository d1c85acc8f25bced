// Package refclient is a connector of the reference system (gravitee-exchange)
// written from its documented frames only (reference §3: V1 and LEGACY
// frames, the JSON envelope, the hello, PRIMARY, HEALTH_CHECK and GOOD_BYE
// behaviour of its connector), for interop tests. It deliberately shares no
// code with channel/wschannel: frames are built as strings and read with
// encoding/json, over a raw github.com/coder/websocket connection, so that a
// bug in wschannel's codec cannot hide itself by being on both ends.
package refclient

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// The two protocols, as the X-Gravitee-Exchange-Protocol header names them.
const (
	V1     = "v1"
	Legacy = "legacy"
)

// Frame is one frame as read off the wire.
type Frame struct {
	// Raw is the frame's text, as received.
	Raw string
	// Kind is "COMMAND" or "REPLY"; for the legacy PRIMARY literals it is
	// "COMMAND" too, with Type "PRIMARY" and Primary set.
	Kind string
	// Type is the exchange's JSON "type".
	Type string
	// Exchange is the exchange's JSON object (nil for the PRIMARY literals).
	Exchange map[string]any
	// Primary is the value of a legacy "primary: true" / "replica: true".
	Primary bool
}

// ID returns the exchange's "id" (a command's) or "commandId" (a reply's).
func (f Frame) ID() string {
	if f.Kind == "REPLY" {
		s, _ := f.Exchange["commandId"].(string)
		return s
	}
	s, _ := f.Exchange["id"].(string)
	return s
}

// Payload returns the exchange's "payload" object, or nil.
func (f Frame) Payload() map[string]any {
	p, _ := f.Exchange["payload"].(map[string]any)
	return p
}

// Str returns the exchange's string field k.
func (f Frame) Str(k string) string {
	s, _ := f.Exchange[k].(string)
	return s
}

// NewID returns a random UUID in the canonical 36-character form, as the
// reference's ids are.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Command builds the text of a command frame: V1
// "t:COMMAND;;et:TYPE;;e:{"id":ID,"type":TYPE,"payload":PAYLOAD}" or LEGACY
// "command: {…}". payload is JSON, or "" for none.
func Command(proto, id, typ, payload string) string {
	js := `{"id":` + quote(id) + `,"type":` + quote(typ)
	if payload != "" {
		js += `,"payload":` + payload
	}
	js += "}"
	if proto == Legacy {
		return "command: " + js
	}
	return "t:COMMAND;;et:" + typ + ";;e:" + js
}

// Reply builds the text of a reply frame, fields in the reference's order:
// commandId, type, commandStatus, errorDetails (if not ""), payload (if not
// "").
func Reply(proto, commandID, typ, status, errorDetails, payload string) string {
	js := `{"commandId":` + quote(commandID) + `,"type":` + quote(typ) + `,"commandStatus":` + quote(status)
	if errorDetails != "" {
		js += `,"errorDetails":` + quote(errorDetails)
	}
	if payload != "" {
		js += `,"payload":` + payload
	}
	js += "}"
	if proto == Legacy {
		return "reply: " + js
	}
	return "t:REPLY;;et:" + typ + ";;e:" + js
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Parse reads a frame of proto as the reference's readers do (§3.2, §3.3).
func Parse(proto string, raw []byte) (Frame, error) {
	f := Frame{Raw: string(raw)}
	var js string
	if proto == Legacy {
		s := strings.TrimSpace(string(raw))
		switch {
		case s == "primary: true", s == "replica: true":
			f.Kind, f.Type, f.Primary = "COMMAND", "PRIMARY", s == "primary: true"
			return f, nil
		case strings.HasPrefix(s, "command: "):
			f.Kind, js = "COMMAND", strings.TrimPrefix(s, "command: ")
		case strings.HasPrefix(s, "reply: "):
			f.Kind, js = "REPLY", strings.TrimPrefix(s, "reply: ")
		default:
			return f, fmt.Errorf("refclient: not a legacy frame: %q", s)
		}
	} else {
		parts := strings.Split(string(raw), ";;")
		for i, p := range parts {
			p = strings.TrimSpace(p)
			switch {
			case strings.HasPrefix(p, "t:"):
				f.Kind = strings.TrimPrefix(p, "t:")
			case strings.HasPrefix(p, "e:"):
				js = strings.TrimPrefix(strings.Join(parts[i:], ";;"), "e:")
			}
			if js != "" {
				break
			}
		}
		if f.Kind != "COMMAND" && f.Kind != "REPLY" {
			return f, fmt.Errorf("refclient: not a V1 frame: %q", raw)
		}
	}
	if err := json.Unmarshal([]byte(js), &f.Exchange); err != nil {
		return f, fmt.Errorf("refclient: exchange of %q: %w", raw, err)
	}
	f.Type, _ = f.Exchange["type"].(string)
	return f, nil
}

// Client is one connection of a reference connector.
type Client struct {
	Proto string
	WS    *websocket.Conn
	// Resp is the upgrade's HTTP response.
	Resp *http.Response
}

// Dial opens a connection to url (the full URL of the endpoint, path
// included), sending the protocol header (unless proto is "", a legacy
// client that sends none) and header. On a refused upgrade the error
// carries the HTTP status and Resp is set.
func Dial(ctx context.Context, url, proto string, header http.Header) (*Client, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if proto != "" {
		h.Set("X-Gravitee-Exchange-Protocol", proto)
	} else {
		proto = Legacy // the reference's default
	}
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		if resp != nil {
			return &Client{Proto: proto, Resp: resp}, fmt.Errorf("refclient: dial %s: HTTP %d: %w", url, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("refclient: dial %s: %w", url, err)
	}
	ws.SetReadLimit(13107200) // the reference's maxWebSocketMessageSize
	return &Client{Proto: proto, WS: ws, Resp: resp}, nil
}

// Write sends text as one binary message, as the reference does.
func (c *Client) Write(ctx context.Context, text string) error {
	return c.WS.Write(ctx, websocket.MessageBinary, []byte(text))
}

// Read returns the next frame. A close from the peer is an error for which
// websocket.CloseStatus gives the code.
func (c *Client) Read(ctx context.Context) (Frame, error) {
	for {
		typ, b, err := c.WS.Read(ctx)
		if err != nil {
			return Frame{}, err
		}
		if typ != websocket.MessageBinary {
			return Frame{}, fmt.Errorf("refclient: %v message: the reference closes with 1003", typ)
		}
		if len(b) == 0 {
			continue // the reference ignores empty frames
		}
		return Parse(c.Proto, b)
	}
}

// Handler answers a command the client received; it returns the reply
// frame's text, or "" to send nothing.
type Handler func(f Frame) string

// Connector runs a read loop over a Client as the reference's connector
// does after its hello: commands go to Handlers (by type; PRIMARY,
// HEALTH_CHECK and GOOD_BYE have defaults), replies to the waiting Send.
type Connector struct {
	*Client
	Handlers map[string]Handler

	mu       sync.Mutex
	waiting  map[string]chan Frame
	received []Frame
	primary  []bool
	notify   chan struct{}
	done     chan struct{}
	err      error // why the loop ended: the close, typically
}

// Hello runs the connector's handshake (§3.5, §3.4): V1 HELLO{targetId},
// LEGACY HELLO_COMMAND{node:{installationId}}. It returns the reply frame.
func (c *Client) Hello(ctx context.Context, targetID string) (Frame, error) {
	id := NewID()
	var text string
	if c.Proto == Legacy {
		text = Command(Legacy, id, "HELLO_COMMAND", `{"node":{"installationId":`+quote(targetID)+`}}`)
	} else {
		text = Command(V1, id, "HELLO", `{"targetId":`+quote(targetID)+`}`)
	}
	if err := c.Write(ctx, text); err != nil {
		return Frame{}, err
	}
	f, err := c.Read(ctx)
	if err != nil {
		return f, err
	}
	if f.Kind != "REPLY" || f.ID() != id {
		return f, fmt.Errorf("refclient: hello: got %q, want the reply to %s", f.Raw, id)
	}
	return f, nil
}

// Start runs the read loop until the connection ends.
func (c *Client) Start(handlers map[string]Handler) *Connector {
	k := &Connector{Client: c, Handlers: handlers, waiting: map[string]chan Frame{},
		notify: make(chan struct{}), done: make(chan struct{})}
	go k.loop()
	return k
}

func (k *Connector) loop() {
	defer close(k.done)
	ctx := context.Background()
	for {
		f, err := k.Read(ctx)
		if err != nil {
			k.mu.Lock()
			k.err = err
			k.mu.Unlock()
			k.wake()
			return
		}
		if f.Kind == "REPLY" {
			k.mu.Lock()
			ch := k.waiting[f.ID()]
			delete(k.waiting, f.ID())
			k.mu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		k.mu.Lock()
		k.received = append(k.received, f)
		if f.Type == "PRIMARY" {
			p := f.Primary
			if k.Proto != Legacy {
				p, _ = f.Payload()["primary"].(bool)
			}
			k.primary = append(k.primary, p)
		}
		k.mu.Unlock()
		k.wake()
		if h := k.Handlers[f.Type]; h != nil {
			if r := h(f); r != "" {
				_ = k.Write(ctx, r)
			}
			continue
		}
		k.builtin(ctx, f)
	}
}

// builtin is the reference connector's default behaviour (§4.4, §3.6).
func (k *Connector) builtin(ctx context.Context, f Frame) {
	switch {
	case f.Type == "PRIMARY" && k.Proto == Legacy:
		// no reply: the legacy PRIMARY is a literal without id
	case f.Type == "PRIMARY":
		_ = k.Write(ctx, Reply(k.Proto, f.ID(), "PRIMARY", "SUCCEEDED", "", "{}"))
	case f.Type == "HEALTH_CHECK":
		_ = k.Write(ctx, Reply(k.Proto, f.ID(), "HEALTH_CHECK", "SUCCEEDED", "", `{"healthy":true}`))
	case f.Type == "GOOD_BYE":
		// Never answered on the wire: the connector closes (§3.6).
		if re, _ := f.Payload()["reconnect"].(bool); re {
			_ = k.WS.Close(websocket.StatusTryAgainLater, "GoodBye Command with reconnection requested.")
		} else {
			_ = k.WS.Close(websocket.StatusNormalClosure, "GoodBye Command without reconnection.")
		}
	case f.Type == "GOODBYE_COMMAND":
		_ = k.Write(ctx, `reply: {"commandId":`+quote(f.ID())+`,"type":"GOODBYE_REPLY","commandStatus":"SUCCEEDED"}`)
		_ = k.WS.Close(websocket.StatusNormalClosure, "GoodBye Command without reconnection.")
	case k.Proto == Legacy:
		_ = k.Write(ctx, `reply: {"commandId":`+quote(f.ID())+`,"type":"IGNORED_REPLY","commandStatus":"ERROR"}`)
	default:
		_ = k.Write(ctx, Reply(k.Proto, f.ID(), "NO_REPLY", "ERROR", "No handler found for command type '"+f.Type+"'. Ignoring", "{}"))
	}
}

func (k *Connector) wake() {
	k.mu.Lock()
	close(k.notify)
	k.notify = make(chan struct{})
	k.mu.Unlock()
}

// Send writes a command frame (text, whose exchange id is id) and waits for
// its reply.
func (k *Connector) Send(ctx context.Context, id, text string) (Frame, error) {
	ch := make(chan Frame, 1)
	k.mu.Lock()
	k.waiting[id] = ch
	k.mu.Unlock()
	if err := k.Write(ctx, text); err != nil {
		return Frame{}, err
	}
	select {
	case f := <-ch:
		return f, nil
	case <-k.done:
		return Frame{}, fmt.Errorf("refclient: connection ended before the reply to %s: %w", id, k.Err())
	case <-ctx.Done():
		return Frame{}, ctx.Err()
	}
}

// WaitFor waits until cond, given the commands received so far, holds.
func (k *Connector) WaitFor(ctx context.Context, what string, cond func(received []Frame, primary []bool) bool) error {
	for {
		k.mu.Lock()
		ok := cond(append([]Frame(nil), k.received...), append([]bool(nil), k.primary...))
		ch := k.notify
		k.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-k.done:
			k.mu.Lock()
			ok := cond(append([]Frame(nil), k.received...), append([]bool(nil), k.primary...))
			k.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("refclient: connection ended waiting for %s: %w", what, k.Err())
		case <-ctx.Done():
			return fmt.Errorf("refclient: waiting for %s: %w", what, ctx.Err())
		}
	}
}

// Primary returns the last PRIMARY value received and whether any came.
func (k *Connector) Primary() (primary, known bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.primary) == 0 {
		return false, false
	}
	return k.primary[len(k.primary)-1], true
}

// Done is closed when the read loop ended.
func (k *Connector) Done() <-chan struct{} { return k.done }

// Err is why the read loop ended (nil while it runs).
func (k *Connector) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// CloseStatus returns the close code the peer sent, once Done, or -1.
func (k *Connector) CloseStatus() (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(k.Err(), &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

// Close closes the connection (1000) and waits for the read loop.
func (k *Connector) Close() {
	_ = k.WS.Close(websocket.StatusNormalClosure, "")
	<-k.done
}
