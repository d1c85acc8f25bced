package management

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// routingExchange is fakeExchange whose SendVia routes like the controller:
// to the target's primary with primaryOnly, else to c2 (not the primary),
// and records primaryOnly.
type routingExchange struct {
	*fakeExchange
	primaryOnly chan bool
}

func (r routingExchange) SendVia(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, controller.Route, error) {
	r.primaryOnly <- primaryOnly
	reply, _, err := r.fakeExchange.SendVia(ctx, targetID, cmd, primaryOnly)
	if primaryOnly {
		return reply, controller.Route{ChannelID: "c1", NodeID: "node-1"}, err
	}
	return reply, controller.Route{ChannelID: "c2", NodeID: "node-2"}, err
}

// TestSendCommandPrimary checks that "primary": true reaches SendVia, and
// that the reply names the channel, connector and node that answered.
func TestSendCommandPrimary(t *testing.T) {
	ex := routingExchange{newFakeExchange(), make(chan bool, 1)}
	ts := serveHTTP(t, newServer(t, Config{}, ex, newFakeBatches()))
	for _, tc := range []struct {
		body                       string
		wantPrimary                bool
		wantChannel, wantConnector string
		wantNode                   string
	}{
		{`{"type":"ECHO","primary":true}`, true, "c1", "conn-1", "node-1"},
		{`{"type":"ECHO"}`, false, "c2", "conn-2", "node-2"},
	} {
		resp, body := do(t, ts, http.MethodPost, "/exchange/targets/t1/commands", tc.body, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.body, resp.StatusCode, body)
		}
		if got := <-ex.primaryOnly; got != tc.wantPrimary {
			t.Errorf("%s: SendVia primaryOnly = %t, want %t", tc.body, got, tc.wantPrimary)
		}
		var r Reply
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if r.ChannelID != tc.wantChannel || r.ConnectorID != tc.wantConnector || r.NodeID != tc.wantNode {
			t.Errorf("%s: reply from channel %q connector %q node %q, want %q %q %q", tc.body,
				r.ChannelID, r.ConnectorID, r.NodeID, tc.wantChannel, tc.wantConnector, tc.wantNode)
		}
	}
}

// TestListTargetsAll checks that ?all=true also lists the targets that only
// have batches (t-orphan), and that without it they are left out.
func TestListTargetsAll(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), newFakeBatches()))
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"t1", "t2"}},
		{"?all=false", []string{"t1", "t2"}},
		{"?all=TRUE", []string{"t-orphan", "t1", "t2"}},
	} {
		resp, body := do(t, ts, http.MethodGet, "/exchange/targets"+tc.query, "", nil)
		var got []Target
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("GET /exchange/targets%s: %d %s", tc.query, resp.StatusCode, body)
		}
		var ids []string
		for _, tg := range got {
			ids = append(ids, tg.ID)
			if tg.Channels == nil {
				t.Errorf("%s: target %s has channels null, want []", tc.query, tg.ID)
			}
		}
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("GET /exchange/targets%s = %v, want %v", tc.query, ids, tc.want)
		}
	}
	if resp, body := do(t, ts, http.MethodGet, "/exchange/targets?all=maybe", "", nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("?all=maybe: %d %s, want 400", resp.StatusCode, body)
	}
}
