package management

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func newTestClient(t *testing.T, baseURL, token string) *Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := NewClient(baseURL, token, &http.Client{Transport: tr})
	if err != nil {
		t.Fatalf("NewClient(%q) = %v", baseURL, err)
	}
	return c
}

func TestClient(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{Tokens: []string{"tok"}}, newFakeExchange(), newFakeBatches()))
	c := newTestClient(t, ts.URL, "tok")
	ctx := t.Context()

	targets, err := c.Targets(ctx)
	if err != nil {
		t.Fatalf("Targets() = %v", err)
	}
	if got := []string{targets[0].ID, targets[1].ID}; len(targets) != 2 || !cmp.Equal(got, []string{"t1", "t2"}) {
		t.Errorf("Targets() ids = %v, want [t1 t2]", got)
	}
	detail, err := c.Target(ctx, "t1")
	if err != nil || len(detail.Channels) != 2 || len(detail.Batchs) != 2 {
		t.Errorf("Target(t1) = %d channels, %d batchs, %v; want 2, 2, nil", len(detail.Channels), len(detail.Batchs), err)
	}
	active := true
	chans, err := c.Channels(ctx, ChannelQuery{TargetID: "t1", Active: &active})
	if err != nil || len(chans) != 1 || chans[0].ID != "c1" {
		t.Errorf("Channels(t1, active) = %+v, %v; want [c1]", chans, err)
	}
	ch, err := c.Channel(ctx, "c1")
	if err != nil || ch.LastHealthyAt == nil || !ch.LastHealthyAt.Equal(base.Add(5*time.Minute)) || ch.Metadata["zone"] != "eu-1" {
		t.Errorf("Channel(c1) = %+v, %v", ch, err)
	}
	batches, err := c.Batches(ctx, BatchQuery{Status: "error"})
	if err != nil || len(batches) != 1 || batches[0].ID != "b3" {
		t.Errorf("Batches(status=error) = %+v, %v; want [b3]", batches, err)
	}
	b, err := c.Batch(ctx, "b2")
	if err != nil || b.Status != "PENDING" || b.NextAttemptAt == nil || b.Key != nil {
		t.Errorf("Batch(b2) = %+v, %v", b, err)
	}
	created, err := c.CreateBatch(ctx, BatchRequest{ID: "b9", TargetID: "t1", Commands: []BatchCommandRequest{{Type: "GO"}}})
	if err != nil || created.ID != "b9" || created.Status != "CREATED" {
		t.Errorf("CreateBatch() = %+v, %v", created, err)
	}
	reply, err := c.Send(ctx, "t1", CommandRequest{Type: "ECHO", Payload: json.RawMessage(`{"a":1}`)})
	var compact bytes.Buffer
	_ = json.Compact(&compact, reply.Payload)
	if err != nil || reply.Status != "SUCCEEDED" || compact.String() != `{"a":1}` || reply.CommandID == "" {
		t.Errorf("Send() = %+v, %v", reply, err)
	}
	cl, err := c.Cluster(ctx)
	if err != nil || cl.LeaderID != "node-2" || len(cl.Members) != 4 || cl.Term != 7 || cl.Members[1].RaftAddress != "10.0.0.2:7401" {
		t.Errorf("Cluster() = %+v, %v", cl, err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready() = %v", err)
	}
}

func TestClientEscapesIDs(t *testing.T) {
	ex := newFakeExchange()
	ex.channels[0].ID = "a/b c?d"
	ts := serveHTTP(t, newServer(t, Config{}, ex, nil))
	c := newTestClient(t, ts.URL, "")
	ch, err := c.Channel(t.Context(), "a/b c?d")
	if err != nil || ch.ID != "a/b c?d" {
		t.Errorf("Channel(%q) = %+v, %v", "a/b c?d", ch, err)
	}
}

func TestClientErrors(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{Tokens: []string{"tok"}}, newFakeExchange(), newFakeBatches()))
	c := newTestClient(t, ts.URL, "tok")
	ctx := t.Context()
	tests := []struct {
		name       string
		call       func() error
		status     int
		message    string
		retryAfter time.Duration
	}{
		{"no channel", func() error { _, err := c.Send(ctx, "t-none", CommandRequest{Type: "X"}); return err },
			404, "No channel available for the target [t-none]", 0},
		{"busy", func() error { _, err := c.Send(ctx, "t-busy", CommandRequest{ID: "cmd-1", Type: "X"}); return err },
			503, "The channel is busy", 2 * time.Second},
		{"timeout", func() error { _, err := c.Send(ctx, "t-timeout", CommandRequest{Type: "X"}); return err },
			504, "No reply received in time", 0},
		{"bad status", func() error { _, err := c.Batches(ctx, BatchQuery{Status: "nope"}); return err },
			400, "invalid query parameter status", 0},
		{"unauthorized", func() error { _, err := newTestClient(t, ts.URL, "wrong").Targets(ctx); return err },
			401, "missing or invalid bearer token", 0},
	}
	for _, tc := range tests {
		err := tc.call()
		var ae *APIError
		if !errors.As(err, &ae) {
			t.Errorf("%s: err = %v, want *APIError", tc.name, err)
			continue
		}
		if ae.StatusCode != tc.status || !strings.HasPrefix(ae.Message, tc.message) || ae.RetryAfter != tc.retryAfter {
			t.Errorf("%s: err = %+v, want status %d, message %q…, retry after %v", tc.name, ae, tc.status, tc.message, tc.retryAfter)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + lis.Addr().String()
	lis.Close() // nothing listens there any more: connection refused
	c := newTestClient(t, addr, "")
	_, err = c.Targets(t.Context())
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("Targets() = %v, want *UnreachableError", err)
	}
	if want := "cannot reach the controller at " + addr + ": connection refused"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestNewClientAddresses(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"http://127.0.0.1:7480":   "http://127.0.0.1:7480",
		"http://127.0.0.1:7480/":  "http://127.0.0.1:7480",
		"127.0.0.1:7480":          "http://127.0.0.1:7480",
		"https://ctl.example:443": "https://ctl.example:443",
	} {
		c, err := NewClient(addr, "", nil)
		if err != nil || c.Addr() != want {
			t.Errorf("NewClient(%q).Addr() = %v, %v; want %q", addr, c, err, want)
		}
	}
	for _, addr := range []string{"ftp://x:1", "http://", "::bad"} {
		if _, err := NewClient(addr, "", nil); err == nil {
			t.Errorf("NewClient(%q) = nil error, want one", addr)
		}
	}
}
