package channel

import "testing"

// The set keeps its first call in the slot, the others in a map, and hands
// the slot to the next call once it is free; a map grown past
// keptPendingHigh goes once it empties, a smaller one stays.
func TestPendingCalls(t *testing.T) {
	var p pendingCalls
	if p.len() != 0 || p.has("a") {
		t.Fatal("a new set is not empty")
	}
	p.put("a", call{control: true})
	if p.m != nil || p.len() != 1 || !p.has("a") {
		t.Fatalf("one call: %+v, want it in the slot and no map", p)
	}
	p.put("b", call{})
	p.put("c", call{})
	if p.len() != 3 || len(p.m) != 2 {
		t.Fatalf("three calls: len %d, map %d; want 3 and 2", p.len(), len(p.m))
	}
	if c, ok := p.get("a"); !ok || !c.control {
		t.Fatalf("get(a) = %+v, %t", c, ok)
	}
	p.del("a")
	if p.has("a") || p.len() != 2 || p.oneID != "" {
		t.Fatalf("after del(a): %+v", p)
	}
	p.put("d", call{}) // the free slot takes it
	if p.oneID != "d" || p.len() != 3 {
		t.Fatalf("after put(d): %+v, want d in the slot", p)
	}
	p.del("b")
	p.del("c")
	p.del("d")
	if p.len() != 0 || p.m == nil {
		t.Fatalf("emptied: %+v, want empty with its small map kept", p)
	}

	for i := range keptPendingHigh + 2 {
		p.put(string(rune('A'+i%26))+string(rune('0'+i/26)), call{})
	}
	before := p.len()
	p.del("x") // not pending: nothing happens
	if p.len() != before {
		t.Fatalf("del of an id not pending changed the set: %d → %d", before, p.len())
	}
	calls := p.takeAll()
	if len(calls) != keptPendingHigh+2 || p.len() != 0 || p.m != nil {
		t.Fatalf("takeAll: %d calls, left %+v", len(calls), p)
	}
	for i := range keptPendingHigh + 2 {
		p.put(string(rune('A'+i%26))+string(rune('0'+i/26)), call{})
	}
	for i := range keptPendingHigh + 2 {
		p.del(string(rune('A'+i%26)) + string(rune('0'+i/26)))
	}
	if p.len() != 0 || p.m != nil {
		t.Fatalf("a burst's map emptied: %+v, want it dropped", p)
	}
}
