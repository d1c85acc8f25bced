package management

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
)

// awkwardIDs are ids that url.PathEscape changes: a slash, percent signs
// (alone and followed by hex digits, which a second decoding would eat),
// spaces and non-ASCII letters.
var awkwardIDs = []string{"a/b", "a%2Fb", "a%252F", "100%", "%41", "with space", "déjà-vu/ü", "a+b", "?#"}

// TestPathIDsDecodedOnce sends ids through the Client (which escapes them
// with url.PathEscape) and checks that the handlers see exactly the id sent:
// decoded once, never twice.
func TestPathIDsDecodedOnce(t *testing.T) {
	fb := newFakeBatches()
	for _, id := range awkwardIDs {
		if _, err := fb.ExecuteBatch(t.Context(), batch.Batch{ID: id, TargetID: "t1", Commands: []batch.Command{{Command: &command.Command{Type: "A"}}}}); err != nil {
			t.Fatalf("ExecuteBatch(%q) = %v", id, err)
		}
	}
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), fb))
	c, err := NewClient(ts.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	for _, id := range awkwardIDs {
		b, err := c.Batch(ctx, id)
		if err != nil || b.ID != id {
			t.Errorf("Client.Batch(%q) = %q, %v; want the batch %q", id, b.ID, err, id)
		}
		if b, err := c.CancelBatch(ctx, id); err != nil || b.ID != id {
			t.Errorf("Client.CancelBatch(%q) = %q, %v; want the batch %q", id, b.ID, err, id)
		}
		// An unknown target names the id it was given.
		_, err = c.Send(ctx, "x"+id, CommandRequest{Type: "ECHO"})
		var api *APIError
		if want := "No channel available for the target [x" + id + "]"; !errors.As(err, &api) || api.Message != want {
			t.Errorf("Client.Send(%q) = %v; want a 404 %q", "x"+id, err, want)
		}
	}
}

// TestPathIDsRawHTTP sends hand-written request paths: %2F is a slash inside
// an id, %25 a percent sign, and nothing is decoded twice.
func TestPathIDsRawHTTP(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), newFakeBatches()))
	tests := []struct {
		path, want string
	}{
		{"/exchange/batchs/a%2Fb", "a/b"},
		{"/exchange/batchs/a%252F", "a%2F"},
		{"/exchange/batchs/a%25252F", "a%252F"},
		{"/exchange/batchs/a%2F%252F", "a/%2F"},
		{"/exchange/batchs/100%25", "100%"},
		{"/exchange/batchs/%41", "A"},
		{"/exchange/batchs/with%20space", "with space"},
		{"/exchange/batchs/d%C3%A9j%C3%A0", "déjà"},
		{"/exchange/batches/%25C3%25A9", "%C3%A9"},
	}
	for _, tc := range tests {
		resp, body := do(t, ts, "GET", tc.path, "", nil)
		want := `{"code":404,"message":"No batch found for the given id [` + tc.want + `]"}` + "\n"
		if resp.StatusCode != 404 || string(body) != want {
			t.Errorf("GET %s = %d %s; want 404 %s", tc.path, resp.StatusCode, body, want)
		}
	}
	// The Client writes exactly these paths.
	if got := "/exchange/batchs/" + url.PathEscape("a%2F"); got != "/exchange/batchs/a%252F" {
		t.Errorf("PathEscape = %q", got)
	}
}
