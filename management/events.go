package management

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/exchangekit/exchange/controller"
	"github.com/exchangekit/exchange/state"
)

// EventSource is what GET /exchange/events follows: the replicated state's
// subscription. state.Store, and so cluster.Node and standalone.Cluster,
// satisfies it. fn runs with the replica locked: the server only queues in
// it, never blocks, and never calls back.
type EventSource interface {
	Subscribe(fn func([]state.Event)) (cancel func())
}

// Event is one event of GET /exchange/events, sent as the data of a
// server-sent event whose name is Kind and whose id is Seq. Empty fields are
// left out.
//
// Kinds: channel_registered, channel_unregistered (ReplacedBy when a newer
// channel of the same connector took over), primary_elected,
// primary_evicted, batch_created, batch_started, batch_pending,
// batch_succeeded, batch_failed, batch_deleted (Status: the batch's status),
// state_restored (a snapshot replaced the state: re-read everything),
// node_joined, node_left (Status: the member's gossip state),
// leader_changed (NodeID: the new leader, empty when there is none) and
// dropped (Dropped events were lost because this client, or the server,
// fell behind: re-read what is shown).
type Event struct {
	Seq         uint64    `json:"seq"`
	Kind        string    `json:"kind"`
	Time        time.Time `json:"time"`
	TargetID    string    `json:"targetId,omitempty"`
	ChannelID   string    `json:"channelId,omitempty"`
	ConnectorID string    `json:"connectorId,omitempty"`
	NodeID      string    `json:"nodeId,omitempty"`
	Epoch       uint64    `json:"epoch,omitempty"`
	BatchID     string    `json:"batchId,omitempty"`
	Status      string    `json:"status,omitempty"`
	ReplacedBy  string    `json:"replacedBy,omitempty"`
	Dropped     uint64    `json:"dropped,omitempty"`
}

// Event kinds the server adds to those of the replicated state.
const (
	EventDropped       = "dropped"
	EventNodeJoined    = "node_joined"
	EventNodeLeft      = "node_left"
	EventLeaderChanged = "leader_changed"
)

// Defaults of the event stream.
const (
	DefaultMaxEventStreams = 64
	DefaultEventBuffer     = 1024
	DefaultEventKeepalive  = 15 * time.Second
	// eventWriteTimeout bounds each write to a stream: a client that reads
	// nothing for that long is disconnected.
	eventWriteTimeout = 10 * time.Second
	// eventIntake bounds the events queued between the state's subscription
	// and the goroutine that fans them out.
	eventIntake = 16384
	// clusterPoll is how often the cluster's members and leader are compared
	// while a stream is open (they have no subscription of their own).
	clusterPoll = 2 * time.Second
)

// errEventsDisabled is the 501 of a server without Config.Events.
var errEventsDisabled = &statusError{http.StatusNotImplemented, "events are not available on this server (no event source configured)"}

// hub fans the state's events out to the open streams. While at least one
// stream is open it holds a subscription and one pump goroutine; the last
// stream to leave stops both.
type hub struct {
	ex       Exchange
	src      EventSource
	max      int
	buf      int
	intake   int
	poll     time.Duration
	writeMax time.Duration // bound of one write to a stream
	mu       sync.Mutex    // protects the fields below
	streams  map[*stream]struct{}
	closed   bool
	pump     *pump
	seq      uint64
	shutdown chan struct{} // closed by close
}

func newHub(ex Exchange, src EventSource, cfg Config) *hub {
	return &hub{ex: ex, src: src, max: cfg.MaxEventStreams, buf: cfg.EventBuffer, intake: eventIntake,
		poll: clusterPoll, writeMax: eventWriteTimeout, streams: map[*stream]struct{}{}, shutdown: make(chan struct{})}
}

// stream is one client's bounded queue.
type stream struct {
	mu      sync.Mutex // protects q and dropped
	q       []Event
	dropped uint64
	wake    chan struct{} // capacity 1
}

func (st *stream) push(evs []Event, limit int) {
	st.mu.Lock()
	for _, e := range evs {
		if len(st.q) < limit {
			st.q = append(st.q, e)
		} else {
			st.dropped++
		}
	}
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *stream) take() ([]Event, uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	q, d := st.q, st.dropped
	st.q, st.dropped = nil, 0
	return q, d
}

