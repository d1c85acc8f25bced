package connector

import (
	"errors"
	"fmt"
)

var (
	// ErrNotConnected is returned at once by Send when the Connector has no
	// live channel (not yet connected, between reconnections, or stopped).
	ErrNotConnected = errors.New("connector: not connected")
	// ErrClosed is returned by Run after Close, and is wrapped (together with
	// ErrNotConnected) by Send and WaitConnected once the Connector is closed.
	// It is also the Err of the last Disconnected StateChange of a local stop.
	ErrClosed = errors.New("connector: closed")
	// ErrGoodBye is wrapped by GoodByeError: the controller told the
	// connector to go away.
	ErrGoodBye = errors.New("connector: controller said goodbye")
	// ErrInvalidConfig is wrapped by the errors of Config.Validate and New.
	ErrInvalidConfig = errors.New("connector: invalid config")
	// ErrHeartbeatMissed is the cause of a disconnection when a controller that
	// announced a heartbeat sent nothing for Config.MissedHeartbeats heartbeats:
	// the connector takes the link for half-open and reconnects.
	ErrHeartbeatMissed = errors.New("connector: controller silent for too long")
)

// GoodByeError reports a GOOD_BYE from the controller. With Reconnect false it
// is what Run returns (the controller does not want this connector back);
// with Reconnect true it is only the Err of the Disconnected StateChange that
// precedes the reconnection.
type GoodByeError struct {
	// TargetID and ChannelID identify the channel that was told goodbye.
	TargetID  string
	ChannelID string
	// Reconnect is the controller's request: true to come back (possibly
	// through another endpoint), false to stay away.
	Reconnect bool
}

func (e *GoodByeError) Error() string {
	what := "without reconnection"
	if e.Reconnect {
		what = "with reconnection"
	}
	return fmt.Sprintf("connector: controller said goodbye %s on channel %s (target %s)", what, e.ChannelID, e.TargetID)
}

// Unwrap returns ErrGoodBye.
func (e *GoodByeError) Unwrap() error { return ErrGoodBye }

// attemptError is the error of a failed connection attempt, "connector: dial
// endpoint E: …" or "connector: hello on endpoint E: …", wrapping the
// transport's or the handshake's error. Its text is made when asked for,
// not per attempt: in a storm most attempts fail, and few of their errors
// are ever printed (fmt.Errorf was 4 % of a connector's CPU in a
// 100,000-connector start, docs/benchmarks.md, "Reconnect storms, seventh
// pass").
type attemptError struct {
	op       string // "dial" or "hello on"
	endpoint string
	err      error
}

func (e *attemptError) Error() string {
	return "connector: " + e.op + " endpoint " + e.endpoint + ": " + e.err.Error()
}

func (e *attemptError) Unwrap() error { return e.err }
