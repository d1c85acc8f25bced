package jsonlimit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDepth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{``, 0},
		{`1`, 0},
		{`"[[[["`, 0},
		{`"a\"[[["`, 0},
		{`"\\"`, 0},
		{`"\\"[[1]]`, 2},
		{`[]`, 1},
		{`{"a":[1,{"b":[]}]}`, 4},
		{`[[1],[2],[[3]]]`, 3},
		{`{"k":"]]]]"}`, 1},
		{strings.Repeat("[", 9993) + strings.Repeat("]", 9993), 9993},
	} {
		if got := Depth([]byte(tc.in)); got != tc.want {
			t.Errorf("Depth(%.40q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	deep := []byte(strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1))
	var de *DepthError
	if err := Check(deep, MaxDepth); !errors.As(err, &de) || de.Depth != MaxDepth+1 || de.Max != MaxDepth {
		t.Fatalf("Check(depth %d) = %v, want a DepthError", MaxDepth+1, err)
	}
	if err := Check(deep[1:len(deep)-1], MaxDepth); err != nil {
		t.Fatalf("Check(depth %d) = %v, want nil", MaxDepth, err)
	}
}

func TestEmbeddable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{``, false},
		{`{"a":1}`, true},
		{`not json`, false},
		{strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), true},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), false},
	} {
		if got := Embeddable([]byte(tc.in)); got != tc.want {
			t.Errorf("Embeddable(%.40q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzDepth checks Depth against encoding/json on valid documents: a valid
// document json.Unmarshal accepts has the depth counted by a decoder walk.
func FuzzDepth(f *testing.F) {
	for _, s := range []string{`1`, `[[1]]`, `{"a":"]\"["}`, `[{"a":[{}]}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Depth(b)
		if !json.Valid(b) {
			return
		}
		if want := decoderDepth(t, b); got != want {
			t.Fatalf("Depth(%q) = %d, decoder says %d", b, got, want)
		}
	})
}

func decoderDepth(t *testing.T, b []byte) int {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}
