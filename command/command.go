package command

import (
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Type names a kind of command, such as "HELLO" or "ECHO". Types are
// case-sensitive.
type Type string

// Command is a request sent over a channel. It is answered by exactly one Reply
// unless OneWay is set.
type Command struct {
	// ID correlates the command with its reply. It must be unique among the
	// commands a sender has in flight on one channel. NewCommand assigns a random
	// UUID; a caller may set a stable id (for example to deduplicate retries).
	ID string
	// Type selects the handler on the receiving side.
	Type Type
	// Payload is opaque to the exchange; JSON by convention.
	Payload []byte
	// Metadata carries string key/value pairs (tracing ids, tenant, …).
	Metadata map[string]string
	// OneWay marks an event: the receiver runs its handler and sends no reply.
	OneWay bool
	// FreshID reports that ID was made for this one delivery: no command
	// with this ID is ever sent again. A receiver need not remember such an
	// ID to deduplicate retries, and the connector's dedup window does not.
	// The sending channel sets it when it makes the ID (the command had
	// none: a caller that sends the same command again, without an ID, gets
	// another one). A caller that makes an ID for one delivery alone may set
	// it too (the cluster does, for a command it forwards without an ID of
	// its own); set on a command that is sent again, it turns deduplication
	// off for it. To have retries deduplicated, give the command its ID
	// before the first send, and leave FreshID unset.
	FreshID bool
	// Timeout is how long the sender will wait for the reply; zero means unknown.
	// The channel fills it from the sender's context deadline so the receiver's
	// handler context expires when the sender stops waiting.
	Timeout time.Duration
}

// Clone returns a deep copy of c.
func (c *Command) Clone() *Command {
	if c == nil {
		return nil
	}
	out := *c
	out.Payload = slices.Clone(c.Payload)
	out.Metadata = maps.Clone(c.Metadata)
	return &out
}

// String returns "TYPE[id]", handy in logs and error messages.
func (c *Command) String() string {
	if c == nil {
		return "<nil command>"
	}
	return fmt.Sprintf("%s[%s]", c.Type, c.ID)
}

// Reply answers a Command.
type Reply struct {
	// CommandID is the ID of the command being answered.
	CommandID string
	// Type is normally the command's type. The reserved types UNKNOWN and
	// NO_REPLY mark replies produced by the channel itself.
	Type Type
	// Status tells whether the command succeeded. A reply with StatusError is a
	// valid answer: the caller must look at Status.
	Status Status
	// Payload is opaque to the exchange; JSON by convention.
	Payload []byte
	// Error is a human-readable reason when Status is StatusError.
	Error string
	// RetryAfter, when positive, tells the sender when it may try again (the
	// receiver was busy).
	RetryAfter time.Duration
	// Code is an optional application status, HTTP-like (200, 400, 404, 429, 500).
	Code int32
}

// Clone returns a deep copy of r.
func (r *Reply) Clone() *Reply {
	if r == nil {
		return nil
	}
	out := *r
	out.Payload = slices.Clone(r.Payload)
	return &out
}

// Complete sets the fields of r that a channel sets on a handler's reply to c
// before sending it: CommandID to c's ID, an empty Type to c's type, and an
// unspecified Status to SUCCEEDED (ERROR if Error is set). IsCompleteFor(c)
// holds afterwards.
func (r *Reply) Complete(c *Command) {
	r.CommandID = c.ID
	if r.Type == "" {
		r.Type = c.Type
	}
	if r.Status == StatusUnspecified {
		r.Status = StatusSucceeded
		if r.Error != "" {
			r.Status = StatusError
		}
	}
}

// IsCompleteFor reports whether Complete(c) would change nothing: r answers
// c by id, and has a type and a status. A channel sends such a reply as it
// is, without a copy.
func (r *Reply) IsCompleteFor(c *Command) bool {
	return r.CommandID == c.ID && r.Type != "" && r.Status != StatusUnspecified
}

// Succeeded reports whether the reply has StatusSucceeded.
func (r *Reply) Succeeded() bool { return r != nil && r.Status == StatusSucceeded }

// NewID returns a random (version 4) UUID in its canonical 36-character form.
// Its 122 random bits come from a math/rand/v2.ChaCha8 stream (a
// cryptographically strong generator) seeded from crypto/rand, one per P, as
// the channel's own ids do (decision 0037): a crypto/rand read per id cost
// about 200 ns, and a forwarded command and every health check make one.
func NewID() string {
	g := idRands.Get().(*rand.ChaCha8)
	var b [16]byte
	_, _ = g.Read(b[:]) // never fails
	idRands.Put(g)
	var s [36]byte
	EncodeUUID(s[:], b)
	return string(s[:])
}

// idRands keeps a ChaCha8 generator per P for NewID (plain memory, so it may
// be process-wide); a generator the collector drops is seeded afresh.
var idRands = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails (Go 1.24+).
	return rand.NewChaCha8(seed)
}}

// EncodeUUID writes the 16 random bytes b into d (at least 36 bytes) as a
// version 4 UUID in its canonical form: the version and variant bits are
// set, the rest of b is kept.
func EncodeUUID(d []byte, b [16]byte) {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	hex.Encode(d[0:8], b[0:4])
	d[8] = '-'
	hex.Encode(d[9:13], b[4:6])
	d[13] = '-'
	hex.Encode(d[14:18], b[6:8])
	d[18] = '-'
	hex.Encode(d[19:23], b[8:10])
	d[23] = '-'
	hex.Encode(d[24:36], b[10:16])
}
