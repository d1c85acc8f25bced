package channeltest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// TestConn checks that the Conns made by mp honour the channel.Conn contract.
// Each subtest makes its own pipe. The subtests:
//
//   - RoundTrip: commands and replies keep every field (id, type, payload,
//     metadata, one-way, timeout in whole milliseconds; command id, type,
//     every status, payload, error, retry-after in whole milliseconds, code),
//     in both directions. Empty and nil payloads and metadata are equivalent.
//   - OrderPreserved: frames arrive in the order they were sent.
//   - LargeFrame: a frame just under channel.DefaultMaxFrameBytes passes; one
//     over it fails Send with channel.ErrFrameTooLarge, is not delivered, and
//     the Conn stays usable.
//   - CloseUnblocksRecv, CloseUnblocksSend: Close releases a blocked Recv, and
//     a Send blocked on a full peer, with channel.ErrClosed.
//   - PeerCloseIsErrClosed: after one end closes, the other end's Recv fails
//     with channel.ErrClosed, and so does its Send; in both directions.
//   - SentBeforeCloseDelivered: frames b sent before closing reach a before
//     a's Recv reports the close (an orderly close, which the controller
//     relies on when it rejects a HELLO and hangs up).
//   - SendAfterClose: Send and Recv on a closed Conn fail with
//     channel.ErrClosed; a second Close does not panic.
//   - ConcurrentSendRecv: each end sends and receives at once (meaningful
//     under -race).
//   - NoAliasing: changing a frame after Send, or the received frame, does
//     not change the other side's copy.
//   - SendBatch (Conns that are a channel.BatchSender): a batch arrives as
//     its frames, in order, every field intact, in both directions; a batch
//     over the frame limit as a whole (each frame under it), or holding a nil
//     frame, fails (ErrFrameTooLarge, ErrMalformedFrame) without delivering
//     any of its frames, and the Conn stays usable.
func TestConn(t *testing.T, mp MakePipe) {
	t.Helper()
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, mp) })
	t.Run("OrderPreserved", func(t *testing.T) { testOrderPreserved(t, mp) })
	t.Run("LargeFrame", func(t *testing.T) { testLargeFrame(t, mp) })
	t.Run("CloseUnblocksRecv", func(t *testing.T) { testCloseUnblocksRecv(t, mp) })
	t.Run("CloseUnblocksSend", func(t *testing.T) { testCloseUnblocksSend(t, mp) })
	t.Run("PeerCloseIsErrClosed", func(t *testing.T) { testPeerCloseIsErrClosed(t, mp) })
	t.Run("SentBeforeCloseDelivered", func(t *testing.T) { testSentBeforeCloseDelivered(t, mp) })
	t.Run("SendAfterClose", func(t *testing.T) { testSendAfterClose(t, mp) })
	t.Run("ConcurrentSendRecv", func(t *testing.T) { testConcurrentSendRecv(t, mp) })
	t.Run("NoAliasing", func(t *testing.T) { testNoAliasing(t, mp) })
	t.Run("SendBatch", func(t *testing.T) { testSendBatch(t, mp) })
}

// frameCmp compares frames, treating nil and empty payloads and metadata as
// equal (a wire format cannot tell them apart).
var frameCmp = cmpopts.EquateEmpty()

// roundTripFrames are frames with every field set, or deliberately left zero.
func roundTripFrames() []*channel.Frame {
	frames := []*channel.Frame{
		{Command: &command.Command{
			ID:       "cmd-1",
			Type:     "ECHO",
			Payload:  []byte(`{"text":"héllo \u00e9 \"quoted\"","n":[1,2,3]}`),
			Metadata: map[string]string{"trace-id": "abc123", "tenant": "t-1", "empty": ""},
			OneWay:   true,
			Timeout:  1500 * time.Millisecond,
		}},
		{Command: &command.Command{ID: "cmd-2", Type: command.TypeHealthCheck}},
		{Command: &command.Command{ID: "cmd-3", Type: "BINARY", Payload: []byte{0, 1, 2, 0xfe, 0xff}}},
		{Reply: &command.Reply{
			CommandID:  "cmd-1",
			Type:       "ECHO",
			Status:     command.StatusError,
			Payload:    []byte(`{"ok":false}`),
			Error:      "something went wrong: ünïcödé",
			RetryAfter: 250 * time.Millisecond,
			Code:       429,
		}},
		{Reply: &command.Reply{CommandID: "cmd-2", Type: command.TypeHealthCheck}},
	}
	for s := command.StatusUnspecified; s <= command.StatusInProgress; s++ {
		frames = append(frames, &channel.Frame{Reply: &command.Reply{
			CommandID: "status-" + s.String(), Type: "STATUS", Status: s, Code: 200 + int32(s),
		}})
	}
	return frames
}

