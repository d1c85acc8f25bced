package connector

import (
	"errors"
	"strconv"
	"testing"

	"github.com/exchangekit/exchange/command"
)

func TestWindowJoinAndFinish(t *testing.T) {
	w := newWindow(2)
	sum := w.digestOf(&command.Command{Type: "DO", Payload: []byte(`1`)})
	run, found := w.join("a", sum)
	if run == nil || found != joinNew {
		t.Fatalf("join(a) = %v, %v; want a new run to start", run, found)
	}
	if again, found := w.join("a", sum); again != run || found != joinRunning {
		t.Fatalf("second join(a) = %v, %v; want to wait on the same run", again, found)
	}
	cmd := &command.Command{ID: "a", Type: "DO", Payload: []byte(`1`)}
	r := &command.Reply{Payload: []byte(`1`)} // as a handler returns it: to be completed
	sent := w.finish(cmd, run, r, nil)
	select {
	case <-run.done:
	default:
		t.Fatal("finish did not wake the waiters")
	}
	want := command.Reply{CommandID: "a", Type: "DO", Status: command.StatusSucceeded, Payload: []byte(`1`)}
	if sent == r || sent.CommandID != want.CommandID || sent.Type != want.Type || sent.Status != want.Status || string(sent.Payload) != "1" {
		t.Fatalf("finish returned %+v; want a completed copy of the handler's reply, %+v", sent, want)
	}
	r.Status, r.Type = command.StatusError, "OTHER" // the handler's reply struct is not the window's
	done, found := w.join("a", sum)
	if found != joinDone || done.reply != sent || done.reply.Status != command.StatusSucceeded || done.reply.Type != "DO" {
		t.Fatalf("join(a) after finish = %+v, %v; want the reply finish returned, unchanged", done, found)
	}
}

func TestWindowFinishFailureKeepsACopy(t *testing.T) {
	w := newWindow(2)
	run, _ := w.join("a", 1)
	r := &command.Reply{Status: command.StatusError, Error: "no", Payload: []byte(`1`)}
	if sent := w.finish(&command.Command{ID: "a", Type: "DO"}, run, r, nil); sent != r {
		t.Fatalf("finish after a failure returned %p, want the handler's reply %p (the channel completes it)", sent, r)
	}
	r.Payload[0] = '9'
	if string(run.reply.Payload) != "1" {
		t.Errorf("the failure kept for waiting duplicates is %q, want its own copy %q", run.reply.Payload, "1")
	}
	if w.len() != 0 {
		t.Errorf("a failure is remembered: len() = %d, want 0", w.len())
	}
}

func TestWindowEvictsOldestFirst(t *testing.T) {
	w := newWindow(3)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		o, _ := w.join(id, 0)
		w.finish(&command.Command{ID: id, Type: "DO"}, o, nil, nil)
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		w.mu.Lock()
		o, ok := w.ids[id]
		ok = ok && o.completed
		w.mu.Unlock()
		if ok != want {
			t.Errorf("%s remembered = %v, want %v", id, ok, want)
		}
	}
	if w.len() != 3 {
		t.Errorf("len() = %d, want 3", w.len())
	}
}

func TestWindowConflict(t *testing.T) {
	w := newWindow(2)
	a1 := w.digestOf(&command.Command{Type: "DO", Payload: []byte(`1`)})
	a2 := w.digestOf(&command.Command{Type: "DO", Payload: []byte(`2`)})
	run, _ := w.join("a", a1)
	if o, found := w.join("a", a2); o != nil || found != joinConflict {
		t.Errorf("join(a, other body) while running = %v, %v; want a conflict", o, found)
	}
	w.finish(&command.Command{ID: "a", Type: "DO"}, run, nil, nil)
	if o, found := w.join("a", a2); o != nil || found != joinConflict {
		t.Errorf("join(a, other body) after finish = %v, %v; want a conflict", o, found)
	}
	if _, found := w.join("a", a1); found != joinDone {
		t.Errorf("join(a, same body) after the conflict = %v, want joinDone", found)
	}
}

func TestDigest(t *testing.T) {
	w := newWindow(1)
	base := &command.Command{ID: "x", Type: "AB", Payload: []byte(`C`)}
	same := &command.Command{ID: "y", Type: "AB", Payload: []byte(`C`), Metadata: map[string]string{"k": "v"}, Timeout: 1}
	if w.digestOf(base) != w.digestOf(same) {
		t.Error("digest depends on the id, metadata or timeout; want type and payload only")
	}
	for _, other := range []*command.Command{
		{Type: "AB", Payload: []byte(`D`)},
		{Type: "AC", Payload: []byte(`C`)},
		{Type: "A", Payload: []byte(`BC`)}, // the same bytes split differently
	} {
		if w.digestOf(base) == w.digestOf(other) {
			t.Errorf("digest(%s %s) = digest(%s %s), want them to differ", base.Type, base.Payload, other.Type, other.Payload)
		}
	}
}

func TestSucceeded(t *testing.T) {
	tests := []struct {
		r    *command.Reply
		err  error
		want bool
	}{
		{nil, nil, true},
		{&command.Reply{}, nil, true},
		{&command.Reply{Status: command.StatusSucceeded}, nil, true},
		{&command.Reply{Status: command.StatusPending}, nil, true},
		{&command.Reply{Status: command.StatusError}, nil, false},
		{&command.Reply{Error: "bad"}, nil, false},
		{nil, errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := succeeded(tt.r, tt.err); got != tt.want {
			t.Errorf("succeeded(%+v, %v) = %v, want %v", tt.r, tt.err, got, tt.want)
		}
	}
}

// BenchmarkWindow is the dedup window's share of a round trip: join and
// finish for a command with a fresh id, as every command delivered once
// costs, in a window of 16 and of the default 1,024 (where the eviction of
// the oldest id touches an entry long out of the cache in a real process;
// less so in this loop). docs/benchmarks.md ("Round trip, sixth pass:
// embedded") has the window's cost in the whole round trip.
func BenchmarkWindow(b *testing.B) {
	for _, size := range []int{16, DefaultDedupWindow} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			w := newWindow(size)
			ids := make([]string, 1<<16)
			for i := range ids {
				ids[i] = command.NewID()
			}
			payload := make([]byte, 64)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				cmd := &command.Command{ID: ids[i%len(ids)], Type: "ECHO", Payload: payload}
				i++
				o, _ := w.join(cmd.ID, w.digestOf(cmd))
				_ = w.finish(cmd, o, &command.Reply{Status: command.StatusSucceeded, Payload: cmd.Payload}, nil)
			}
		})
	}
}
