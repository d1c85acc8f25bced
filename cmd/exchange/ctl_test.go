package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/management"
)

const ctlTestTimeout = 10 * time.Second

var ctlBase = time.Date(2024, 7, 19, 10, 0, 0, 0, time.UTC)

// ctlExchange is a fixed management.Exchange: target t1 has two channels,
// t2 one; Send echoes on t1 and fails in one way per other target.
type ctlExchange struct{}

func (ctlExchange) Channels() []controller.ChannelInfo {
	return []controller.ChannelInfo{
		{ID: "c1", TargetID: "t1", ConnectorID: "conn-1", NodeID: "node-1", Active: true, Primary: true, Epoch: 2, RegisteredAt: ctlBase, InFlight: 1},
		{ID: "c2", TargetID: "t1", ConnectorID: "conn-2", NodeID: "node-2", Active: false, Epoch: 2, RegisteredAt: ctlBase.Add(time.Minute)},
		{ID: "c3", TargetID: "t2", ConnectorID: "conn-3", NodeID: "node-1", Active: true, Primary: true, Epoch: 1, RegisteredAt: ctlBase.Add(2 * time.Minute)},
	}
}

func (e ctlExchange) Channel(id string) (controller.ChannelInfo, bool) {
	for _, c := range e.Channels() {
		if c.ID == id {
			return c, true
		}
	}
	return controller.ChannelInfo{}, false
}

func (e ctlExchange) Targets() []controller.TargetInfo {
	t1, _ := e.Target("t1")
	t2, _ := e.Target("t2")
	return []controller.TargetInfo{t1, t2}
}

func (e ctlExchange) Target(id string) (controller.TargetInfo, bool) {
	t := controller.TargetInfo{ID: id}
	for _, c := range e.Channels() {
		if c.TargetID == id {
			t.Channels = append(t.Channels, c)
		}
	}
	return t, len(t.Channels) > 0
}

// SendVia routes like the controller: to the primary with primaryOnly, else
// to the first active channel of the target.
func (e ctlExchange) SendVia(ctx context.Context, target string, cmd *command.Command, primaryOnly bool) (*command.Reply, controller.Route, error) {
	var rt controller.Route
	for _, ch := range e.Channels() {
		if ch.TargetID == target && ch.Active && (ch.Primary || !primaryOnly) {
			rt = controller.Route{ChannelID: ch.ID, NodeID: ch.NodeID}
			break
		}
	}
	if rt.ChannelID == "" && primaryOnly {
		return nil, rt, &controller.NoChannelError{TargetID: target, Primary: true}
	}
	r, err := e.send(ctx, target, cmd)
	return r, rt, err
}

func (ctlExchange) send(_ context.Context, target string, cmd *command.Command) (*command.Reply, error) {
	switch target {
	case "t1", "t2":
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded, Payload: cmd.Payload, Code: 200}, nil
	case "t-refuse":
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusError, Error: "not allowed", Code: 403}, nil
	case "t-timeout":
		return nil, fmt.Errorf("send: %w", context.DeadlineExceeded)
	case "t-remote":
		return nil, &channel.RemoteError{CommandID: cmd.ID, Type: cmd.Type, Message: "boom"}
	case "t-busy":
		return nil, &channel.BusyError{RetryAfter: time.Second, Remote: true}
	}
	return nil, &controller.NoChannelError{TargetID: target}
}

func (ctlExchange) Cluster() controller.ClusterInfo {
	return controller.ClusterInfo{NodeID: "node-1", LeaderID: "node-1", State: "Leader", Term: 4, CommitIndex: 30, AppliedIndex: 29,
		Members: []controller.MemberInfo{
			{NodeID: "node-1", Address: "10.0.0.1:7402", State: "alive", Leader: true, Suffrage: "voter", RaftAddress: "10.0.0.1:7401", GRPCAddress: "10.0.0.1:7400"},
			{NodeID: "node-2", Address: "10.0.0.2:7402", State: "alive", Suffrage: "voter", RaftAddress: "10.0.0.2:7401", GRPCAddress: "10.0.0.2:7400"},
			{NodeID: "node-3", State: "unknown", Suffrage: "nonvoter", RaftAddress: "10.0.0.3:7401"},
		}}
}

// ctlBatches is a fixed management.Batches with two batches of t1 and one of
// t3, which has no channel.
type ctlBatches struct{}

