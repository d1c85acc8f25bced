package command_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/command"
)

func TestCheckID(t *testing.T) {
	tests := []struct {
		id   string
		want string // "" for valid
	}{
		{"gw-1", ""},
		{"site/gw-1", ""},
		{"gw 1", ""},
		{"été", ""},
		{strings.Repeat("x", 128), ""},
		{"", "id is empty"},
		{strings.Repeat("x", 129), "id is 129 bytes; the limit is 128"},
		{"a\x00", "U+0000"},
		{"a\x7f", "U+007F"},
		{"a\u0085", "U+0085"},
		{"a\u2028b", "U+2028"},
		{"a\u202eb", "U+202E"},
		{"a\xffb", "not valid UTF-8"},
		{" a", "starts or ends with white space"},
		{"a\u3000", "starts or ends with white space"},
		{"a\u00a0", "starts or ends with white space"},
	}
	for _, tt := range tests {
		err := command.CheckID("id", tt.id, command.MaxIDBytes)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckID(%q) = %v, want nil", tt.id, err)
			}
			continue
		}
		var ie *command.IdentityError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckID(%q) = %v, want an IdentityError saying %q", tt.id, err, tt.want)
		}
	}
}

// With several faults, the one reported is the same on every call (map
// iteration order is random): nodes that refuse an op say the same thing.
func TestCheckMetadataReportsTheFirstFaultInOrder(t *testing.T) {
	md := map[string]string{"a": "ok", "b": "bad\n", "c": "bad\n", "d\n": "x", "e": strings.Repeat("v", 600)}
	for range 50 {
		err := command.CheckMetadata(md)
		if err == nil || err.Error() != `metadata["b"] holds the character U+000A at byte 3; control and formatting characters are not allowed` {
			t.Fatalf("CheckMetadata() = %v", err)
		}
	}
}
