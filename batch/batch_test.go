package batch_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// ids returns a newID func handing out "id-1", "id-2", ...
func ids() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("id-%d", n) }
}

func cmd(id string, typ command.Type, payload string) batch.Command {
	c := &command.Command{ID: id, Type: typ}
	if payload != "" {
		c.Payload = []byte(payload)
	}
	return batch.Command{Command: c}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, s := range []batch.Status{batch.StatusCreated, batch.StatusPending, batch.StatusInProgress, batch.StatusSucceeded, batch.StatusError} {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatalf("%v.MarshalText() = %v", s, err)
		}
		if string(b) != s.String() {
			t.Errorf("MarshalText() = %q, want %q", b, s.String())
		}
		got, err := batch.ParseStatus(strings.ToLower(s.String()))
		if err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %v, %v; want %v", strings.ToLower(s.String()), got, err, s)
		}
		if want := s == batch.StatusSucceeded || s == batch.StatusError; s.Terminal() != want {
			t.Errorf("%v.Terminal() = %v, want %v", s, s.Terminal(), want)
		}
	}
	if _, err := batch.ParseStatus("DONE"); !errors.Is(err, batch.ErrInvalid) {
		t.Errorf("ParseStatus(DONE) error = %v, want ErrInvalid", err)
	}
	if _, err := batch.Status(42).MarshalText(); !errors.Is(err, batch.ErrInvalid) {
		t.Errorf("Status(42).MarshalText() error = %v, want ErrInvalid", err)
	}
	var s batch.Status
	if err := s.UnmarshalText([]byte("in_progress")); err != nil || s != batch.StatusInProgress {
		t.Errorf("UnmarshalText(in_progress) = %v, %v", s, err)
	}
	if err := s.UnmarshalText([]byte("nope")); err == nil {
		t.Error("UnmarshalText(nope) = nil, want an error")
	}
}

func TestPrepareValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    batch.Batch
		field string
	}{
		{"no target", batch.Batch{Commands: []batch.Command{cmd("", "A", "")}}, "targetId"},
		{"no commands", batch.Batch{TargetID: "t1"}, "commands"},
		{"empty commands", batch.Batch{TargetID: "t1", Commands: []batch.Command{}}, "commands"},
		{"nil command", batch.Batch{TargetID: "t1", Commands: []batch.Command{cmd("", "A", ""), {}}}, "commands[1].command"},
		{"no type", batch.Batch{TargetID: "t1", Commands: []batch.Command{cmd("a", "A", ""), cmd("b", "", "")}}, "commands[1].command.type"},
		{"duplicate id", batch.Batch{TargetID: "t1", Commands: []batch.Command{cmd("a", "A", ""), cmd("b", "B", ""), cmd("a", "C", "")}}, "commands[2].command.id"},
		{"one way", batch.Batch{TargetID: "t1", Commands: []batch.Command{{Command: &command.Command{Type: "A", OneWay: true}}}}, "commands[0].command.oneWay"},
		{"negative max retry", batch.Batch{TargetID: "t1", MaxRetry: new(-1), Commands: []batch.Command{cmd("", "A", "")}}, "maxRetry"},
		{"max retry over the bound", batch.Batch{TargetID: "t1", MaxRetry: new(batch.MaxRetryLimit + 1), Commands: []batch.Command{cmd("", "A", "")}}, "maxRetry"},
		{"max retry near 2^63", batch.Batch{TargetID: "t1", MaxRetry: new(math.MaxInt64), Commands: []batch.Command{cmd("", "A", "")}}, "maxRetry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := batch.Prepare(tt.in, t0, 5, ids())
			var ve *batch.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Prepare() error = %v, want *ValidationError", err)
			}
			if ve.Field != tt.field {
				t.Errorf("Field = %q, want %q (%v)", ve.Field, tt.field, err)
			}
			if !errors.Is(err, batch.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
		})
	}
}

func TestPrepareFillsDefaults(t *testing.T) {
	t.Parallel()
	in := batch.Batch{
		Key:      "k",
		TargetID: "t1",
		Status:   batch.StatusError, // ignored
		Retry:    3,                 // ignored
		Error:    "old",             // ignored
		Commands: []batch.Command{
			{Command: &command.Command{Type: "A", Payload: []byte{}, Metadata: map[string]string{}, Timeout: time.Second}, Status: batch.StatusSucceeded},
			{Command: &command.Command{ID: "mine", Type: "B", Payload: []byte(`{"x":1}`), Metadata: map[string]string{"m": "v"}}},
		},
	}
	got, err := batch.Prepare(in, t0.Local(), 5, ids())
	if err != nil {
		t.Fatalf("Prepare() = %v", err)
	}
	want := batch.Batch{
		ID: "id-1", Key: "k", TargetID: "t1", Status: batch.StatusCreated, MaxRetry: new(5),
		CreatedAt: t0, UpdatedAt: t0,
		Commands: []batch.Command{
			{Command: &command.Command{ID: "id-2", Type: "A"}, Status: batch.StatusPending},
			{Command: &command.Command{ID: "mine", Type: "B", Payload: []byte(`{"x":1}`), Metadata: map[string]string{"m": "v"}}, Status: batch.StatusPending},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Prepare() mismatch (-want +got):\n%s", diff)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt location = %v, want UTC", got.CreatedAt.Location())
	}
	// The input is not aliased.
	in.Commands[1].Command.Payload[0] = 'X'
	if string(got.Commands[1].Command.Payload) != `{"x":1}` {
		t.Errorf("Prepare aliases the caller's payload")
	}
	if got, err := batch.Prepare(batch.Batch{TargetID: "t", MaxRetry: new(batch.MaxRetryLimit), Commands: []batch.Command{cmd("", "A", "")}}, t0, 5, ids()); err != nil || *got.MaxRetry != batch.MaxRetryLimit {
		t.Errorf("Prepare(maxRetry MaxRetryLimit) = %v, %v; want it accepted", got.MaxRetry, err)
	}
	if _, err := batch.Prepare(batch.Batch{TargetID: "t", Commands: []batch.Command{cmd("", "A", "")}}, t0, batch.MaxRetryLimit+1, ids()); err == nil {
		t.Error("Prepare(default maxRetry over the bound) = nil error, want one")
	}
	if got, err := batch.Prepare(batch.Batch{TargetID: "t", MaxRetry: new(0), Commands: []batch.Command{cmd("", "A", "")}}, t0, 5, ids()); err != nil || *got.MaxRetry != 0 {
		t.Errorf("Prepare(maxRetry 0) = %v, %v; want maxRetry 0", got.MaxRetry, err)
	}
}

