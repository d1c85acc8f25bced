// Package jsonlimit bounds the JSON that peers and operators send, so that
// nothing accepted can become a document that encoding/json refuses to write
// back or to read again (it stops at 10,000 levels of nesting), or one whose
// rendering grows faster than its size.
package jsonlimit

import (
	"encoding/json"
	"fmt"
)

// MaxDepth is the deepest nesting of arrays and objects that Exchange accepts
// in a payload it is given as JSON (REST bodies) and that it stores or serves
// as JSON. A payload nested deeper is still carried (and stored, as opaque
// bytes) but never embedded as JSON in another document. 64 levels is far
// beyond what real documents use (configuration trees rarely pass 10) and
// keeps every stored document (payload plus its envelopes) thousands of
// levels below encoding/json's limit.
const MaxDepth = 64

// Depth returns the deepest nesting of arrays and objects in b: 0 for a
// scalar, 1 for [1] or {"a":1}, 2 for [[1]]. It does not validate b (use
// json.Valid for that); brackets inside strings, escaped quotes included, do
// not count. It runs in one pass and allocates nothing.
func Depth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		}
	}
	return deepest
}

// DepthError reports a JSON document nested deeper than allowed.
type DepthError struct {
	Depth, Max int
}

func (e *DepthError) Error() string {
	return fmt.Sprintf("JSON nested %d levels deep; at most %d are allowed", e.Depth, e.Max)
}

// Check returns a *DepthError when b nests deeper than maxDepth.
func Check(b []byte, maxDepth int) error {
	if d := Depth(b); d > maxDepth {
		return &DepthError{Depth: d, Max: maxDepth}
	}
	return nil
}

// Embeddable reports whether b can be written as JSON inside another JSON
// document and read back unchanged: valid JSON nested at most MaxDepth deep.
func Embeddable(b []byte) bool {
	return len(b) > 0 && Depth(b) <= MaxDepth && json.Valid(b)
}
