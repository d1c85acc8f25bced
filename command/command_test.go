package command_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/command"
)

func TestNewIDIsCanonicalUUIDv4(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := command.NewID()
		if !re.MatchString(id) {
			t.Fatalf("NewID() = %q, not a canonical version-4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestStatusNamesAndParsing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in     string
		want   command.Status
		wantOK bool
	}{
		{"SUCCEEDED", command.StatusSucceeded, true},
		{"succeeded", command.StatusSucceeded, true},
		{"ERROR", command.StatusError, true},
		{"PENDING", command.StatusPending, true},
		{"In_Progress", command.StatusInProgress, true},
		{"FAILURE", command.StatusError, false}, // reference: unknown status deserializes to ERROR
		{"", command.StatusError, false},
		{"UNSPECIFIED", command.StatusError, false},
	} {
		got, ok := command.ParseStatus(tc.in)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseStatus(%q) = %v, %t; want %v, %t", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
	if got := command.Status(99).String(); got != "ERROR" {
		t.Errorf("Status(99).String() = %q, want ERROR", got)
	}
	for s, terminal := range map[command.Status]bool{command.StatusSucceeded: true, command.StatusError: true,
		command.StatusPending: false, command.StatusInProgress: false, command.StatusUnspecified: false} {
		if s.Terminal() != terminal {
			t.Errorf("%v.Terminal() = %t, want %t", s, !terminal, terminal)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	t.Parallel()
	var v struct {
		Status command.Status `json:"commandStatus"`
	}
	if err := json.Unmarshal([]byte(`{"commandStatus":"FAILURE"}`), &v); err != nil || v.Status != command.StatusError {
		t.Errorf(`unmarshal "FAILURE" = %v, %v; want ERROR, nil (reference: unknown status is ERROR)`, v.Status, err)
	}
	v.Status = command.StatusInProgress
	b, _ := json.Marshal(v)
	if string(b) != `{"commandStatus":"IN_PROGRESS"}` {
		t.Errorf("marshal = %s", b)
	}
}

// The built-in payloads keep the reference's JSON (reference §3.2,
// DefaultExchangeSerDeTest): field names, null fields omitted, booleans always
// present.
func TestBuiltinPayloadJSONMatchesReference(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v    any
		want string
	}{
		{command.HelloPayload{TargetID: "targetId"}, `{"targetId":"targetId"}`},
		{command.GoodByePayload{TargetID: "targetId", Reconnect: false}, `{"targetId":"targetId","reconnect":false}`},
		{command.GoodByePayload{TargetID: "targetId", Reconnect: true}, `{"targetId":"targetId","reconnect":true}`},
		{command.GoodByeReplyPayload{TargetID: "targetId"}, `{"targetId":"targetId"}`},
		{command.HealthCheckPayload{}, `{}`},
		{command.HealthCheckReplyPayload{Healthy: true}, `{"healthy":true}`},
		{command.HealthCheckReplyPayload{Healthy: false, Detail: "disk full"}, `{"healthy":false,"detail":"disk full"}`},
		{command.PrimaryPayload{Primary: true}, `{"primary":true}`},
		{command.PrimaryPayload{Primary: false}, `{"primary":false}`},
		{command.PrimaryPayload{Primary: true, Epoch: 7}, `{"primary":true,"epoch":7}`},
		{command.PrimaryReplyPayload{}, `{}`},
		{command.HelloPayload{TargetID: "t", ConnectorID: "c", Token: "s", ProtocolVersion: 1,
			Metadata: map[string]string{"zone": "eu"}, Capabilities: []string{"batch"}},
			`{"targetId":"t","connectorId":"c","token":"s","protocolVersion":1,"metadata":{"zone":"eu"},"capabilities":["batch"]}`},
	} {
		b, err := command.Encode(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("Encode(%#v) = %s, want %s", tc.v, b, tc.want)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	if b, _ := command.Encode(nil); string(b) != "{}" {
		t.Errorf("Encode(nil) = %s, want {}", b)
	}
	if b, _ := command.Encode([]byte(`[1]`)); string(b) != "[1]" {
		t.Errorf("Encode([]byte) = %s, want the bytes as they are", b)
	}
	if _, err := command.Encode(make(chan int)); err == nil {
		t.Error("Encode(chan) = nil error, want one")
	}
	got, err := command.Decode[command.HealthCheckReplyPayload]([]byte(`{"healthy":true,"extra":"ignored"}`))
	if err != nil || !got.Healthy {
		t.Errorf("Decode with an unknown field = %+v, %v; want healthy, nil (unknown fields are ignored)", got, err)
	}
	if got, err := command.Decode[command.PrimaryPayload](nil); err != nil || got.Primary {
		t.Errorf("Decode(empty) = %+v, %v; want the zero value", got, err)
	}
	_, err = command.Decode[command.PrimaryPayload]([]byte(`{"primary":"yes"}`))
	var pe *command.PayloadError
	if !errors.As(err, &pe) {
		t.Errorf("Decode(bad) = %v, want a *PayloadError", err)
	}
}

func TestCloneIsDeep(t *testing.T) {
	t.Parallel()
	c := &command.Command{ID: "1", Type: "T", Payload: []byte("abc"), Metadata: map[string]string{"k": "v"}, Timeout: time.Second}
	d := c.Clone()
	d.Payload[0] = 'X'
	d.Metadata["k"] = "changed"
	if string(c.Payload) != "abc" || c.Metadata["k"] != "v" {
		t.Errorf("Clone shares memory with the original: %+v", c)
	}
	r := &command.Reply{CommandID: "1", Payload: []byte("xyz")}
	s := r.Clone()
	s.Payload[0] = 'Q'
	if string(r.Payload) != "xyz" {
		t.Error("Reply.Clone shares the payload")
	}
	if (*command.Command)(nil).Clone() != nil || (*command.Reply)(nil).Clone() != nil {
		t.Error("Clone of nil is not nil")
	}
}

func TestMux(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := command.NewMux()
	m.RegisterFunc("A", func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, "a")
	})
	if !m.RegisterIfAbsent("B", command.HandlerFunc(func(_ context.Context, c *command.Command) (*command.Reply, error) {
		return command.Succeeded(c, "b")
	})) {
		t.Error("RegisterIfAbsent(B) on an empty slot = false")
	}
	if m.RegisterIfAbsent("A", command.HandlerFunc(func(context.Context, *command.Command) (*command.Reply, error) {
		return nil, errors.New("must not replace")
	})) {
		t.Error("RegisterIfAbsent(A) replaced the registered handler")
	}
	for typ, want := range map[command.Type]string{"A": `"a"`, "B": `"b"`} {
		r, err := m.Handle(ctx, &command.Command{ID: "x", Type: typ})
		if err != nil || string(r.Payload) != want || r.CommandID != "x" || r.Status != command.StatusSucceeded {
			t.Errorf("Handle(%s) = %+v, %v", typ, r, err)
		}
	}
	_, err := m.Handle(ctx, &command.Command{ID: "x", Type: "C"})
	if !errors.Is(err, command.ErrUnknownCommand) {
		t.Errorf("Handle(C) = %v, want ErrUnknownCommand", err)
	}
	if diff := cmp.Diff(2, len(m.Types())); diff != "" {
		t.Errorf("Types() count (-want +got):\n%s", diff)
	}
	defer func() {
		if recover() == nil {
			t.Error("Register with an empty type did not panic")
		}
	}()
	m.Register("", command.HandlerFunc(nil))
}

type echoIn struct {
	Text string `json:"text"`
}

func TestTyped(t *testing.T) {
	t.Parallel()
	h := command.Typed(func(_ context.Context, in echoIn) (echoIn, error) {
		if in.Text == "fail" {
			return echoIn{}, errors.New("boom")
		}
		return echoIn{Text: in.Text + "!"}, nil
	})
	ctx := t.Context()
	r, err := h.Handle(ctx, command.MustCommand("E", echoIn{Text: "hi"}))
	if err != nil || string(r.Payload) != `{"text":"hi!"}` || r.Status != command.StatusSucceeded {
		t.Errorf("typed ok = %+v, %v", r, err)
	}
	r, err = h.Handle(ctx, &command.Command{ID: "1", Type: "E", Payload: []byte(`{"text":`)})
	if err != nil || r.Status != command.StatusError || r.Code != 400 {
		t.Errorf("typed with a bad payload = %+v, %v; want an ERROR reply with code 400", r, err)
	}
	if _, err := h.Handle(ctx, command.MustCommand("E", echoIn{Text: "fail"})); err == nil || err.Error() != "boom" {
		t.Errorf("typed handler error = %v, want boom (the channel turns it into NO_REPLY)", err)
	}
}

func TestFailedAndSucceeded(t *testing.T) {
	t.Parallel()
	c := &command.Command{ID: "id-1", Type: "T"}
	f := command.Failed(c, "no")
	if f.CommandID != "id-1" || f.Type != "T" || f.Status != command.StatusError || f.Error != "no" || f.Succeeded() {
		t.Errorf("Failed = %+v", f)
	}
	s, err := command.Succeeded(c, map[string]int{"n": 1})
	if err != nil || !s.Succeeded() || string(s.Payload) != `{"n":1}` {
		t.Errorf("Succeeded = %+v, %v", s, err)
	}
	if c.String() != "T[id-1]" {
		t.Errorf("String() = %q", c.String())
	}
}

func TestReplyComplete(t *testing.T) {
	c := &command.Command{ID: "1", Type: "DO"}
	for _, tt := range []struct {
		in, want command.Reply
	}{
		{command.Reply{}, command.Reply{CommandID: "1", Type: "DO", Status: command.StatusSucceeded}},
		{command.Reply{Error: "no"}, command.Reply{CommandID: "1", Type: "DO", Status: command.StatusError, Error: "no"}},
		{command.Reply{CommandID: "x", Type: "OTHER", Status: command.StatusPending},
			command.Reply{CommandID: "1", Type: "OTHER", Status: command.StatusPending}},
	} {
		r := tt.in
		if r.IsCompleteFor(c) {
			t.Errorf("%+v.IsCompleteFor(%s) = true before Complete", tt.in, c)
		}
		r.Complete(c)
		if !reflect.DeepEqual(r, tt.want) {
			t.Errorf("Complete(%+v) = %+v, want %+v", tt.in, r, tt.want)
		}
		if !r.IsCompleteFor(c) {
			t.Errorf("%+v.IsCompleteFor(%s) = false after Complete", r, c)
		}
	}
}
