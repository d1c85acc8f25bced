package membership

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ev(t EventType, id, inc string) Event {
	return Event{Type: t, Member: Member{Meta: Meta{NodeID: id, Incarnation: inc}}}
}

func TestEventQueueCoalesces(t *testing.T) {
	t.Parallel()
	q := newEventQueue()
	q.push(ev(EventJoin, "a", "1"))
	q.push(ev(EventJoin, "b", "1"))
	q.push(ev(EventUpdate, "a", "2")) // a join updated before delivery stays a join
	q.push(ev(EventFail, "b", "1"))   // newest wins
	q.push(ev(EventJoin, "c", "1"))
	q.push(ev(EventJoin, "b", "2")) // failed and back: a join with a new incarnation

	var got []Event
	for {
		e, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, e)
	}
	want := []Event{ev(EventJoin, "a", "2"), ev(EventJoin, "b", "2"), ev(EventJoin, "c", "1")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("popped (-want +got):\n%s", diff)
	}
	if got := q.coalescedCount(); got != 3 {
		t.Errorf("coalescedCount() = %d, want 3", got)
	}
	if len(q.pending) != 0 || len(q.order) != 0 {
		t.Errorf("queue not empty after draining: %v %v", q.pending, q.order)
	}

	// Once delivered, a node's next event is queued afresh, in order.
	q.push(ev(EventUpdate, "a", "3"))
	q.push(ev(EventLeave, "c", "1"))
	if e, _ := q.pop(); e.Type != EventUpdate || e.Member.Meta.NodeID != "a" {
		t.Errorf("pop() = %+v, want a's update", e)
	}
	if e, _ := q.pop(); e.Type != EventLeave || e.Member.Meta.NodeID != "c" {
		t.Errorf("pop() = %+v, want c's leave", e)
	}
}

func TestEventQueuePushNeverBlocks(t *testing.T) {
	t.Parallel()
	q := newEventQueue()
	for i := range 10000 { // nobody pops: memory stays one event per node
		q.push(ev(EventUpdate, string(rune('a'+i%5)), ""))
	}
	if len(q.pending) != 5 || len(q.order) != 5 {
		t.Errorf("%d pending, %d in order; want 5 and 5", len(q.pending), len(q.order))
	}
}

func TestMetaEncoding(t *testing.T) {
	t.Parallel()
	m := Meta{NodeID: "n1", RaftAddr: "10.0.0.1:7401", GRPCAddr: "10.0.0.1:7400", Incarnation: "abc", Version: 1}
	b, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"id":"n1","raft":"10.0.0.1:7401","grpc":"10.0.0.1:7400","inc":"abc","v":1}`
	if string(b) != want {
		t.Errorf("encodeMeta() = %s, want %s", b, want)
	}
	got, leaving, err := decodeMeta(b)
	if err != nil || leaving || got != m {
		t.Errorf("decodeMeta() = %+v, %v, %v; want %+v, false, nil", got, leaving, err, m)
	}
	got, leaving, err = decodeMeta(encodeLeaving(m))
	if err != nil || !leaving || got != m {
		t.Errorf("decodeMeta(leaving) = %+v, %v, %v; want %+v, true, nil", got, leaving, err, m)
	}
	if _, _, err := decodeMeta([]byte("not json")); err == nil {
		t.Error("decodeMeta(garbage) = nil error")
	}
}