// pump is one subscription and the goroutine that enriches its events
// (connector ids, cluster changes) and fans them out.
type pump struct {
	stop   chan struct{}
	done   chan struct{}
	wake   chan struct{} // capacity 1
	cancel func()
	limit  int
	// cluster is the view the first stream opened on: run compares from it.
	cluster controller.ClusterInfo
	mu      sync.Mutex // protects in and lost
	in      []state.Event
	lost    uint64
}

// receive is the subscription: under the replica's lock, it only queues.
func (p *pump) receive(evs []state.Event) {
	p.mu.Lock()
	for _, e := range evs {
		if len(p.in) < p.limit {
			p.in = append(p.in, e)
		} else {
			p.lost++
		}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns the queued events and how many were lost, and makes empty
// (emptied by take's caller, reused) the next intake, so that the steady
// state allocates nothing under the replica's lock.
func (p *pump) take(empty []state.Event) ([]state.Event, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	in, lost := p.in, p.lost
	p.in, p.lost = empty[:0], 0
	return in, lost
}

var (
	errStreamsShuttingDown = &statusError{http.StatusServiceUnavailable, "the server is shutting down"}
	errTooManyStreams      = &statusError{http.StatusTooManyRequests, "too many event streams are open on this server"}
)

// join opens a stream, starting the subscription if it is the first.
func (h *hub) join() (*stream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errStreamsShuttingDown
	}
	if len(h.streams) >= h.max {
		return nil, errTooManyStreams
	}
	st := &stream{wake: make(chan struct{}, 1)}
	h.streams[st] = struct{}{}
	if h.pump == nil {
		p := &pump{stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1), limit: h.intake}
		p.cancel = h.src.Subscribe(p.receive)
		// The cluster view the stream's changes are counted from: taken now,
		// before the client hears that its stream is open, so that a change
		// made after that is reported (not taken for the starting point).
		p.cluster = h.ex.Cluster()
		h.pump = p
		go h.run(p)
	}
	return st, nil
}

// leave closes a stream; the last one stops the pump and waits for it.
func (h *hub) leave(st *stream) {
	h.mu.Lock()
	delete(h.streams, st)
	var p *pump
	if len(h.streams) == 0 && h.pump != nil {
		p, h.pump = h.pump, nil
		close(p.stop)
	}
	h.mu.Unlock()
	if p != nil {
		<-p.done
	}
}

// close ends every stream (at server shutdown) and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.shutdown)
	}
}

// publish numbers evs and queues them on every stream, unless p is no longer
// the hub's pump (a stream joined while the previous pump was stopping).
func (h *hub) publish(p *pump, evs []Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pump != p {
		return
	}
	for i := range evs {
		h.seq++
		evs[i].Seq = h.seq
	}
	for st := range h.streams {
		st.push(evs, h.buf)
	}
}

// run is the pump's goroutine.
func (h *hub) run(p *pump) {
	defer close(p.done)
	defer p.cancel()
	connectors := h.connectors()
	cluster := p.cluster
	tick := time.NewTicker(h.poll)
	defer tick.Stop()
	var spare []state.Event
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
			in, lost := p.take(spare)
			out := make([]Event, 0, len(in)+1)
			now := time.Now().UTC()
			if lost > 0 {
				out = append(out, Event{Kind: EventDropped, Time: now, Dropped: lost})
			}
			for _, e := range in {
				if e.Kind == state.StateRestored {
					connectors = h.connectors()
				}
				out = append(out, enrich(e, now, h.ex, connectors))
			}
			clear(in) // keeps no batch event alive
			spare = in
			h.publish(p, out)
		case <-tick.C:
			next := h.ex.Cluster()
			h.publish(p, clusterChanges(cluster, next, time.Now().UTC()))
			cluster = next
		}
	}
}

// connectors maps every registered channel to its connector: an
// unregistered channel is gone from the state by the time its event is
// enriched, so its connector is remembered from before.
func (h *hub) connectors() map[string]string {
	m := map[string]string{}
	for _, ch := range h.ex.Channels() {
		m[ch.ID] = ch.ConnectorID
	}
	return m
}

