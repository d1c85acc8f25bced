package management

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// fakeSource is an EventSource the test drives: emit calls the subscribers
// as a store does, under its lock.
type fakeSource struct {
	mu   sync.Mutex // protects subs and next; held while subscribers run
	subs map[int]func([]state.Event)
	next int
}

func newFakeSource() *fakeSource { return &fakeSource{subs: map[int]func([]state.Event){}} }

func (f *fakeSource) Subscribe(fn func([]state.Event)) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	f.subs[id] = fn
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, id)
	}
}

func (f *fakeSource) emit(evs ...state.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fn := range f.subs {
		fn(evs)
	}
}

func (f *fakeSource) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// follow runs Client.Events on a goroutine and returns once the stream is
// open; events arrive on the returned channel, the end of the stream on
// done. stop cancels it.
func follow(t *testing.T, addr, token string) (events <-chan Event, done <-chan error, stop func()) {
	t.Helper()
	cl, err := NewClient(addr, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	evc := make(chan Event, 4096)
	errc := make(chan error, 1)
	finished := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(finished)
		errc <- cl.Events(ctx, func() { close(ready) }, func(e Event) error {
			evc <- e
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("Events() = %v before the stream opened", err)
	case <-time.After(defaultTestTimeout):
		cancel()
		t.Fatal("the event stream did not open")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-finished:
			case <-time.After(defaultTestTimeout):
				t.Error("Events() did not return after its context was canceled")
			}
		})
	}
	t.Cleanup(stop)
	return evc, errc, stop
}

// next returns the next n events, or fails after a bounded wait.
func next(t *testing.T, evc <-chan Event, n int) []Event {
	t.Helper()
	var out []Event
	timeout := time.After(defaultTestTimeout)
	for len(out) < n {
		select {
		case e := <-evc:
			out = append(out, e)
		case <-timeout:
			t.Fatalf("got %d of %d events: %+v", len(out), n, out)
		}
	}
	return out
}

func ignoreSeqTime() cmp.Option { return cmpopts.IgnoreFields(Event{}, "Seq", "Time") }