func testRoundTrip(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)
	for _, dir := range []struct {
		name     string
		from, to channel.Conn
	}{{"a→b", a, b}, {"b→a", b, a}} {
		for _, want := range roundTripFrames() {
			e.send(dir.from, want.Clone())
			got := e.recv(dir.to)
			if diff := cmp.Diff(want, got, frameCmp); diff != "" {
				t.Errorf("%s: %s: received frame differs (-sent +received):\n%s", dir.name, describe(want), diff)
			}
		}
	}
}

func testOrderPreserved(t *testing.T, mp MakePipe) {
	const n = 500
	e := newEnv(t)
	a, b := e.pipe(mp)
	// Both directions at once, each with its own sender goroutine.
	errs := make(chan error, 2)
	for _, from := range []channel.Conn{a, b} {
		e.goFunc(func() {
			for i := range n {
				f := &channel.Frame{Command: &command.Command{ID: strconv.Itoa(i), Type: "SEQ"}}
				if err := from.Send(f); err != nil {
					errs <- fmt.Errorf("Send(#%d) = %w", i, err)
					return
				}
			}
			errs <- nil
		})
	}
	for _, to := range []channel.Conn{b, a} {
		for i := range n {
			f := e.recv(to)
			if f.Command == nil || f.Command.ID != strconv.Itoa(i) {
				t.Fatalf("frame #%d received = %s, want command SEQ[%d]", i, describe(f), i)
			}
		}
	}
	for range 2 {
		if err := await(e, errs, "sender"); err != nil {
			t.Fatal(err)
		}
	}
}

func testLargeFrame(t *testing.T, mp MakePipe) {
	e := newEnvTimeout(t, largeFrameTimeout)
	a, b := e.pipe(mp)

	// Just under the limit (room for ids, type and encoding overhead): passes.
	big := bytes.Repeat([]byte("x"), channel.DefaultMaxFrameBytes-4096)
	in := e.goRecv(b) // receive concurrently: a large frame may need the reader
	e.send(a, &channel.Frame{Command: &command.Command{ID: "big", Type: "LARGE", Payload: big}})
	r := await(e, in, "Recv of the large frame")
	if r.err != nil {
		t.Fatalf("Recv() of a frame just under the limit: error = %v", r.err)
	}
	if r.f.Command == nil || !bytes.Equal(r.f.Command.Payload, big) {
		t.Fatalf("Recv() = %s, want the %d-byte command", describe(r.f), len(big))
	}

	// Over the limit: Send fails with ErrFrameTooLarge and nothing is sent.
	huge := bytes.Repeat([]byte("y"), channel.DefaultMaxFrameBytes+1)
	for _, f := range []*channel.Frame{
		{Command: &command.Command{ID: "huge", Type: "LARGE", Payload: huge}},
		{Reply: &command.Reply{CommandID: "huge", Type: "LARGE", Status: command.StatusSucceeded, Payload: huge}},
	} {
		if err := a.Send(f); !errors.Is(err, channel.ErrFrameTooLarge) {
			t.Fatalf("Send(%s with %d-byte payload) = %v, want an error wrapping ErrFrameTooLarge", describe(f), len(huge), err)
		}
	}

	// The conn stays usable, in both directions, and the huge frames never
	// arrived.
	e.send(a, &channel.Frame{Command: &command.Command{ID: "after", Type: "SMALL"}})
	if f := e.recv(b); f.Command == nil || f.Command.ID != "after" {
		t.Fatalf("Recv() after a refused frame = %s, want command SMALL[after]", describe(f))
	}
	e.send(b, &channel.Frame{Reply: &command.Reply{CommandID: "after", Type: "SMALL"}})
	if f := e.recv(a); f.Reply == nil || f.Reply.CommandID != "after" {
		t.Fatalf("Recv() = %s, want the reply to after", describe(f))
	}
}

func testCloseUnblocksRecv(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, _ := e.pipe(mp)
	in := e.goRecv(a)
	never(e, in, "Recv() on an idle conn")
	if err := a.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	r := await(e, in, "Recv() after Close")
	if !errors.Is(r.err, channel.ErrClosed) {
		t.Errorf("Recv() after Close = (%s, %v), want an error wrapping ErrClosed", describe(r.f), r.err)
	}
}

