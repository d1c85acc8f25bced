package management

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/channel"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

const defaultTestTimeout = 10 * time.Second

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// base is the fixed time every fixture is built from.
var base = time.Date(2024, 7, 19, 10, 0, 0, 123_000_000, time.UTC)

// fakeExchange is a deterministic Exchange. Send answers by target id:
// t1 and t2 echo the payload; the t-* targets fail in one way each (see
// sendErrors); t-block waits for release.
type fakeExchange struct {
	channels []controller.ChannelInfo
	cluster  controller.ClusterInfo

	entered chan struct{} // t-block: signalled when Send starts
	release chan struct{} // t-block: closed to let Send answer
}

func newFakeExchange() *fakeExchange {
	return &fakeExchange{
		channels: []controller.ChannelInfo{
			{
				ID: "c2", TargetID: "t1", ConnectorID: "conn-2", NodeID: "node-2", Active: false, Primary: false,
				Epoch: 3, RegisteredAt: base.Add(time.Minute),
			},
			{
				ID: "c1", TargetID: "t1", ConnectorID: "conn-1", NodeID: "node-1", Active: true, Primary: true,
				Epoch: 3, RegisteredAt: base, Metadata: map[string]string{"zone": "eu-1"},
				Local: true, LastHealthyAt: base.Add(5 * time.Minute), InFlight: 2, RemoteAddr: "127.0.0.1:50001",
			},
			{
				ID: "c3", TargetID: "t2", ConnectorID: "conn-3", NodeID: "node-1", Active: true, Primary: true,
				Epoch: 1, RegisteredAt: base.Add(2 * time.Minute), Local: true, LastHealthyAt: base.Add(6 * time.Minute),
			},
		},
		cluster: controller.ClusterInfo{
			NodeID: "node-1", LeaderID: "node-2", State: "Follower",
			Term: 7, CommitIndex: 120, AppliedIndex: 118, LastContact: base.Add(10 * time.Minute),
			Members: []controller.MemberInfo{
				{NodeID: "node-2", Address: "10.0.0.2:7402", State: "alive", Leader: true,
					Suffrage: "voter", RaftAddress: "10.0.0.2:7401", GRPCAddress: "10.0.0.2:7400"},
				{NodeID: "node-1", Address: "10.0.0.1:7402", State: "alive",
					Suffrage: "voter", RaftAddress: "10.0.0.1:7401", GRPCAddress: "10.0.0.1:7400"},
				{NodeID: "node-3", Address: "10.0.0.3:7402", State: "dead",
					Suffrage: "voter", RaftAddress: "10.0.0.3:7401", GRPCAddress: "10.0.0.3:7400"},
				{NodeID: "node-4", Address: "10.0.0.4:7402", State: "alive",
					Suffrage: "none", GRPCAddress: "10.0.0.4:7400"},
			},
		},
		entered: make(chan struct{}, 1),
		release: make(chan struct{}),
	}
}

func (f *fakeExchange) Channels() []controller.ChannelInfo { return slices.Clone(f.channels) }

func (f *fakeExchange) Channel(id string) (controller.ChannelInfo, bool) {
	for _, c := range f.channels {
		if c.ID == id {
			return c, true
		}
	}
	return controller.ChannelInfo{}, false
}

func (f *fakeExchange) Targets() []controller.TargetInfo {
	var out []controller.TargetInfo
	for _, id := range []string{"t2", "t1", "t-empty"} {
		t, _ := f.Target(id)
		out = append(out, t)
	}
	return out
}

func (f *fakeExchange) Target(id string) (controller.TargetInfo, bool) {
	t := controller.TargetInfo{ID: id}
	for _, c := range f.channels {
		if c.TargetID == id {
			t.Channels = append(t.Channels, c)
			if c.Primary {
				t.PrimaryID, t.Epoch = c.ID, c.Epoch
			}
		}
	}
	return t, len(t.Channels) > 0 || id == "t-empty"
}