func TestEventsStreamStateChanges(t *testing.T) {
	src := newFakeSource()
	s := newServer(t, Config{Events: src}, newFakeExchange(), newFakeBatches())
	ts := serveHTTP(t, s)
	evc, _, stop := follow(t, ts.URL, "")

	be := &batch.Event{Kind: batch.EventTerminal, BatchID: "b1", TargetID: "t1", Status: batch.StatusSucceeded}
	src.emit(
		state.Event{Kind: state.ChannelRegistered, TargetID: "t1", ChannelID: "c1", NodeID: "node-1"},
		state.Event{Kind: state.PrimaryElected, TargetID: "t1", ChannelID: "c1", NodeID: "node-1", Epoch: 4},
	)
	src.emit(
		state.Event{Kind: state.ChannelUnregistered, TargetID: "t1", ChannelID: "c1", NodeID: "node-1", ReplacedBy: "c9"},
		state.Event{Kind: state.PrimaryEvicted, TargetID: "t1", Epoch: 5},
		state.Event{Kind: state.BatchSucceeded, TargetID: "t1", BatchID: "b1", Batch: be},
	)
	got := next(t, evc, 5)
	want := []Event{
		{Kind: "channel_registered", TargetID: "t1", ChannelID: "c1", ConnectorID: "conn-1", NodeID: "node-1"},
		{Kind: "primary_elected", TargetID: "t1", ChannelID: "c1", ConnectorID: "conn-1", NodeID: "node-1", Epoch: 4},
		// The channel is still in the fake's registry, but the connector
		// comes from what the stream remembered.
		{Kind: "channel_unregistered", TargetID: "t1", ChannelID: "c1", ConnectorID: "conn-1", NodeID: "node-1", ReplacedBy: "c9"},
		{Kind: "primary_evicted", TargetID: "t1", Epoch: 5},
		{Kind: "batch_succeeded", TargetID: "t1", BatchID: "b1", Status: "SUCCEEDED"},
	}
	if diff := cmp.Diff(want, got, ignoreSeqTime()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	for i, e := range got {
		if e.Seq != uint64(i+1) || e.Time.IsZero() {
			t.Errorf("event %d: seq %d, time %v; want seq %d and a time", i, e.Seq, e.Time, i+1)
		}
	}
	stop()
	waitFor(t, "the subscription to end with the last stream", func() bool { return src.subscribers() == 0 })
}

func TestEventsEveryStreamGetsEveryEvent(t *testing.T) {
	src := newFakeSource()
	s := newServer(t, Config{Events: src}, newFakeExchange(), nil)
	ts := serveHTTP(t, s)
	a, _, _ := follow(t, ts.URL, "")
	b, _, _ := follow(t, ts.URL, "")
	if n := src.subscribers(); n != 1 {
		t.Fatalf("%d subscriptions for two streams, want one shared", n)
	}
	src.emit(state.Event{Kind: state.PrimaryEvicted, TargetID: "t2", Epoch: 9})
	for _, evc := range []<-chan Event{a, b} {
		if got := next(t, evc, 1)[0]; got.Kind != "primary_evicted" || got.Seq != 1 {
			t.Errorf("got %+v, want primary_evicted with seq 1", got)
		}
	}
}

// A client that falls behind loses events, never the controller's time: its
// queue holds EventBuffer events and it is told how many it missed.
func TestEventsSlowClientGetsDroppedMarker(t *testing.T) {
	src := newFakeSource()
	s := newServer(t, Config{Events: src, EventBuffer: 4}, newFakeExchange(), nil)
	ts := serveHTTP(t, s)
	evc, _, _ := follow(t, ts.URL, "")
	burst := make([]state.Event, 50)
	for i := range burst {
		burst[i] = state.Event{Kind: state.PrimaryEvicted, TargetID: "t", Epoch: uint64(i + 1)}
	}
	src.emit(burst...) // one Apply: the fan-out queues it at once, before the stream drains
	got := next(t, evc, 5)
	for i, e := range got[:4] {
		if e.Epoch != uint64(i+1) {
			t.Errorf("event %d: epoch %d, want %d", i, e.Epoch, i+1)
		}
	}
	if got[4].Kind != EventDropped || got[4].Dropped != 46 {
		t.Errorf("after the buffer: %+v, want dropped 46", got[4])
	}
	src.emit(state.Event{Kind: state.PrimaryEvicted, TargetID: "t", Epoch: 99})
	if e := next(t, evc, 1)[0]; e.Epoch != 99 {
		t.Errorf("after the drop: %+v, want the next event", e)
	}
}

// The subscription only queues, up to a bound; beyond it the events are
// counted and every stream is told.
func TestEventsIntakeOverflowIsReported(t *testing.T) {
	src := newFakeSource()
	s := newServer(t, Config{Events: src}, newFakeExchange(), nil)
	s.hub.intake = 3
	ts := serveHTTP(t, s)
	evc, _, _ := follow(t, ts.URL, "")
	burst := make([]state.Event, 10)
	for i := range burst {
		burst[i] = state.Event{Kind: state.PrimaryEvicted, TargetID: "t", Epoch: uint64(i + 1)}
	}
	src.emit(burst...)
	got := next(t, evc, 4)
	if got[0].Kind != EventDropped || got[0].Dropped != 7 {
		t.Errorf("first event %+v, want dropped 7", got[0])
	}
	for i, e := range got[1:] {
		if e.Epoch != uint64(i+1) {
			t.Errorf("event %d: epoch %d, want %d", i+1, e.Epoch, i+1)
		}
	}
}

func TestEventsLimitsConcurrentStreams(t *testing.T) {
	s := newServer(t, Config{Events: newFakeSource(), MaxEventStreams: 1}, newFakeExchange(), nil)
	ts := serveHTTP(t, s)
	_, _, stop := follow(t, ts.URL, "")
	resp, body := do(t, ts, http.MethodGet, "/exchange/events", "", nil)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second stream: %d %s, want 429", resp.StatusCode, body)
	}
	checkErrorBody(t, body, http.StatusTooManyRequests)
	stop()
	waitFor(t, "the slot to free", func() bool {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return len(s.hub.streams) == 0
	})
	follow(t, ts.URL, "")
}

func TestEventsWithoutSourceIs501(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{}, newFakeExchange(), nil))
	resp, body := do(t, ts, http.MethodGet, "/exchange/events", "", nil)
	if resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("GET /exchange/events: %d %s, want 501", resp.StatusCode, body)
	}
}