// fillUntilBlocked sends frames on c from a goroutine until a Send blocks
// (the peer does not read). It returns where that blocked Send's error
// arrives. It fails the test if Send never blocks: a transport must push back.
func fillUntilBlocked(e *env, c channel.Conn) <-chan error {
	e.t.Helper()
	const maxBytes = 256 << 20 // no transport should buffer that much unread
	payload := bytes.Repeat([]byte("f"), 64<<10)
	sent := make(chan int)
	stopped := make(chan struct{}) // closed once the caller thinks Send blocks
	result := make(chan error, 1)
	e.goFunc(func() {
		for i := 0; i*len(payload) < maxBytes; i++ {
			err := c.Send(&channel.Frame{Command: &command.Command{ID: strconv.Itoa(i), Type: "FILL", Payload: payload}})
			if err != nil {
				result <- err
				return
			}
			select {
			case sent <- i:
			case <-stopped: // keep sending until a Send fails
			}
		}
		result <- nil
		close(sent)
	})
	timer := time.NewTimer(defaultTestShortTimeout)
	defer timer.Stop()
	for {
		timer.Reset(defaultTestShortTimeout)
		select {
		case _, ok := <-sent:
			if !ok {
				e.t.Fatalf("Send never blocked after %d MiB to a peer that does not read: no back-pressure", maxBytes>>20)
			}
		case err := <-result:
			e.t.Fatalf("Send to a peer that does not read = %v, want it to block", err)
		case <-timer.C:
			close(stopped) // no progress: the sender is blocked
			return result
		case <-e.ctx.Done():
			e.t.Fatalf("filling the peer's buffer: %v", e.ctx.Err())
		}
	}
}

func testCloseUnblocksSend(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, _ := e.pipe(mp)
	blocked := fillUntilBlocked(e, a)
	if err := a.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	if err := await(e, blocked, "Send() after Close"); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("blocked Send() after Close = %v, want an error wrapping ErrClosed", err)
	}
}

func testPeerCloseIsErrClosed(t *testing.T, mp MakePipe) {
	for _, dir := range []string{"a closes", "b closes"} {
		t.Run(dir, func(t *testing.T) {
			e := newEnv(t)
			a, b := e.pipe(mp)
			closer, peer := a, b
			if dir == "b closes" {
				closer, peer = b, a
			}
			in := e.goRecv(peer)
			if err := closer.Close(); err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
			r := await(e, in, "peer's Recv() after Close")
			if !errors.Is(r.err, channel.ErrClosed) {
				t.Fatalf("peer's Recv() after Close = (%s, %v), want an error wrapping ErrClosed", describe(r.f), r.err)
			}
			// Once Recv has seen the close, Send must fail too.
			err := peer.Send(&channel.Frame{Command: &command.Command{ID: "x", Type: "AFTER_CLOSE"}})
			if !errors.Is(err, channel.ErrClosed) {
				t.Errorf("peer's Send() after the close was seen = %v, want an error wrapping ErrClosed", err)
			}
		})
	}
}

func testSentBeforeCloseDelivered(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)
	const n = 3
	for i := range n {
		e.send(b, &channel.Frame{Reply: &command.Reply{CommandID: strconv.Itoa(i), Type: "LAST_WORDS", Status: command.StatusError, Error: "bye"}})
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	for i := range n {
		f, err := a.Recv()
		if err != nil || f.Reply == nil || f.Reply.CommandID != strconv.Itoa(i) {
			t.Fatalf("Recv() #%d after the peer sent %d frames and closed = (%s, %v), want reply #%d", i, n, describe(f), err, i)
		}
	}
	if f, err := a.Recv(); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Recv() after the last frame = (%s, %v), want an error wrapping ErrClosed", describe(f), err)
	}
}

func testSendAfterClose(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, _ := e.pipe(mp)
	if err := a.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	err := a.Send(&channel.Frame{Command: &command.Command{ID: "x", Type: "AFTER_CLOSE"}})
	if !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Send() after Close = %v, want an error wrapping ErrClosed", err)
	}
	if f, err := a.Recv(); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Recv() after Close = (%s, %v), want an error wrapping ErrClosed", describe(f), err)
	}
	_ = a.Close() // a second Close must not panic or block
}

func testConcurrentSendRecv(t *testing.T, mp MakePipe) {
	const n = 300
	e := newEnv(t)
	a, b := e.pipe(mp)
	errs := make(chan error, 4)
	for _, c := range []channel.Conn{a, b} {
		e.goFunc(func() { // sender
			for i := range n {
				f := &channel.Frame{Command: &command.Command{
					ID: strconv.Itoa(i), Type: "CONCURRENT", Payload: []byte(`{"i":` + strconv.Itoa(i) + `}`),
					Metadata: map[string]string{"i": strconv.Itoa(i)},
				}}
				if err := c.Send(f); err != nil {
					errs <- fmt.Errorf("Send(#%d) = %w", i, err)
					return
				}
				f.Command.Payload[0] = '!' // the transport must have copied it
			}
			errs <- nil
		})
		e.goFunc(func() { // receiver
			for i := range n {
				f, err := c.Recv()
				if err != nil {
					errs <- fmt.Errorf("Recv(#%d) = %w", i, err)
					return
				}
				if f.Command == nil || f.Command.Metadata["i"] != strconv.Itoa(i) || f.Command.Payload[0] != '{' {
					errs <- fmt.Errorf("Recv(#%d) = %s, want command #%d intact", i, describe(f), i)
					return
				}
			}
			errs <- nil
		})
	}
	for range 4 {
		if err := await(e, errs, "concurrent senders and receivers"); err != nil {
			t.Fatal(err)
		}
	}
}