var sendErrors = map[string]error{
	"t-timeout": fmt.Errorf("controller: send: %w", context.DeadlineExceeded),
	"t-remote": &channel.RemoteError{CommandID: "cmd-1", Type: "ECHO", Message: "handler panicked: boom",
		Reply: &command.Reply{CommandID: "cmd-1", Type: command.TypeNoReply, Status: command.StatusError}},
	"t-unknown": fmt.Errorf("controller: send: %w", &channel.UnknownCommandError{CommandID: "cmd-1", Type: "ECHO", Message: "no handler for ECHO"}),
	"t-busy":    fmt.Errorf("controller: send: %w", &channel.BusyError{RetryAfter: 1500 * time.Millisecond, Remote: true}),
	"t-closed":  fmt.Errorf("controller: send: %w", channel.ErrClosed),
	"t-large":   fmt.Errorf("controller: send: %w: 5000000 bytes > 4194304", channel.ErrFrameTooLarge),
	"t-broken":  fmt.Errorf("controller: forward to node-3: %w", os.ErrPermission),
}

func (f *fakeExchange) SendVia(ctx context.Context, targetID string, cmd *command.Command, _ bool) (*command.Reply, controller.Route, error) {
	r, err := f.send(ctx, targetID, cmd)
	return r, controller.Route{}, err
}

func (f *fakeExchange) send(ctx context.Context, targetID string, cmd *command.Command) (*command.Reply, error) {
	if err, ok := sendErrors[targetID]; ok {
		return nil, err
	}
	switch targetID {
	case "t1", "t2":
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded, Payload: cmd.Payload, Code: 200}, nil
	case "t-error-reply":
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusError, Error: "unsupported operation", Code: 400}, nil
	case "t-binary":
		return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded, Payload: []byte("plain text")}, nil
	case "t-block":
		f.entered <- struct{}{}
		select {
		case <-f.release:
			return &command.Reply{CommandID: cmd.ID, Type: cmd.Type, Status: command.StatusSucceeded}, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("fake: %w", context.Cause(ctx))
		}
	}
	return nil, fmt.Errorf("controller: send: %w", &controller.NoChannelError{TargetID: targetID})
}

func (f *fakeExchange) Cluster() controller.ClusterInfo { return f.cluster }

// emptyExchange has no channels at all.
type emptyExchange struct{ fakeExchange }

func (emptyExchange) Channels() []controller.ChannelInfo { return nil }
func (emptyExchange) Channel(string) (controller.ChannelInfo, bool) {
	return controller.ChannelInfo{}, false
}
func (emptyExchange) Targets() []controller.TargetInfo { return nil }
func (emptyExchange) Target(string) (controller.TargetInfo, bool) {
	return controller.TargetInfo{}, false
}

// fakeBatches is a deterministic Batches over a map, using batch.Prepare for
// validation like the real runner.
type fakeBatches struct {
	mu      sync.Mutex // protects batches
	batches map[string]batch.Batch
}

func newFakeBatches() *fakeBatches {
	one := 1
	five := 5
	f := &fakeBatches{batches: map[string]batch.Batch{}}
	f.batches["b1"] = batch.Batch{
		ID: "b1", Key: "deploy-42", TargetID: "t1", Status: batch.StatusSucceeded, MaxRetry: &five, Retry: 0, Attempts: 1,
		LastRetryAt: base.Add(30 * time.Second), CreatedAt: base.Add(29 * time.Second), UpdatedAt: base.Add(31 * time.Second),
		Commands: []batch.Command{{
			Command: &command.Command{ID: "b1-c1", Type: "DEPLOY", Payload: []byte(`{"api":"orders","revision":7}`)},
			Status:  batch.StatusSucceeded,
			Reply:   &command.Reply{Status: command.StatusSucceeded, Payload: []byte(`{"deployed":true}`), Code: 200},
		}},
	}
	f.batches["b2"] = batch.Batch{
		ID: "b2", TargetID: "t1", Status: batch.StatusPending, MaxRetry: &five, Retry: 1, Attempts: 2,
		Error: "No channel available for the target [t1]", LastRetryAt: base.Add(40 * time.Second),
		NextAttemptAt: base.Add(42 * time.Second), CreatedAt: base.Add(39 * time.Second), UpdatedAt: base.Add(41 * time.Second),
		Commands: []batch.Command{
			{Command: &command.Command{ID: "b2-c1", Type: "UNDEPLOY"}, Status: batch.StatusError, Error: "No channel available for the target [t1]"},
			{Command: &command.Command{ID: "b2-c2", Type: "DEPLOY", Payload: []byte("not json")}, Status: batch.StatusPending},
		},
	}
	f.batches["b3"] = batch.Batch{
		ID: "b3", Key: "orphan", TargetID: "t-orphan", Status: batch.StatusError, MaxRetry: &one, Retry: 1, Attempts: 2,
		Error: "unsupported", LastRetryAt: base.Add(50 * time.Second), CreatedAt: base.Add(45 * time.Second), UpdatedAt: base.Add(51 * time.Second),
		Commands: []batch.Command{{
			Command: &command.Command{ID: "b3-c1", Type: "PURGE"}, Status: batch.StatusError, Error: "unsupported",
			Reply: &command.Reply{Status: command.StatusError, Error: "unsupported", Code: 501},
		}},
	}
	return f
}