func TestEventsRequireTheToken(t *testing.T) {
	src := newFakeSource()
	ts := serveHTTP(t, newServer(t, Config{Tokens: []string{"s3cret"}, Events: src}, newFakeExchange(), nil))
	resp, body := do(t, ts, http.MethodGet, "/exchange/events", "", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %d %s, want 401", resp.StatusCode, body)
	}
	if n := src.subscribers(); n != 0 {
		t.Errorf("an unauthorized request subscribed (%d)", n)
	}
	follow(t, ts.URL, "s3cret")
}

// An idle stream gets a comment line every EventKeepalive.
func TestEventsKeepalive(t *testing.T) {
	ts := serveHTTP(t, newServer(t, Config{Events: newFakeSource(), EventKeepalive: 10 * time.Millisecond}, newFakeExchange(), nil))
	lines := rawStream(t, ts.URL+"/exchange/events")
	for i := 0; i < 3; {
		if l := nextLine(t, lines); l == ": keepalive" {
			i++
		}
	}
}

// rawStream opens url and returns its body's lines.
func rawStream(t *testing.T, url string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	lines := make(chan string, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	})
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		wg.Wait()
	})
	return lines
}

func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("the stream ended")
		}
		return l
	case <-time.After(defaultTestTimeout):
		t.Fatal("no line in time")
	}
	return ""
}

// A stream outlives the server's read and write timeouts, which are sized
// for one request and its answer.
func TestEventsOutliveServerTimeouts(t *testing.T) {
	src := newFakeSource()
	cfg := Config{Events: src, EventKeepalive: 20 * time.Millisecond, ReadTimeout: 50 * time.Millisecond,
		CommandTimeout: 50 * time.Millisecond, MaxCommandTimeout: 60 * time.Millisecond, WriteTimeout: 100 * time.Millisecond}
	s := newServer(t, cfg, newFakeExchange(), nil)
	addr, stopServe := serve(t, s)
	defer stopServe()
	lines := rawStream(t, "http://"+addr+"/exchange/events")
	// 20 keepalives: 400 ms, past both timeouts.
	for i := 0; i < 20; {
		if nextLine(t, lines) == ": keepalive" {
			i++
		}
	}
	src.emit(state.Event{Kind: state.PrimaryEvicted, TargetID: "t", Epoch: 1})
	for !strings.HasPrefix(nextLine(t, lines), "data: ") {
	}
}

// serve runs s.Serve on a loopback listener; stop shuts it down and returns
// how Serve ended.
func serve(t *testing.T, s *Server) (addr string, stop func() error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, lis) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-errc:
			case <-time.After(30 * time.Second):
				serr = errors.New("Serve did not return within 30 s of its context's end")
			}
		})
		return serr
	}
	t.Cleanup(func() { _ = stop() })
	return lis.Addr().String(), stop
}

// A server shutdown ends the streams at once: it does not wait its
// ShutdownTimeout for them.
func TestEventsEndOnShutdown(t *testing.T) {
	s := newServer(t, Config{Events: newFakeSource(), ShutdownTimeout: 5 * time.Minute}, newFakeExchange(), nil)
	addr, stop := serve(t, s)
	_, done, _ := follow(t, "http://"+addr, "")
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) {
			t.Errorf("Events() = %v, want io.EOF", err)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("the stream did not end with the server")
	}
	cl, _ := NewClient("http://"+addr, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var ue *UnreachableError
	if err := cl.Events(ctx, nil, func(Event) error { return nil }); !errors.As(err, &ue) {
		t.Errorf("after shutdown: %v, want unreachable", err)
	}
}

