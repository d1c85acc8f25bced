package connector

import (
	"errors"
	"testing"

	"github.com/exchangekit/exchange/command"
)

func TestWindowJoinAndFinish(t *testing.T) {
	w := newWindow(2)
	done, run, first := w.join("a")
	if done != nil || run == nil || !first {
		t.Fatalf("join(a) = %v, %v, %v; want a new run to start", done, run, first)
	}
	if _, again, first := w.join("a"); again != run || first {
		t.Fatalf("second join(a) = %v, first %v; want to wait on the same run", again, first)
	}
	r := &command.Reply{CommandID: "a", Status: command.StatusSucceeded, Payload: []byte(`1`)}
	w.finish("a", run, r, nil)
	select {
	case <-run.done:
	default:
		t.Fatal("finish did not wake the waiters")
	}
	r.Payload[0] = '9' // the window keeps its own copy
	if done, _, _ := w.join("a"); done == nil || string(done.reply.Payload) != "1" {
		t.Fatalf("join(a) after finish = %+v, want the remembered reply", done)
	}
}

func TestWindowEvictsOldestFirst(t *testing.T) {
	w := newWindow(3)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		_, o, _ := w.join(id)
		w.finish(id, o, nil, nil)
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		w.mu.Lock()
		_, ok := w.done[id]
		w.mu.Unlock()
		if ok != want {
			t.Errorf("%s remembered = %v, want %v", id, ok, want)
		}
	}
	if w.len() != 3 {
		t.Errorf("len() = %d, want 3", w.len())
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
