package command

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrUnknownCommand is returned by Mux when no handler is registered for a
// command's type. A channel answers such a command with an UNKNOWN reply.
var ErrUnknownCommand = errors.New("command: unknown command type")

// Handler answers commands.
//
// Handle returns the reply to send. A non-nil error means the handler failed
// to produce an answer: the channel sends the peer a NO_REPLY error reply
// carrying the error text, and the connection stays up. To answer "no", return
// a reply built with Failed and a nil error. Handle must honour ctx: it is
// cancelled when the sender stops waiting or the channel closes.
//
// The reply returned, and its Payload, belong to the channel from then on:
// the handler must not modify them afterwards (the channel may write the
// reply after Handle returns, and a connector's dedup window keeps it to
// answer a duplicate). Returning the same reply, or payload, to many commands
// is fine as long as nobody modifies it.
type Handler interface {
	Handle(ctx context.Context, c *Command) (*Reply, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c *Command) (*Reply, error)

// Handle calls f(ctx, c).
func (f HandlerFunc) Handle(ctx context.Context, c *Command) (*Reply, error) { return f(ctx, c) }

// Mux dispatches commands to handlers by Type. It is safe for concurrent use;
// handlers may be added while commands are being served.
type Mux struct {
	mu sync.RWMutex     // protects m
	m  map[Type]Handler // registered handlers
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{m: make(map[Type]Handler)} }

// Register registers h for type t, replacing any handler registered before.
// It panics if t is empty or h is nil, as http.ServeMux does.
func (m *Mux) Register(t Type, h Handler) {
	if t == "" || h == nil {
		panic("command: Mux.Register needs a type and a handler")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[Type]Handler)
	}
	m.m[t] = h
}

// RegisterFunc registers f for type t.
func (m *Mux) RegisterFunc(t Type, f func(ctx context.Context, c *Command) (*Reply, error)) {
	m.Register(t, HandlerFunc(f))
}

// RegisterIfAbsent registers h for t unless a handler is already registered, and
// reports whether it did. Frameworks use it to install defaults that a user's
// own handler overrides (the reference's "first registered wins").
func (m *Mux) RegisterIfAbsent(t Type, h Handler) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t == "" || h == nil {
		panic("command: Mux.RegisterIfAbsent needs a type and a handler")
	}
	if m.m == nil {
		m.m = make(map[Type]Handler)
	}
	if _, ok := m.m[t]; ok {
		return false
	}
	m.m[t] = h
	return true
}

// Handler returns the handler for t, if any.
func (m *Mux) Handler(t Type) (Handler, bool) {
	if m == nil {
		return nil, false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	h, ok := m.m[t]
	return h, ok
}

// Handle dispatches c to the handler for its type, or fails with an error
// wrapping ErrUnknownCommand.
func (m *Mux) Handle(ctx context.Context, c *Command) (*Reply, error) {
	h, ok := m.Handler(c.Type)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownCommand, c.Type)
	}
	return h.Handle(ctx, c)
}

// Typed adapts a function over decoded payloads to a Handler: the command's
// payload is decoded into In (a decoding failure becomes an ERROR reply naming
// the problem), and the returned Out is encoded as a SUCCEEDED reply. An error
// from fn is returned as the handler's error (the peer gets NO_REPLY).
func Typed[In, Out any](fn func(ctx context.Context, in In) (Out, error)) Handler {
	return HandlerFunc(func(ctx context.Context, c *Command) (*Reply, error) {
		in, err := Decode[In](c.Payload)
		if err != nil {
			r := Failed(c, err.Error())
			r.Code = 400
			return r, nil
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return Succeeded(c, out)
	})
}

// Types returns the registered command types, in no particular order.
func (m *Mux) Types() []Type {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Type, 0, len(m.m))
	for t := range m.m {
		out = append(out, t)
	}
	return out
}