func testNoAliasing(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)

	sent := &channel.Frame{Command: &command.Command{
		ID: "orig", Type: "ALIAS", Payload: []byte(`{"v":"original"}`), Metadata: map[string]string{"k": "v"},
	}}
	want := sent.Clone()
	e.send(a, sent)
	// Mutate everything the sender still holds.
	sent.Command.ID = "changed"
	copy(sent.Command.Payload, `{"v":"CHANGED!"}`)
	sent.Command.Metadata["k"] = "changed"
	sent.Command.Metadata["new"] = "x"
	got := e.recv(b)
	if diff := cmp.Diff(want, got, frameCmp); diff != "" {
		t.Errorf("received command changed with the sender's frame (-want +got):\n%s", diff)
	}

	reply := &channel.Frame{Reply: &command.Reply{CommandID: "orig", Type: "ALIAS", Status: command.StatusSucceeded, Payload: []byte(`{"r":1}`)}}
	wantReply := reply.Clone()
	e.send(b, reply)
	copy(reply.Reply.Payload, `{"r":2}`)
	reply.Reply.Error = "changed"
	gotReply := e.recv(a)
	if diff := cmp.Diff(wantReply, gotReply, frameCmp); diff != "" {
		t.Errorf("received reply changed with the sender's frame (-want +got):\n%s", diff)
	}

	// The receiver owns its copy: sending the same content again gives a
	// fresh, unchanged frame even after the receiver scribbled on the first.
	got.Command.Payload[0] = '!'
	got.Command.Metadata["k"] = "scribbled"
	e.send(a, want.Clone())
	if diff := cmp.Diff(want, e.recv(b), frameCmp); diff != "" {
		t.Errorf("second copy differs (-want +got):\n%s", diff)
	}
}

func testSendBatch(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)
	ba, ok := a.(channel.BatchSender)
	bb, ok2 := b.(channel.BatchSender)
	if !ok || !ok2 {
		t.Skip("the Conn is not a channel.BatchSender")
	}
	for _, dir := range []struct {
		name string
		from channel.BatchSender
		to   channel.Conn
	}{{"a→b", ba, b}, {"b→a", bb, a}} {
		want := roundTripFrames()
		sent := make([]*channel.Frame, len(want))
		for i, f := range want {
			sent[i] = f.Clone()
		}
		if err := dir.from.SendBatch(sent); err != nil {
			t.Fatalf("%s: SendBatch(%d frames) = %v, want nil", dir.name, len(sent), err)
		}
		for i, w := range want {
			got := e.recv(dir.to)
			if diff := cmp.Diff(w, got, frameCmp); diff != "" {
				t.Errorf("%s: frame #%d of the batch differs (-sent +received):\n%s", dir.name, i, diff)
			}
		}
	}

	// Each frame fits, the batch does not: nothing of it is sent.
	half := bytes.Repeat([]byte("h"), channel.DefaultMaxFrameBytes/2)
	tooLarge := []*channel.Frame{
		{Command: &command.Command{ID: "part-1", Type: "LARGE", Payload: half}},
		{Command: &command.Command{ID: "part-2", Type: "LARGE", Payload: half}},
		{Reply: &command.Reply{CommandID: "part-3", Type: "LARGE", Status: command.StatusSucceeded, Payload: half}},
	}
	if err := ba.SendBatch(tooLarge); !errors.Is(err, channel.ErrFrameTooLarge) {
		t.Fatalf("SendBatch() of %d half-limit frames = %v, want an error wrapping ErrFrameTooLarge", len(tooLarge), err)
	}
	withNil := []*channel.Frame{{Command: &command.Command{ID: "before-nil", Type: "SMALL"}}, nil}
	if err := ba.SendBatch(withNil); !errors.Is(err, channel.ErrMalformedFrame) {
		t.Fatalf("SendBatch() with a nil frame = %v, want an error wrapping ErrMalformedFrame", err)
	}
	e.send(a, &channel.Frame{Command: &command.Command{ID: "after", Type: "SMALL"}})
	if f := e.recv(b); f.Command == nil || f.Command.ID != "after" {
		t.Fatalf("Recv() after refused batches = %s, want command SMALL[after]", describe(f))
	}
}
