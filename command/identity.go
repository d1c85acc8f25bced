package command

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Limits on what a connector says about itself in HELLO: its connector id,
// its target id and its metadata, all of which are stored with its channel in
// the replicated state (docs/decisions/0020-identity-limits.md). The
// controller refuses a HELLO over them with an ERROR reply (code 400) naming
// the field and the limit, and the state refuses a registration over them, so
// nothing unbounded reaches the raft log. Sizes are in bytes of UTF-8.
const (
	// MaxHelloBytes bounds a HELLO command's payload, checked before it is
	// decoded. It leaves room for the largest HELLO within the other limits
	// even when JSON-escaped at the worst (Go escapes <, > and & to six
	// bytes: 8 KiB of metadata can take 48 KiB), plus a token of several KiB.
	MaxHelloBytes = 64 << 10
	// MaxIDBytes bounds a connector id, a target id (and a channel or node
	// id in the state).
	MaxIDBytes = 128
	// MaxMetadataEntries bounds the number of metadata entries.
	MaxMetadataEntries = 32
	// MaxMetadataKeyBytes bounds a metadata key.
	MaxMetadataKeyBytes = 64
	// MaxMetadataValueBytes bounds a metadata value.
	MaxMetadataValueBytes = 512
	// MaxMetadataBytes bounds the sum of the metadata's keys and values.
	MaxMetadataBytes = 8 << 10
)

// IdentityError reports an id or a metadata entry that breaks the identity
// rules (see CheckID and CheckIdentity). Its text names the field and the
// rule, for example "connectorId is 300 bytes; the limit is 128".
type IdentityError struct {
	// Field is the field at fault: "connectorId", "targetId", "metadata",
	// or a metadata key or value (`metadata key "zone"`,
	// `metadata["zone"]`).
	Field string
	// Problem says what is wrong with it.
	Problem string
}

func (e *IdentityError) Error() string { return e.Field + " " + e.Problem }

// CheckID checks an id (a connector, target, channel or node id, or a
// metadata key) named field against the id rules: not empty, at most max
// bytes, valid UTF-8, no control character (unicode.IsControl, tab and
// newline included), no line or paragraph separator or bidirectional
// formatting character (which can make a listing lie about what it shows), no
// leading or trailing white space. '/' and any other printable character are
// allowed. The rules read no Unicode tables that change between Go versions,
// so every node of a cluster decides alike. It returns nil or an
// *IdentityError.
func CheckID(field, id string, max int) error {
	if err := checkID(field, id, max); err != nil {
		return err
	}
	return nil
}

// checkID is CheckID with its concrete error type.
func checkID(field, id string, max int) *IdentityError {
	if id == "" {
		return &IdentityError{Field: field, Problem: "is empty"}
	}
	if err := checkText(field, id, max); err != nil {
		return err
	}
	first, _ := utf8.DecodeRuneInString(id)
	last, _ := utf8.DecodeLastRuneInString(id)
	if isSpace(first) || isSpace(last) {
		return &IdentityError{Field: field, Problem: "starts or ends with white space"}
	}
	return nil
}

// CheckIdentity checks what a channel says about itself: connectorID (may be
// empty: an anonymous connector), targetID (required) and metadata (at most
// MaxMetadataEntries entries, keys following the id rules up to
// MaxMetadataKeyBytes, values up to MaxMetadataValueBytes of valid UTF-8
// without control or formatting characters, MaxMetadataBytes in all). Its
// cost is bounded by the limits, whatever the size of its input. It returns
// nil or an *IdentityError; with several faults, the same one on every call.
func CheckIdentity(connectorID, targetID string, metadata map[string]string) error {
	if connectorID != "" {
		if err := checkID("connectorId", connectorID, MaxIDBytes); err != nil {
			return err
		}
	}
	if err := checkID("targetId", targetID, MaxIDBytes); err != nil {
		return err
	}
	return CheckMetadata(metadata)
}

// CheckMetadata checks channel metadata; see CheckIdentity.
func CheckMetadata(md map[string]string) error {
	if len(md) > MaxMetadataEntries {
		return &IdentityError{Field: "metadata", Problem: fmt.Sprintf("has %d entries; the limit is %d", len(md), MaxMetadataEntries)}
	}
	total, bad := 0, false
	for k, v := range md { // the common case, all well, allocates nothing
		if checkEntry(k, v) != nil {
			bad = true
			break
		}
		total += len(k) + len(v)
	}
	if bad {
		for _, k := range slices.Sorted(maps.Keys(md)) { // sorted: the same fault reported on every node
			if err := checkEntry(k, md[k]); err != nil {
				return err
			}
		}
	}
	if total > MaxMetadataBytes {
		return &IdentityError{Field: "metadata", Problem: fmt.Sprintf("is %d bytes; the limit is %d", total, MaxMetadataBytes)}
	}
	return nil
}

// checkEntry checks one metadata entry; the field is named only on error,
// so that checking allocates nothing.
func checkEntry(k, v string) error {
	if err := checkID("", k, MaxMetadataKeyBytes); err != nil {
		err.Field = "metadata key " + quoteShort(k)
		return err
	}
	if err := checkText("", v, MaxMetadataValueBytes); err != nil {
		err.Field = "metadata[" + quoteShort(k) + "]"
		return err
	}
	return nil
}

// checkText checks s for the length and character rules shared by ids and
// metadata values.
func checkText(field, s string, max int) *IdentityError {
	if len(s) > max {
		return &IdentityError{Field: field, Problem: fmt.Sprintf("is %d bytes; the limit is %d", len(s), max)}
	}
	if !utf8.ValidString(s) {
		return &IdentityError{Field: field, Problem: "is not valid UTF-8"}
	}
	for i, r := range s {
		if isForbidden(r) {
			return &IdentityError{Field: field, Problem: fmt.Sprintf("holds the character %U at byte %d; control and formatting characters are not allowed", r, i)}
		}
	}
	return nil
}

// isForbidden reports the characters no id or metadata value may hold: the
// C0 and C1 controls and DEL (unicode.IsControl, whose set is fixed), the
// line and paragraph separators, and the bidirectional formatting characters
// (the "Trojan Source" set).
func isForbidden(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029: // line, paragraph separator
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, // arabic letter mark, LRM, RLM
		r >= 0x202a && r <= 0x202e, // LRE, RLE, PDF, LRO, RLO
		r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// isSpace is unicode.IsSpace for the characters an id may hold, written out
// so that it cannot change with the Go version's Unicode tables.
func isSpace(r rune) bool {
	switch r {
	case ' ', 0xa0, 0x1680, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const keep = 40
	if len(s) <= keep {
		return strconv.Quote(s)
	}
	cut := keep
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
