package command

// Built-in command types. The strings match the reference system.
const (
	// TypeHello is the first command on every channel, connector → controller.
	TypeHello Type = "HELLO"
	// TypeGoodBye asks the peer to disconnect, and to reconnect if Reconnect is set.
	TypeGoodBye Type = "GOOD_BYE"
	// TypeHealthCheck asks a connector for its business health.
	TypeHealthCheck Type = "HEALTH_CHECK"
	// TypePrimary tells a connector whether it is its target's primary channel.
	TypePrimary Type = "PRIMARY"
	// TypeUnknown marks a reply to a command type the receiver has no handler for.
	TypeUnknown Type = "UNKNOWN"
	// TypeNoReply marks a reply to a command whose handler failed (returned an
	// error or panicked) instead of answering.
	TypeNoReply Type = "NO_REPLY"
)

// ProtocolVersion is the version of the exchange protocol this package speaks.
// It is negotiated in HELLO: the controller answers with the highest version
// both sides support.
const ProtocolVersion = 1

// CapabilityBatch is the HELLO capability of a peer that accepts batch frames:
// several frames coalesced into one transport message (docs/protocol.md
// §3.2). A connector lists it in HelloPayload.Capabilities, a controller in
// HelloReplyPayload.Capabilities; a peer sends batches only to a peer that
// listed it.
const CapabilityBatch = "batch"

// HelloPayload is the payload of HELLO. TargetID is the reference field; the
// rest are ours.
type HelloPayload struct {
	TargetID        string            `json:"targetId"`
	ConnectorID     string            `json:"connectorId,omitempty"`
	Token           string            `json:"token,omitempty"`
	ProtocolVersion int               `json:"protocolVersion,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	// Capabilities lists optional protocol features the connector supports,
	// such as "batch" (coalesced frames).
	Capabilities []string `json:"capabilities,omitempty"`
	// Instance identifies the running connector (random per process run,
	// an id of at most MaxIDBytes) and Attempt numbers its connection
	// attempts, growing with each. With them the controller tells a stale
	// attempt, registered late, from the connector's current channel: a
	// stale one never takes the current one over (decision 0018). Both
	// are optional.
	Instance string `json:"instance,omitempty"`
	Attempt  uint64 `json:"attempt,omitempty"`
}

// Limits are the controller's limits, announced in the HELLO reply.
type Limits struct {
	// MaxFrameBytes is the largest frame either side may send.
	MaxFrameBytes int `json:"maxFrameBytes,omitempty"`
	// MaxInFlight is how many commands a sender may have awaiting replies on
	// the channel; beyond it commands are rejected with a retry-after.
	MaxInFlight int `json:"maxInFlight,omitempty"`
}

// HelloReplyPayload is the payload of the HELLO reply. TargetID is the
// reference field: the connector adopts it (the controller may rewrite the
// target it asked for).
type HelloReplyPayload struct {
	TargetID        string `json:"targetId"`
	ChannelID       string `json:"channelId,omitempty"`
	ProtocolVersion int    `json:"protocolVersion,omitempty"`
	Limits          Limits `json:"limits"`
	// HeartbeatMs is the controller's health-check interval, so a connector can
	// tell a silent controller from a quiet one.
	HeartbeatMs  int64    `json:"heartbeat,omitempty"`
	NodeID       string   `json:"nodeId,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// GoodByePayload is the payload of GOOD_BYE.
type GoodByePayload struct {
	TargetID  string `json:"targetId"`
	Reconnect bool   `json:"reconnect"`
}

// GoodByeReplyPayload is the payload of the GOOD_BYE reply.
type GoodByeReplyPayload struct {
	TargetID string `json:"targetId"`
}

// HealthCheckPayload is the (empty) payload of HEALTH_CHECK.
type HealthCheckPayload struct{}

// HealthCheckReplyPayload is the payload of the HEALTH_CHECK reply.
type HealthCheckReplyPayload struct {
	Healthy bool   `json:"healthy"`
	Detail  string `json:"detail,omitempty"`
}

// PrimaryPayload is the payload of PRIMARY. Epoch is ours: it increases every
// time the target's primary changes, so downstream systems can fence off a
// stale primary.
type PrimaryPayload struct {
	Primary bool   `json:"primary"`
	Epoch   uint64 `json:"epoch,omitempty"`
}

// PrimaryReplyPayload is the (empty) payload of the PRIMARY reply.
type PrimaryReplyPayload struct{}
