package cluster

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/exchangekit/exchange/state"
)

// FuzzDecodeEntry decodes arbitrary bytes as a raft log entry, as the FSM
// does on every node: decodeEntry never panics, refuses with ErrBadEntry,
// and whatever it accepts re-encodes to an entry that decodes to the same
// ops (compared through their encoding, which is canonical JSON).
func FuzzDecodeEntry(f *testing.F) {
	ok, err := encodeEntry([]state.Op{
		{Register: &state.RegisterChannel{Channel: state.Channel{ID: "a", TargetID: "t", NodeID: "n", Active: true,
			RegisteredAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Metadata: map[string]string{"k": "v"}}}},
		{SetPrimary: &state.SetPrimary{TargetID: "t", ChannelID: "a"}},
		{Unregister: &state.UnregisterChannel{ChannelID: "a"}},
		{RemoveNodeChannels: &state.RemoveNodeChannels{NodeID: "n"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ok)
	for _, s := range []string{
		`{"v":1,"ops":[]}`, `{"v":1}`, `{"v":2,"ops":[]}`, `{"v":1,"ops":null}`, `{"v":1,"ops":[{}]}`,
		`{"v":1e400,"ops":[]}`, `{"v":-1}`, `[]`, `null`, ``,
		`{"v":1,"ops":[{"register":{"channel":{"id":"\u0000","targetId":"\ud800","registeredAt":"0000-01-01T00:00:00Z"}}}]}`,
		`{"v":1,"ops":[{"removeNodeChannels":{"nodeId":"n","upToSeq":18446744073709551615}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := decodeEntry(b)
		if err != nil {
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("decodeEntry() = %v, want an error wrapping ErrBadEntry", err)
			}
			return
		}
		first, err := encodeEntry(ops)
		if err != nil {
			t.Fatalf("encodeEntry(decoded ops) = %v", err)
		}
		again, err := decodeEntry(first)
		if err != nil {
			t.Fatalf("decodeEntry(encodeEntry()) = %v\n%s", err, first)
		}
		second, err := encodeEntry(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("ops changed in a round trip:\nfirst  %s\nsecond %s", first, second)
		}
	})
}

// FuzzDecodeSnapshot decodes arbitrary bytes as a raft snapshot, as Restore
// does: decodeSnapshot never panics, and whatever it accepts persists (the
// fsmSnapshot form, header included) to bytes that decode to the same state.
func FuzzDecodeSnapshot(f *testing.F) {
	s := state.NewState()
	if _, err := s.Apply(state.Op{Register: &state.RegisterChannel{Channel: state.Channel{ID: "a", TargetID: "t", NodeID: "n", Active: true}}}); err != nil {
		f.Fatal(err)
	}
	body, err := s.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(snapshotHeader), body...))
	for _, b := range []string{
		snapshotHeader, snapshotHeader + `{}`, snapshotHeader + `null`, snapshotHeader + `{"channels":{"x":null}}`,
		"exchange-state v2\n{}", `{}`, snapshotHeader + "\x00\xff",
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSnapshot(b)
		if err != nil {
			return
		}
		persist := func(s *state.State) []byte {
			body, err := s.Marshal()
			if err != nil {
				t.Fatalf("Marshal() of a restored state = %v", err)
			}
			return append([]byte(snapshotHeader), body...)
		}
		first := persist(s)
		again, err := decodeSnapshot(first)
		if err != nil {
			t.Fatalf("decodeSnapshot(persisted) = %v\n%s", err, first)
		}
		if second := persist(again); !bytes.Equal(first, second) {
			t.Fatalf("state changed in a round trip:\nfirst  %s\nsecond %s", first, second)
		}
	})
}
