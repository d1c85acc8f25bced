package controller_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// A HELLO whose identity breaks the limits is refused with code 400 and a
// reason naming the field and the limit, and nothing is registered.
func TestHelloIdentityLimits(t *testing.T) {
	many := map[string]string{}
	for i := range command.MaxMetadataEntries + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	large := map[string]string{}
	for i := range 20 {
		large[fmt.Sprint("k", i)] = strings.Repeat("v", 500)
	}
	rewrite := func(target string) controller.Authenticator {
		return controller.AuthenticatorFunc(func(context.Context, controller.HelloRequest) (string, error) {
			return target, nil
		})
	}
	tests := []struct {
		name string
		o    connOpts
		auth controller.Authenticator
		want string
	}{
		{"connector id too long", connOpts{target: "t", connectorID: strings.Repeat("c", 129)}, nil, "connectorId is 129 bytes; the limit is 128"},
		{"target id too long", connOpts{target: strings.Repeat("t", 200)}, nil, "targetId is 200 bytes; the limit is 128"},
		{"target id with NUL", connOpts{target: "t\x00"}, nil, "targetId holds the character U+0000"},
		{"target id with a newline", connOpts{target: "t\nforged row"}, nil, "targetId holds the character U+000A"},
		{"connector id with an escape", connOpts{target: "t", connectorID: "gw\x1b[31m"}, nil, "connectorId holds the character U+001B"},
		{"connector id padded", connOpts{target: "t", connectorID: "gw "}, nil, "connectorId starts or ends with white space"},
		{"too many metadata entries", connOpts{target: "t", metadata: many}, nil, "metadata has 33 entries; the limit is 32"},
		{"metadata value too long", connOpts{target: "t", metadata: map[string]string{"zone": strings.Repeat("v", 513)}}, nil,
			`metadata["zone"] is 513 bytes; the limit is 512`},
		{"metadata too large in all", connOpts{target: "t", metadata: large}, nil, "metadata is 10050 bytes; the limit is 8192"},
		{"metadata key with a newline", connOpts{target: "t", metadata: map[string]string{"a\nb": "v"}}, nil,
			`metadata key "a\nb" holds the character U+000A`},
		{"target rewritten by the Authenticator", connOpts{target: "t"}, rewrite("bad\ttarget"), "targetId holds the character U+0009"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastConfig()
			cfg.Authenticator = tt.auth
			h := newHarness(t, cfg)
			_, err := h.dial(t.Context(), tt.o)
			var rej *channel.HelloRejectedError
			if !errors.As(err, &rej) || rej.Code != 400 || !strings.Contains(rej.Reason, tt.want) {
				t.Fatalf("dial = %v (%+v), want a rejection with code 400 saying %q", err, rej, tt.want)
			}
			h.waitFor("metric", func() bool { return h.metrics.count("hello:protocol") == 1 })
			if n := len(h.ctrl.Channels()); n != 0 {
				t.Errorf("%d channels registered", n)
			}
		})
	}

	t.Run("at the limits", func(t *testing.T) {
		h := newHarness(t, fastConfig())
		md := map[string]string{}
		for i := range command.MaxMetadataEntries {
			md[fmt.Sprintf("key-%02d", i)] = strings.Repeat("é", 120) // 32 × (6 + 240) bytes < 8 KiB
		}
		target, conn := "site/"+strings.Repeat("t", 123), "gw 1/é"
		c := h.connect(connOpts{target: target, connectorID: conn, metadata: md})
		h.waitRegistered(c.id(), true)
		info, _ := h.ctrl.Channel(c.id())
		if info.TargetID != target || info.ConnectorID != conn || len(info.Metadata) != len(md) {
			t.Errorf("registered %q %q with %d metadata entries", info.TargetID, info.ConnectorID, len(info.Metadata))
		}
	})
}

// A HELLO payload over command.MaxHelloBytes is refused before it is
// decoded, whatever it holds (here a field nobody reads).
func TestHelloPayloadLimit(t *testing.T) {
	h := newHarness(t, fastConfig())
	conn, err := h.dialer.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := fmt.Sprintf(`{"targetId":"t","padding":%q}`, strings.Repeat("x", 1<<20))
	cmd := &command.Command{ID: command.NewID(), Type: command.TypeHello, Payload: []byte(payload)}
	if err := conn.Send(&channel.Frame{Command: cmd}); err != nil {
		t.Fatal(err)
	}
	frames := recvUntilClosed(t, conn)
	if len(frames) != 1 || frames[0].Reply == nil {
		t.Fatalf("got frames %+v, want one reply", frames)
	}
	r := frames[0].Reply
	want := fmt.Sprintf("HELLO payload is %d bytes; the limit is %d", len(payload), command.MaxHelloBytes)
	if r.Status != command.StatusError || r.Code != 400 || r.Error != want {
		t.Errorf("reply = %s %d %q, want ERROR 400 %q", r.Status, r.Code, r.Error, want)
	}
	h.waitFor("metric", func() bool { return h.metrics.count("hello:protocol") == 1 })
	if n := len(h.ctrl.Channels()); n != 0 {
		t.Errorf("%d channels registered", n)
	}
}
