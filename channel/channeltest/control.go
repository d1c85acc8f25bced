package channeltest

import (
	"context"
	"errors"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// healthMux is blockMux(b) that also answers HEALTH_CHECK healthy at once.
func healthMux(b *blocker) *command.Mux {
	mux := blockMux(b)
	mux.Register(command.TypeHealthCheck, command.Typed(func(context.Context, command.HealthCheckPayload) (command.HealthCheckReplyPayload, error) {
		return command.HealthCheckReplyPayload{Healthy: true}, nil
	}))
	return mux
}

func healthCmd() *command.Command {
	return command.MustCommand(command.TypeHealthCheck, command.HealthCheckPayload{})
}

// checkHealthy sends HEALTH_CHECK on ch and wants a healthy answer.
func checkHealthy(e *env, ch *channel.Channel, why string) {
	e.t.Helper()
	r, err := ch.Send(e.ctx, healthCmd())
	if err != nil {
		e.t.Fatalf("HEALTH_CHECK %s = %v, want a reply: control commands have their own capacity", why, err)
	}
	p, err := command.Decode[command.HealthCheckReplyPayload](r.Payload)
	if !r.Succeeded() || err != nil || !p.Healthy {
		e.t.Fatalf("HEALTH_CHECK %s = %+v (%v), want SUCCEEDED healthy", why, r, err)
	}
}

// wantBusy checks that err is a *BusyError, remote or local as said.
func wantBusy(e *env, err error, remote bool, what string) {
	e.t.Helper()
	var be *channel.BusyError
	if !errors.As(err, &be) || be.Remote != remote {
		e.t.Fatalf("%s = %v, want a *BusyError with Remote %t", what, err, remote)
	}
}

// testControlReservedLocal: with MaxInFlight taken by application commands,
// this side still sends control commands.
func testControlReservedLocal(t *testing.T, s suite) {
	e := s.env(t)
	blk := newBlocker()
	ca, _ := e.channels(s.mp, nil, healthMux(blk), channel.Config{MaxInFlight: 2}, channel.Config{})
	first := e.goSend(e.ctx, ca, blockCmd("first"))
	second := e.goSend(e.ctx, ca, blockCmd("second"))
	await(e, blk.started, "first handler start")
	await(e, blk.started, "second handler start")
	_, err := ca.Send(e.ctx, echoCmd("third"))
	wantBusy(e, err, false, "Send(ECHO) beyond MaxInFlight")

	checkHealthy(e, ca, "with MaxInFlight taken")

	blk.unblock()
	for _, ch := range []<-chan sendResult{first, second} {
		if r := await(e, ch, "BLOCK Send"); r.err != nil {
			t.Fatalf("BLOCK Send() = %v, want its reply", r.err)
		}
	}
}

// testControlReservedRemote: with the peer's MaxHandlers taken by
// application commands, the peer still handles control commands.
func testControlReservedRemote(t *testing.T, s suite) {
	e := s.env(t)
	blk := newBlocker()
	ca, _ := e.channels(s.mp, nil, healthMux(blk), channel.Config{}, channel.Config{MaxHandlers: 1})
	first := e.goSend(e.ctx, ca, blockCmd("first"))
	await(e, blk.started, "first handler start")
	_, err := ca.Send(e.ctx, echoCmd("second"))
	wantBusy(e, err, true, "Send(ECHO) beyond the peer's MaxHandlers")

	checkHealthy(e, ca, "with the peer's MaxHandlers taken")

	blk.unblock()
	if r := await(e, first, "first Send"); r.err != nil {
		t.Fatalf("first Send() = %v, want its reply", r.err)
	}
}

// testControlBound: control commands have a bound of their own
// (Config.MaxControl), on both sides, which application commands do not use.
func testControlBound(t *testing.T, s suite) {
	t.Run("Local", func(t *testing.T) {
		e := s.env(t)
		blk := newBlocker()
		mux := echoMux()
		mux.Register(command.TypeHealthCheck, blk)
		ca, _ := e.channels(s.mp, nil, mux, channel.Config{MaxControl: 1}, channel.Config{})
		first := e.goSend(e.ctx, ca, healthCmd())
		await(e, blk.started, "first HEALTH_CHECK start")
		_, err := ca.Send(e.ctx, healthCmd())
		wantBusy(e, err, false, "a second HEALTH_CHECK beyond MaxControl")
		checkEcho(e, ca, "application commands are not bound by MaxControl")
		blk.unblock()
		if r := await(e, first, "first HEALTH_CHECK"); r.err != nil {
			t.Fatalf("first HEALTH_CHECK = %v, want its reply", r.err)
		}
	})
	t.Run("Remote", func(t *testing.T) {
		e := s.env(t)
		blk := newBlocker()
		mux := echoMux()
		mux.Register(command.TypePrimary, blk)
		ca, _ := e.channels(s.mp, nil, mux, channel.Config{}, channel.Config{MaxControl: 1})
		first := e.goSend(e.ctx, ca, command.MustCommand(command.TypePrimary, command.PrimaryPayload{Primary: true}))
		await(e, blk.started, "first PRIMARY start")
		_, err := ca.Send(e.ctx, command.MustCommand(command.TypePrimary, command.PrimaryPayload{}))
		wantBusy(e, err, true, "a second PRIMARY beyond the peer's MaxControl")
		checkEcho(e, ca, "application commands are not bound by MaxControl")
		blk.unblock()
		if r := await(e, first, "first PRIMARY"); r.err != nil {
			t.Fatalf("first PRIMARY = %v, want its reply", r.err)
		}
	})
}