func (f *fakeBatches) ExecuteBatch(_ context.Context, b batch.Batch) (batch.Batch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	p, err := batch.Prepare(b, base.Add(time.Hour), batch.DefaultMaxRetry, func() string { n++; return fmt.Sprintf("gen-%d", n) })
	if err != nil {
		return batch.Batch{}, err
	}
	if _, dup := f.batches[p.ID]; dup {
		return batch.Batch{}, fmt.Errorf("fake: create %s: %w", p.ID, batch.ErrExists)
	}
	f.batches[p.ID] = p
	return p, nil
}

func (f *fakeBatches) GetBatch(id string) (batch.Batch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.batches[id]
	if !ok {
		return batch.Batch{}, fmt.Errorf("fake: get %s: %w", id, batch.ErrNotFound)
	}
	return b, nil
}

func (f *fakeBatches) DeleteBatch(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.batches[id]; !ok {
		return fmt.Errorf("fake: delete %s: %w", id, batch.ErrNotFound)
	}
	delete(f.batches, id)
	return nil
}

func (f *fakeBatches) ListBatches(flt batch.Filter) []batch.Batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []batch.Batch
	for _, b := range f.batches {
		if (flt.Status == 0 || b.Status == flt.Status) && (flt.TargetID == "" || b.TargetID == flt.TargetID) &&
			(flt.Key == "" || b.Key == flt.Key) {
			out = append(out, b)
		}
	}
	return out
}

// testRegistry has one fixed metric, so /metrics is deterministic.
func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_requests_total", Help: "A fixed counter."})
	c.Add(3)
	reg.MustRegister(c)
	return reg
}

// newServer builds a Server over the fakes (batches may be nil).
func newServer(t *testing.T, cfg Config, ex Exchange, batches Batches) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg, ex, batches, testRegistry())
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return s
}

// serveHTTP serves s.Handler() on a real loopback HTTP server, closed at the
// end of the test.
func serveHTTP(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// testLogger sends logs to t.Log, and nowhere once the test is over.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// checkGolden compares got with testdata/name.golden, or rewrites the file
// with -update.
// The server writes compact JSON; golden files hold it indented, for people
// to read: a body must be compact, and equal the golden file once indented.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if json.Valid(got) {
		var compact, pretty bytes.Buffer
		if err := json.Compact(&compact, got); err != nil || compact.Len()+1 != len(got) {
			t.Errorf("%s: the body is not compact JSON:\n%s", name, got)
		}
		if err := json.Indent(&pretty, got, "", "  "); err != nil {
			t.Fatalf("indent body: %v", err)
		}
		got = pretty.Bytes()
	}
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("write golden: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// do sends one request to ts and returns the response and its body.
func do(t *testing.T, ts *httptest.Server, method, path, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	return doURL(t, ts.URL, method, path, body, header)
}

// doURL sends one request to baseURL+path on a connection of its own (no
// keep-alive, so no idle connection outlives it) and returns the response
// and its body.
func doURL(t *testing.T, baseURL, method, path, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL+path, r)
	if err != nil {
		t.Fatalf("NewRequest(%s %s) = %v", method, path, err)
	}
	maps.Copy(req.Header, header)
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// checkErrorBody checks that body is {"code": code, "message": "..."}.
func checkErrorBody(t *testing.T, body []byte, code int) {
	t.Helper()
	var eb struct {
		Code    *int    `json:"code"`
		Message *string `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if eb.Code == nil || *eb.Code != code || eb.Message == nil || *eb.Message == "" {
		t.Errorf("error body = %s, want code %d and a message", body, code)
	}
}
