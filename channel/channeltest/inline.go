package channeltest

import (
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
)

// TestInlineReceiver checks the contract of channel.InlineReceiver on Conns
// made by mp, whose accepting end b must implement it (the test fails
// otherwise). The take it registers on b takes replies and leaves commands,
// as a Channel at its bounds would; a reader goroutine on b receives the
// rest. The subtests:
//
//   - NotWithoutReader: while nobody waits in b's Recv, a frame is queued
//     for Recv, never taken.
//   - Taken: once b's reader waits, a reply is eventually taken instead of
//     received, as b's own copy (changing the sent frame after Send does
//     not change it).
//   - Ordered: a burst of commands and replies from one sender is seen by
//     take and Recv together exactly once each, in the order it was sent:
//     no reply taken overtakes a frame queued before it, and no frame
//     received overtakes a reply being taken. Meaningful under -race.
//   - Left: a frame take leaves is received by Recv, in its place.
func TestInlineReceiver(t *testing.T, mp MakePipe) {
	t.Helper()
	t.Run("NotWithoutReader", func(t *testing.T) { testInlineNotWithoutReader(t, mp) })
	t.Run("Taken", func(t *testing.T) { testInlineTaken(t, mp) })
	t.Run("Ordered", func(t *testing.T) { testInlineOrdered(t, mp) })
	t.Run("Left", func(t *testing.T) { testInlineLeft(t, mp) })
}

// inlineLog records, in one sequence, the frames take took and those the
// reader received.
type inlineLog struct {
	mu     sync.Mutex
	seen   []string         // "take:<id>" or "recv:<id>", in the order they happened
	frames []*channel.Frame // the frames of seen
	notify chan struct{}    // buffered(1): something was recorded
}

func newInlineLog() *inlineLog { return &inlineLog{notify: make(chan struct{}, 1)} }

func (l *inlineLog) add(how string, f *channel.Frame) {
	l.mu.Lock()
	l.seen = append(l.seen, how+":"+frameID(f))
	l.frames = append(l.frames, f)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *inlineLog) snapshot() (seen []string, frames []*channel.Frame) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...), append([]*channel.Frame(nil), l.frames...)
}

func (l *inlineLog) seenOnly() []string {
	seen, _ := l.snapshot()
	return seen
}

// frameID is a frame's command id, or the command id of its reply.
func frameID(f *channel.Frame) string {
	if f.Reply != nil {
		return f.Reply.CommandID
	}
	return f.Command.ID
}

// inlineEnd registers on b a take that takes replies (recording them in the
// returned log) and leaves commands; with reader set, it also runs a reader
// goroutine that receives from b until b fails, recording what it receives.
func inlineEnd(e *env, b channel.Conn, reader bool) *inlineLog {
	e.t.Helper()
	ir, ok := b.(channel.InlineReceiver)
	if !ok {
		e.t.Fatalf("%T is not a channel.InlineReceiver", b)
	}
	l := newInlineLog()
	ir.ReceiveInline(func(f *channel.Frame) bool {
		if f.Reply == nil {
			return false
		}
		l.add("take", f)
		return true
	})
	if reader {
		e.goFunc(func() {
			for {
				f, err := b.Recv()
				if err != nil {
					return
				}
				l.add("recv", f)
			}
		})
	}
	return l
}

func replyFrame(id string) *channel.Frame {
	return &channel.Frame{Reply: &command.Reply{CommandID: id, Type: "INLINE", Status: command.StatusSucceeded,
		Payload: []byte(`{"n":` + id + `}`)}}
}

func commandFrame(id string) *channel.Frame {
	return &channel.Frame{Command: &command.Command{ID: id, Type: "INLINE"}}
}

// awaitSeen waits until l holds n frames.
func awaitSeen(e *env, l *inlineLog, n int) []string {
	e.t.Helper()
	for {
		if seen := l.seenOnly(); len(seen) >= n {
			return seen
		}
		await(e, l.notify, fmt.Sprintf("frame #%d taken or received", n))
	}
}

func testInlineNotWithoutReader(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)
	l := inlineEnd(e, b, false)
	e.send(a, replyFrame("1"))
	e.send(a, commandFrame("2"))
	for _, id := range []string{"1", "2"} {
		if f := e.recv(b); frameID(f) != id {
			t.Fatalf("Recv() = %s, want the frame of id %s", describe(f), id)
		}
	}
	if seen := l.seenOnly(); len(seen) != 0 {
		t.Fatalf("take got %v while no reader waited, want nothing", seen)
	}
}

func testInlineTaken(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)
	l := inlineEnd(e, b, true)
	// One reply at a time, each seen before the next is sent: the reader
	// waits in Recv again sooner or later when the next one comes.
	for i := 0; ; i++ {
		f := replyFrame(strconv.Itoa(i))
		e.send(a, f)
		f.Reply.Payload[0] = 'X' // the receiver has its own copy
		awaitSeen(e, l, i+1)
		seen, frames := l.snapshot()
		if got := frames[i].Reply.Payload[0]; got != '{' {
			t.Fatalf("frame #%d (%s) changed with the sent one: payload starts with %q", i, seen[i], got)
		}
		if seen[i] == "take:"+strconv.Itoa(i) {
			return
		}
	}
}

func testInlineOrdered(t *testing.T, mp MakePipe) {
	const n = 2000
	e := newEnv(t)
	a, b := e.pipe(mp)
	l := inlineEnd(e, b, true)
	for i := range n {
		f := replyFrame(strconv.Itoa(i))
		if i%3 == 0 {
			f = commandFrame(strconv.Itoa(i))
		}
		e.send(a, f)
	}
	seen := awaitSeen(e, l, n)
	if len(seen) != n {
		t.Fatalf("%d frames taken or received, want %d: %v", len(seen), n, seen[n:])
	}
	for i, s := range seen {
		id, how := strconv.Itoa(i), "recv or take"
		if i%3 == 0 {
			how = "recv" // commands are left to the reader
		}
		if s != "recv:"+id && s != "take:"+id || how == "recv" && s != "recv:"+id {
			t.Fatalf("frame #%d seen as %q, want %s of id %s (sequence from there: %v)", i, s, how, id, seen[i:min(n, i+5)])
		}
	}
}

func testInlineLeft(t *testing.T, mp MakePipe) {
	e := newEnv(t)
	a, b := e.pipe(mp)
	l := inlineEnd(e, b, true)
	for i := range 50 {
		e.send(a, commandFrame(strconv.Itoa(i)))
		if seen := awaitSeen(e, l, i+1); seen[i] != "recv:"+strconv.Itoa(i) {
			t.Fatalf("command #%d seen as %q, want received", i, seen[i])
		}
	}
}
