package route

import "testing"

func TestPick(t *testing.T) {
	t.Parallel()
	local := func(id string, inFlight int) Candidate {
		return Candidate{ChannelID: id, NodeID: "self", Local: true, InFlight: inFlight}
	}
	remote := func(id, node string) Candidate { return Candidate{ChannelID: id, NodeID: node} }
	tests := []struct {
		name        string
		cands       []Candidate
		primaryOnly bool
		primaryID   string
		turn        uint64
		want        Choice
	}{
		{name: "no candidates", want: Choice{}},
		{name: "one local", cands: []Candidate{local("a", 3)},
			want: Choice{Kind: Local, ChannelID: "a", NodeID: "self"}},
		{name: "least in flight wins", cands: []Candidate{local("a", 3), local("b", 1), local("c", 2)},
			want: Choice{Kind: Local, ChannelID: "b", NodeID: "self"}},
		{name: "ties rotate, turn 0", cands: []Candidate{local("a", 0), local("b", 5), local("c", 0)}, turn: 0,
			want: Choice{Kind: Local, ChannelID: "a", NodeID: "self"}},
		{name: "ties rotate, turn 1", cands: []Candidate{local("a", 0), local("b", 5), local("c", 0)}, turn: 1,
			want: Choice{Kind: Local, ChannelID: "c", NodeID: "self"}},
		{name: "ties rotate, turn 2 wraps", cands: []Candidate{local("a", 0), local("b", 5), local("c", 0)}, turn: 2,
			want: Choice{Kind: Local, ChannelID: "a", NodeID: "self"}},
		{name: "local before remote, even busy", cands: []Candidate{remote("r", "n2"), local("a", 900)},
			want: Choice{Kind: Local, ChannelID: "a", NodeID: "self"}},
		{name: "only remote: rotation", cands: []Candidate{remote("r1", "n2"), remote("r2", "n3")}, turn: 1,
			want: Choice{Kind: Remote, ChannelID: "r2", NodeID: "n3"}},
		{name: "primary local", cands: []Candidate{local("a", 0), local("b", 9)}, primaryOnly: true, primaryID: "b",
			want: Choice{Kind: Local, ChannelID: "b", NodeID: "self"}},
		{name: "primary remote", cands: []Candidate{local("a", 0), remote("r", "n2")}, primaryOnly: true, primaryID: "r",
			want: Choice{Kind: Remote, ChannelID: "r", NodeID: "n2"}},
		{name: "no primary", cands: []Candidate{local("a", 0)}, primaryOnly: true, want: Choice{}},
		{name: "primary not a candidate (dying)", cands: []Candidate{local("a", 0)}, primaryOnly: true, primaryID: "gone",
			want: Choice{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Pick(tt.cands, tt.primaryOnly, tt.primaryID, tt.turn); got != tt.want {
				t.Errorf("Pick() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