func TestBatchJSONRoundTrip(t *testing.T) {
	t.Parallel()
	payloads := map[string][]byte{
		"compact JSON":  []byte(`{"a":[1,2,{"b":"c"}]}`),
		"indented JSON": []byte("{\n  \"a\": 1\n}"),
		"HTML in JSON":  []byte(`{"html":"<b>&</b>"}`),
		"JSON string":   []byte(`"aGVsbG8="`),
		"binary":        {0, 1, 2, 0xff, 0xfe},
		"text":          []byte("hello"),
		"empty":         nil,
	}
	for name, p := range payloads {
		t.Run(name, func(t *testing.T) {
			b := batch.Batch{
				ID: "b1", Key: "k", TargetID: "t1", Status: batch.StatusPending, Error: "connector replied ERROR: no",
				MaxRetry: new(5), Retry: 1, Attempts: 2, LastRetryAt: t0, NextAttemptAt: t0.Add(time.Second),
				CreatedAt: t0, UpdatedAt: t0.Add(time.Second),
				Commands: []batch.Command{
					{Command: &command.Command{ID: "c1", Type: "A", Payload: p, Metadata: map[string]string{"k": "v"}},
						Status: batch.StatusSucceeded, Reply: &command.Reply{Status: command.StatusSucceeded, Payload: p, Code: 200}},
					{Command: &command.Command{ID: "c2", Type: "B"}, Status: batch.StatusError,
						Reply: &command.Reply{Status: command.StatusError, Error: "no", Code: 500}, Error: "connector replied ERROR: no"},
					{Command: &command.Command{ID: "c3", Type: "C"}, Status: batch.StatusPending,
						Reply: &command.Reply{Status: command.StatusUnspecified}},
				},
			}
			data, err := json.Marshal(b)
			if err != nil {
				t.Fatalf("Marshal() = %v", err)
			}
			var got batch.Batch
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatalf("Unmarshal() = %v", err)
			}
			if diff := cmp.Diff(b, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s\njson: %s", diff, data)
			}
		})
	}
}

func TestBatchJSONShape(t *testing.T) {
	t.Parallel()
	b := batch.Batch{
		ID: "b1", TargetID: "t1", Status: batch.StatusSucceeded, MaxRetry: new(5), CreatedAt: t0, UpdatedAt: t0,
		Commands: []batch.Command{
			{Command: &command.Command{ID: "c1", Type: "A", Payload: []byte(`{"x":1}`)}, Status: batch.StatusSucceeded,
				Reply: &command.Reply{Status: command.StatusSucceeded, Payload: []byte(`{"y":2}`), Code: 200}},
			{Command: &command.Command{ID: "c2", Type: "B", Payload: []byte("raw")}, Status: batch.StatusSucceeded},
		},
	}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"id":"b1","targetId":"t1","commands":[` +
		`{"command":{"id":"c1","type":"A","payload":{"x":1}},"status":"SUCCEEDED","reply":{"status":"SUCCEEDED","payload":{"y":2},"code":200}},` +
		`{"command":{"id":"c2","type":"B","payloadBase64":"cmF3"},"status":"SUCCEEDED"}],` +
		`"status":"SUCCEEDED","maxRetry":5,"retry":0,"attempts":0,"createdAt":"2025-03-01T12:00:00Z","updatedAt":"2025-03-01T12:00:00Z"}`
	if string(data) != want {
		t.Errorf("Marshal() =\n%s\nwant\n%s", data, want)
	}
}

func TestClone(t *testing.T) {
	t.Parallel()
	b, err := batch.Prepare(batch.Batch{TargetID: "t", Commands: []batch.Command{cmd("c1", "A", `{"a":1}`)}}, t0, 5, ids())
	if err != nil {
		t.Fatal(err)
	}
	b.Commands[0].Reply = &command.Reply{Payload: []byte("r")}
	c := b.Clone()
	c.Commands[0].Command.Payload[0] = 'X'
	c.Commands[0].Reply.Payload[0] = 'X'
	c.Commands[0].Status = batch.StatusError
	*c.MaxRetry = 1
	if diff := cmp.Diff(b.Commands[0].Command.Payload, []byte(`{"a":1}`)); diff != "" || string(b.Commands[0].Reply.Payload) != "r" ||
		b.Commands[0].Status != batch.StatusPending || *b.MaxRetry != 5 {
		t.Errorf("Clone shares memory with the original")
	}
}