// enrich turns a state event into an API event, with the channel's
// connector.
func enrich(e state.Event, now time.Time, ex Exchange, connectors map[string]string) Event {
	out := Event{Kind: string(e.Kind), Time: now, TargetID: e.TargetID, ChannelID: e.ChannelID, NodeID: e.NodeID,
		Epoch: e.Epoch, BatchID: e.BatchID, ReplacedBy: e.ReplacedBy}
	switch e.Kind {
	case state.ChannelRegistered:
		if ch, ok := ex.Channel(e.ChannelID); ok {
			connectors[e.ChannelID] = ch.ConnectorID
		}
		out.ConnectorID = connectors[e.ChannelID]
	case state.ChannelUnregistered:
		out.ConnectorID = connectors[e.ChannelID]
		delete(connectors, e.ChannelID)
	case state.PrimaryElected:
		id, ok := connectors[e.ChannelID]
		if !ok {
			if ch, found := ex.Channel(e.ChannelID); found {
				id = ch.ConnectorID
			}
		}
		out.ConnectorID = id
	}
	if e.Batch != nil {
		out.Status = e.Batch.Status.String()
	}
	return out
}

// clusterChanges compares two views of the cluster.
func clusterChanges(old, cur controller.ClusterInfo, now time.Time) []Event {
	var out []Event
	was := map[string]string{}
	for _, m := range old.Members {
		was[m.NodeID] = m.State
	}
	for _, m := range cur.Members {
		prev, known := was[m.NodeID]
		delete(was, m.NodeID)
		switch {
		case m.State == "alive" && (!known || prev != "alive"):
			out = append(out, Event{Kind: EventNodeJoined, Time: now, NodeID: m.NodeID, Status: m.State})
		case m.State != "alive" && known && prev == "alive":
			out = append(out, Event{Kind: EventNodeLeft, Time: now, NodeID: m.NodeID, Status: m.State})
		}
	}
	for id, prev := range was {
		if prev == "alive" {
			out = append(out, Event{Kind: EventNodeLeft, Time: now, NodeID: id, Status: "left"})
		}
	}
	if cur.LeaderID != old.LeaderID {
		out = append(out, Event{Kind: EventLeaderChanged, Time: now, NodeID: cur.LeaderID})
	}
	return out
}

// streamEvents serves GET /exchange/events as server-sent events: every
// event as "id: SEQ\nevent: KIND\ndata: JSON\n\n", a comment line as a
// keepalive every Config.EventKeepalive, until the client goes, the server
// shuts down, or a write blocks for eventWriteTimeout.
func (s *Server) streamEvents(c echo.Context) error {
	if s.hub == nil {
		return errEventsDisabled
	}
	st, err := s.hub.join()
	if err != nil {
		return err
	}
	defer s.hub.leave(st)

	w := c.Response()
	rc := http.NewResponseController(w.Writer)
	// The server's read and write timeouts are for one request and its
	// answer; a stream lasts. Without a read deadline the end of the
	// client's connection still ends the request's context.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	buf.WriteString("retry: 2000\n: exchange events\n\n")
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.hub.writeMax))
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := flush(); err != nil {
		return nil
	}
	keep := time.NewTicker(s.cfg.EventKeepalive)
	defer keep.Stop()
	ctx := c.Request().Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.hub.shutdown:
			return nil
		case <-keep.C:
			buf.WriteString(": keepalive\n\n")
		case <-st.wake:
			evs, dropped := st.take()
			for _, e := range evs {
				writeSSE(&buf, e)
			}
			if dropped > 0 {
				writeSSE(&buf, Event{Kind: EventDropped, Time: time.Now().UTC(), Dropped: dropped})
			}
		}
		if err := flush(); err != nil {
			s.log.Debug("management: event stream ended", "remote", c.Request().RemoteAddr, "err", err)
			return nil
		}
	}
}

// writeSSE appends one server-sent event to buf. The JSON is compact, so it
// holds no newline.
func writeSSE(buf *bytes.Buffer, e Event) {
	data, err := json.Marshal(e)
	if err != nil { // an Event always marshals
		data = fmt.Appendf(nil, `{"kind":%q}`, e.Kind)
	}
	if e.Seq > 0 {
		buf.WriteString("id: ")
		buf.WriteString(strconv.FormatUint(e.Seq, 10))
		buf.WriteByte('\n')
	}
	buf.WriteString("event: ")
	buf.WriteString(e.Kind)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
}