func TestClusterChanges(t *testing.T) {
	now := base
	old := controller.ClusterInfo{LeaderID: "n1", Members: []controller.MemberInfo{
		{NodeID: "n1", State: "alive"}, {NodeID: "n2", State: "alive"}, {NodeID: "n3", State: "dead"}, {NodeID: "n4", State: "alive"},
	}}
	cur := controller.ClusterInfo{LeaderID: "n2", Members: []controller.MemberInfo{
		{NodeID: "n1", State: "dead"}, {NodeID: "n2", State: "alive"}, {NodeID: "n3", State: "alive"}, {NodeID: "n5", State: "alive"},
	}}
	want := []Event{
		{Kind: EventNodeLeft, Time: now, NodeID: "n1", Status: "dead"},
		{Kind: EventNodeJoined, Time: now, NodeID: "n3", Status: "alive"},
		{Kind: EventNodeJoined, Time: now, NodeID: "n5", Status: "alive"},
		{Kind: EventNodeLeft, Time: now, NodeID: "n4", Status: "left"},
		{Kind: EventLeaderChanged, Time: now, NodeID: "n2"},
	}
	if diff := cmp.Diff(want, clusterChanges(old, cur, now)); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if got := clusterChanges(cur, cur, now); len(got) != 0 {
		t.Errorf("no change: %+v", got)
	}
}

// waitFor polls cond until it holds, for at most defaultTestTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that reads nothing is disconnected once a write has waited the
// write bound: its stream, and so the subscription, end.
func TestEventsClientThatDoesNotReadIsDisconnected(t *testing.T) {
	src := newFakeSource()
	s := newServer(t, Config{Events: src, EventBuffer: 1 << 20}, newFakeExchange(), nil)
	s.hub.writeMax = 100 * time.Millisecond
	s.hub.intake = 1 << 20
	addr, _ := serve(t, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /exchange/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream to open", func() bool { return src.subscribers() == 1 })
	// 16 MB: far more than the socket buffers hold, and never read.
	evs := make([]state.Event, 1000)
	for i := range evs {
		evs[i] = state.Event{Kind: state.PrimaryEvicted, TargetID: strings.Repeat("t", 16<<10)}
	}
	src.emit(evs...)
	waitFor(t, "the stalled stream to be dropped", func() bool { return src.subscribers() == 0 })
}

// syncExchange is fakeExchange with a cluster view the test changes.
type syncExchange struct {
	*fakeExchange
	mu sync.Mutex
	cl controller.ClusterInfo
}

func (e *syncExchange) Cluster() controller.ClusterInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cl
}

func (e *syncExchange) set(cl controller.ClusterInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cl = cl
}

// Members and leader have no subscription: the stream compares the cluster
// view while it is open and says what changed.
func TestEventsReportClusterChanges(t *testing.T) {
	ex := &syncExchange{fakeExchange: newFakeExchange(), cl: controller.ClusterInfo{NodeID: "n1", LeaderID: "n1",
		Members: []controller.MemberInfo{{NodeID: "n1", State: "alive"}, {NodeID: "n2", State: "alive"}}}}
	s := newServer(t, Config{Events: newFakeSource()}, ex, nil)
	s.hub.poll = 5 * time.Millisecond
	ts := serveHTTP(t, s)
	evc, _, _ := follow(t, ts.URL, "")
	ex.set(controller.ClusterInfo{NodeID: "n1", LeaderID: "n3",
		Members: []controller.MemberInfo{{NodeID: "n1", State: "alive"}, {NodeID: "n2", State: "dead"}, {NodeID: "n3", State: "alive"}}})
	got := next(t, evc, 3)
	want := []Event{
		{Kind: EventNodeLeft, NodeID: "n2", Status: "dead"},
		{Kind: EventNodeJoined, NodeID: "n3", Status: "alive"},
		{Kind: EventLeaderChanged, NodeID: "n3"},
	}
	if diff := cmp.Diff(want, got, ignoreSeqTime()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// BenchmarkEventsReceive: what the state's subscription costs per Apply
// while event streams are open, under the replica's lock (a registration
// and its election, the usual pair).
func BenchmarkEventsReceive(b *testing.B) {
	p := &pump{wake: make(chan struct{}, 1), limit: 1 << 62}
	evs := []state.Event{
		{Kind: state.ChannelRegistered, TargetID: "t1", ChannelID: "c1", NodeID: "n1"},
		{Kind: state.PrimaryElected, TargetID: "t1", ChannelID: "c1", NodeID: "n1", Epoch: 1},
	}
	var spare []state.Event
	b.ReportAllocs()
	for i := range b.N {
		p.receive(evs)
		if i%64 == 0 { // the pump drains the intake as it goes
			in, _ := p.take(spare)
			spare = in
			select {
			case <-p.wake:
			default:
			}
		}
	}
}
