package channel

import (
	"regexp"
	"testing"
)

func TestNewCommandIDIsFreshUUIDv4(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 3*idsPerSlab + 1 {
		id := newCommandID()
		if !re.MatchString(id) {
			t.Fatalf("newCommandID() = %q, not a canonical version-4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("newCommandID() repeated %q", id)
		}
		seen[id] = true
	}
}

func BenchmarkNewCommandID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = newCommandID()
	}
}
