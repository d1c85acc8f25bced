package connector

import (
	"strconv"
	"time"
)

// State is the connection state of a Connector.
type State int32

// The states. A Connector starts Idle; Run moves it through
// Connecting → Connected → Disconnected → Connecting … and finally Stopped.
// Every Connecting is followed by exactly one Connected or Disconnected, and
// every Connected by exactly one Disconnected.
const (
	// StateIdle: created, Run not called yet.
	StateIdle State = iota
	// StateConnecting: dialing an endpoint and running the HELLO handshake.
	StateConnecting
	// StateConnected: a channel is live; Send works.
	StateConnected
	// StateDisconnected: the last attempt failed or the channel closed; the
	// connector waits out its backoff (or is about to stop).
	StateDisconnected
	// StateStopped: Run has returned (or Close was called before Run).
	StateStopped
)

var stateNames = [...]string{"Idle", "Connecting", "Connected", "Disconnected", "Stopped"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// StateChange is what Config.OnState receives.
type StateChange struct {
	// State is the new state.
	State State
	// Endpoint is the index, in the list given to New, of the endpoint being
	// tried (Connecting), in use (Connected) or just left (Disconnected); for
	// Stopped, the last one used.
	Endpoint int
	// Attempt counts the consecutive failures before this attempt
	// (Connecting); it is the n of the backoff formula.
	Attempt int
	// ChannelID and TargetID identify the channel (Connected, and Disconnected
	// after a connection).
	ChannelID string
	TargetID  string
	// Err says why: the failed attempt or the closed channel (Disconnected),
	// the fatal error (Stopped; nil for a stop by Close or Run's context).
	Err error
	// Delay is the backoff before the next attempt (Disconnected; zero when
	// the connector stops instead).
	Delay time.Duration
}