func (ctlBatches) all() []batch.Batch {
	five := 5
	return []batch.Batch{
		{ID: "b1", Key: "k1", TargetID: "t1", Status: batch.StatusSucceeded, MaxRetry: &five, CreatedAt: ctlBase,
			Commands: []batch.Command{{Command: &command.Command{ID: "x", Type: "A"}, Status: batch.StatusSucceeded}}},
		{ID: "b2", TargetID: "t1", Status: batch.StatusPending, MaxRetry: &five, Retry: 2, Error: "no channel",
			NextAttemptAt: ctlBase.Add(time.Hour), CreatedAt: ctlBase.Add(time.Minute),
			Commands: []batch.Command{
				{Command: &command.Command{ID: "y", Type: "A"}, Status: batch.StatusSucceeded},
				{Command: &command.Command{ID: "z", Type: "B"}, Status: batch.StatusError},
			}},
		// t3 has a batch but no channel.
		{ID: "b3", TargetID: "t3", Status: batch.StatusError, MaxRetry: &five, Retry: 5, Error: "no channel", CreatedAt: ctlBase.Add(2 * time.Minute),
			Commands: []batch.Command{{Command: &command.Command{ID: "w", Type: "A"}, Status: batch.StatusError}}},
	}
}

func (ctlBatches) ExecuteBatch(context.Context, batch.Batch) (batch.Batch, error) {
	return batch.Batch{}, batch.ErrExists
}

func (b ctlBatches) GetBatch(id string) (batch.Batch, error) {
	for _, x := range b.all() {
		if x.ID == id {
			return x, nil
		}
	}
	return batch.Batch{}, batch.ErrNotFound
}

// DeleteBatch "deletes" b2 only, and anything else is not found; the
// fixture does not change.
func (ctlBatches) DeleteBatch(_ context.Context, id string) error {
	if id != "b2" {
		return fmt.Errorf("delete %s: %w", id, batch.ErrNotFound)
	}
	return nil
}

func (b ctlBatches) ListBatches(f batch.Filter) []batch.Batch {
	var out []batch.Batch
	for _, x := range b.all() {
		if (f.Status == 0 || x.Status == f.Status) && (f.TargetID == "" || x.TargetID == f.TargetID) {
			out = append(out, x)
		}
	}
	return out
}

