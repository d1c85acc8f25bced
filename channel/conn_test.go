package channel

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/command"
)

func TestFrameValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		f       *Frame
		wantErr string // "" for a valid frame; else a substring of the error
	}{
		{"command", &Frame{Command: &command.Command{ID: "1", Type: "T"}}, ""},
		{"reply", &Frame{Reply: &command.Reply{CommandID: "1"}}, ""},
		{"reply without type or status", &Frame{Reply: &command.Reply{CommandID: "1", Status: command.StatusError}}, ""},
		{"nil frame", nil, "neither a command nor a reply"},
		{"empty frame", &Frame{}, "neither a command nor a reply"},
		{"both kinds", &Frame{Command: &command.Command{ID: "1", Type: "T"}, Reply: &command.Reply{CommandID: "1"}}, "both a command and a reply"},
		{"command without id", &Frame{Command: &command.Command{Type: "T"}}, `command of type "T" has no id`},
		{"command without type", &Frame{Command: &command.Command{ID: "1"}}, `command "1" has no type`},
		{"command without id or type", &Frame{Command: &command.Command{}}, "has no id"},
		{"reply without command id", &Frame{Reply: &command.Reply{Type: "T"}}, `reply of type "T" has no command id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.f.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformedFrame) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrMalformedFrame containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestFrameClone(t *testing.T) {
	t.Parallel()
	if (*Frame)(nil).Clone() != nil {
		t.Error("nil Frame Clone() != nil")
	}
	orig := &Frame{Command: &command.Command{ID: "1", Type: "T", Payload: []byte("p"), Metadata: map[string]string{"k": "v"}}}
	cp := orig.Clone()
	if diff := cmp.Diff(orig, cp); diff != "" {
		t.Fatalf("Clone() differs (-orig +clone):\n%s", diff)
	}
	cp.Command.Payload[0] = 'x'
	cp.Command.Metadata["k"] = "x"
	if string(orig.Command.Payload) != "p" || orig.Command.Metadata["k"] != "v" {
		t.Errorf("changing the clone changed the original: %+v", orig.Command)
	}
	r := &Frame{Reply: &command.Reply{CommandID: "1", Payload: []byte("r")}}
	rc := r.Clone()
	rc.Reply.Payload[0] = 'x'
	if string(r.Reply.Payload) != "r" || rc.Command != nil {
		t.Errorf("reply Clone() shares its payload or grew a command: %+v", rc)
	}
}

type peerConn struct{ Conn }

func (peerConn) PeerInfo() PeerInfo { return PeerInfo{Addr: "10.0.0.1:7400"} }

func TestPeer(t *testing.T) {
	t.Parallel()
	if got := Peer(peerConn{}); got.Addr != "10.0.0.1:7400" {
		t.Errorf("Peer(PeerInfoer) = %+v, want its PeerInfo", got)
	}
	var plain struct{ Conn }
	if got := Peer(plain); got != (PeerInfo{}) {
		t.Errorf("Peer(plain Conn) = %+v, want the zero PeerInfo", got)
	}
}