// ctlServer serves the management API over the fakes on a real HTTP server.
func ctlServer(t *testing.T, tokens ...string) string {
	t.Helper()
	s, err := management.New(management.Config{Tokens: tokens}, ctlExchange{}, ctlBatches{}, nil)
	if err != nil {
		t.Fatalf("management.New() = %v", err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// runCtl runs "exchange ctl args..." and returns its exit code and outputs.
func runCtl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ctlTestTimeout)
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, append([]string{"ctl"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCtlTables(t *testing.T) {
	addr := ctlServer(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"targets", []string{"targets"}, `
TARGET  CHANNELS  ACTIVE  PRIMARY  PRIMARY-CHANNEL  EPOCH  BATCHES
t1      2         1       conn-1   c1               2      2
t2      1         1       conn-3   c3               1      0
t3      0         0       -        -                -      1
`},
		{"channels", []string{"channels"}, `
CHANNEL  TARGET  CONNECTOR  NODE    ACTIVE  PRIMARY  EPOCH  IN-FLIGHT  REGISTERED
c1       t1      conn-1     node-1  true    true     2      1          2024-07-19T10:00:00Z
c2       t1      conn-2     node-2  false   false    2      0          2024-07-19T10:01:00Z
c3       t2      conn-3     node-1  true    true     1      0          2024-07-19T10:02:00Z
`},
		{"channels of a target", []string{"channels", "--target", "t2"}, `
CHANNEL  TARGET  CONNECTOR  NODE    ACTIVE  PRIMARY  EPOCH  IN-FLIGHT  REGISTERED
c3       t2      conn-3     node-1  true    true     1      0          2024-07-19T10:02:00Z
`},
		{"batches", []string{"batches", "--target", "t1"}, `
BATCH  KEY  TARGET  STATUS     RETRY  DONE  NEXT-ATTEMPT          ERROR
b1     k1   t1      SUCCEEDED  0/5    1/1   -                     -
b2     -    t1      PENDING    2/5    1/2   2024-07-19T11:00:00Z  no channel
`},
		{"batches by status, any case", []string{"batches", "--status", "pending"}, `
BATCH  KEY  TARGET  STATUS   RETRY  DONE  NEXT-ATTEMPT          ERROR
b2     -    t1      PENDING  2/5    1/2   2024-07-19T11:00:00Z  no channel
`},
		{"batches, none", []string{"batches", "--target", "t2"}, `
BATCH  KEY  TARGET  STATUS  RETRY  DONE  NEXT-ATTEMPT  ERROR
`},
		{"batch get", []string{"batches", "get", "b2"}, `
BATCH         b2
KEY           -
TARGET        t1
STATUS        PENDING
RETRY         2/5
NEXT-ATTEMPT  2024-07-19T11:00:00Z
CREATED       2024-07-19T10:01:00Z
ERROR         no channel

COMMAND  TYPE  STATUS     ERROR
y        A     SUCCEEDED  -
z        B     ERROR      -
`},
		{"batch cancel", []string{"batches", "cancel", "b2"}, `
cancelled batch b2 (it was PENDING)

BATCH         b2
KEY           -
TARGET        t1
STATUS        PENDING
RETRY         2/5
NEXT-ATTEMPT  2024-07-19T11:00:00Z
CREATED       2024-07-19T10:01:00Z
ERROR         no channel

COMMAND  TYPE  STATUS     ERROR
y        A     SUCCEEDED  -
z        B     ERROR      -
`},
		{"send", []string{"send", "--target", "t1", "--type", "ECHO", "--payload", `{"text": "hi"}`}, `
STATUS     SUCCEEDED
COMMAND    <id>
CHANNEL    c1
CONNECTOR  conn-1
NODE       node-1
CODE       200
PAYLOAD    {"text":"hi"}
`},
		{"send to the primary", []string{"send", "--primary", "--target", "t2", "--type", "ECHO", "--payload", `"p"`}, `
STATUS     SUCCEEDED
COMMAND    <id>
CHANNEL    c3
CONNECTOR  conn-3
NODE       node-1
CODE       200
PAYLOAD    "p"
`},
		{"cluster", []string{"cluster"}, `
node node-1 (Leader), leader node-1
term 4, commit index 30, applied index 29

NODE    GOSSIP         STATE    SUFFRAGE  RAFT           GRPC           LEADER
node-1  10.0.0.1:7402  alive    voter     10.0.0.1:7401  10.0.0.1:7400  yes
node-2  10.0.0.2:7402  alive    voter     10.0.0.2:7401  10.0.0.2:7400  no
node-3  -              unknown  nonvoter  10.0.0.3:7401  -              no
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCtl(t, append([]string{"--addr", addr}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit code = %d, want 0; stderr: %s", code, errOut)
			}
			if strings.Contains(tc.want, "<id>") { // the command id is a fresh UUID
				lines := strings.Split(out, "\n")
				for i, l := range lines {
					if strings.HasPrefix(l, "COMMAND    ") && len(l) == len("COMMAND    ")+36 {
						lines[i] = "COMMAND    <id>"
					}
				}
				out = strings.Join(lines, "\n")
			}
			if want := strings.TrimPrefix(tc.want, "\n"); out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

func TestCtlJSON(t *testing.T) {
	addr := ctlServer(t)
	code, out, errOut := runCtl(t, "--addr", addr, "-o", "json", "channels", "--target", "t1")
	if code != 0 {
		t.Fatalf("exit code = %d, want 0; stderr: %s", code, errOut)
	}
	var chs []management.Channel
	if err := json.Unmarshal([]byte(out), &chs); err != nil {
		t.Fatalf("output is not a JSON list of channels: %v\n%s", err, out)
	}
	if len(chs) != 2 || chs[0].ID != "c1" || chs[1].ID != "c2" || !chs[0].Primary {
		t.Errorf("channels = %+v, want c1 (primary) and c2", chs)
	}

	code, out, errOut = runCtl(t, "--addr", addr, "--output", "json", "send", "--target", "t1", "--type", "ECHO", "--payload", `[1,2]`)
	if code != 0 {
		t.Fatalf("send: exit code = %d, want 0; stderr: %s", code, errOut)
	}
	var r management.Reply
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Status != "SUCCEEDED" || r.Code == nil || *r.Code != 200 {
		t.Errorf("send reply = %+v, %v\n%s", r, err, out)
	}
	code, out, errOut = runCtl(t, "--addr", addr, "-o", "json", "batches", "cancel", "b2")
	var b management.Batch
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.ID != "b2" || b.Status != "PENDING" {
		t.Errorf("batches cancel -o json: exit code %d, batch %+v; stderr %s\n%s", code, b, errOut, out)
	}
	for _, sub := range [][]string{{"targets"}, {"batches"}, {"batches", "get", "b1"}, {"cluster"}} {
		code, out, errOut := runCtl(t, append([]string{"--addr", addr, "-o", "json"}, sub...)...)
		if code != 0 || !json.Valid([]byte(out)) {
			t.Errorf("%v: exit code %d, valid JSON %v; stderr %s", sub, code, json.Valid([]byte(out)), errOut)
		}
	}
}

func TestCtlFailures(t *testing.T) {
	addr := ctlServer(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no channel", []string{"send", "--target", "t9", "--type", "ECHO"}, 5, "exchange: target t9 has no channel\n"},
		{"no primary", []string{"send", "--primary", "--target", "t-refuse", "--type", "ECHO"}, 5, "exchange: target t-refuse has no primary channel\n"},
		{"error reply", []string{"send", "--target", "t-refuse", "--type", "ECHO"}, 6, "exchange: the connector answered ERROR: not allowed\n"},
		{"timeout", []string{"send", "--target", "t-timeout", "--type", "ECHO", "--timeout", "2s"}, 6, "exchange: No reply received in time"},
		{"remote error", []string{"send", "--target", "t-remote", "--type", "ECHO"}, 6, "exchange: The connector failed to handle"},
		{"busy", []string{"send", "--target", "t-busy", "--type", "ECHO"}, 6, "(retry after 1s)"},
		{"invalid status", []string{"batches", "--status", "DONE"}, 2, "exchange: invalid request: invalid query parameter status: [DONE] is not one of"},
		{"no subcommand", nil, 2, "exchange: ctl needs a command"},
		{"get unknown batch", []string{"batches", "get", "b9"}, 5, "exchange: no batch b9\n"},
		{"cancel unknown batch", []string{"batches", "cancel", "b9"}, 5, "exchange: no batch b9\n"},
		{"cancel without id", []string{"batches", "cancel"}, 2, "a batch id is required"},
		{"get with two ids", []string{"batches", "get", "b1", "b2"}, 2, `unexpected argument "b2"`},
		{"unknown subcommand", []string{"frobnicate"}, 2, `exchange: unknown ctl command "frobnicate"`},
		{"bad output", []string{"-o", "yaml", "targets"}, 2, `exchange: -o "yaml": want table or json`},
		{"unknown flag", []string{"targets", "--bogus"}, 2, "unknown flag: --bogus"},
		{"extra argument", []string{"targets", "t1"}, 2, `unexpected argument "t1"`},
		{"send without type", []string{"send", "--target", "t1"}, 2, "send needs --target and --type"},
		{"send with bad payload", []string{"send", "--target", "t1", "--type", "ECHO", "--payload", "{nope"}, 2, "--payload is not valid JSON"},
		{"send with zero timeout", []string{"send", "--target", "t1", "--type", "ECHO", "--timeout", "0s"}, 2, "must be positive"},
		{"send with too long a timeout", []string{"send", "--target", "t1", "--type", "ECHO", "--timeout", "5m"}, 2, "timeoutMs: must be at most 60000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCtl(t, append([]string{"--addr", addr}, tc.args...)...)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d; stderr: %s", code, tc.wantCode, errOut)
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tc.wantErr)
			}
			if tc.name == "error reply" && !strings.Contains(out, "STATUS   ERROR") {
				t.Errorf("stdout = %q, want the ERROR reply printed", out)
			}
		})
	}
}

func TestCtlUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + lis.Addr().String()
	lis.Close() // nothing listens there any more
	code, _, errOut := runCtl(t, "--addr", addr, "targets")
	if code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
	if want := "exchange: cannot reach the controller at " + addr + ": connection refused\n"; errOut != want {
		t.Errorf("stderr = %q, want %q", errOut, want)
	}
}

func TestCtlToken(t *testing.T) {
	addr := ctlServer(t, "s3cret")
	code, _, errOut := runCtl(t, "--addr", addr, "targets")
	if code != 4 || errOut != "exchange: unauthorized: check --token\n" {
		t.Errorf("no token: exit code %d, stderr %q; want 4, unauthorized", code, errOut)
	}
	code, _, errOut = runCtl(t, "--addr", addr, "--token", "wrong", "cluster")
	if code != 4 || errOut != "exchange: unauthorized: check --token\n" {
		t.Errorf("wrong token: exit code %d, stderr %q; want 4, unauthorized", code, errOut)
	}
	if code, _, errOut = runCtl(t, "--addr", addr, "--token", "s3cret", "targets"); code != 0 {
		t.Errorf("right token: exit code %d, stderr %q; want 0", code, errOut)
	}
	// ctl's --token is the management token: EXCHANGE_MANAGEMENT_TOKEN, the
	// controller's --management-token; EXCHANGE_TOKEN (connector tokens) is not it.
	t.Setenv("EXCHANGE_TOKEN", "s3cret")
	t.Setenv("EXCHANGE_ADDR", addr)
	if code, _, _ = runCtl(t, "targets"); code != 4 {
		t.Errorf("EXCHANGE_TOKEN only: exit code %d; want 4 (it is not the management token)", code)
	}
	t.Setenv("EXCHANGE_MANAGEMENT_TOKEN", "s3cret")
	if code, _, errOut = runCtl(t, "targets"); code != 0 {
		t.Errorf("EXCHANGE_MANAGEMENT_TOKEN and EXCHANGE_ADDR: exit code %d, stderr %q; want 0", code, errOut)
	}
}
