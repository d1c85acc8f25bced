package membership

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. memberlist calls them on its own
// goroutines (the event callbacks under its node lock, never concurrently),
// so none of them blocks: events are queued for dispatch.
type delegate struct {
	local       string // this node's id
	log         *slog.Logger
	q           *eventQueue
	departedTTL time.Duration

	metaMu sync.RWMutex // protects meta
	meta   []byte       // this node's encoded Meta (with the leaving flag after Leave)

	mu          sync.Mutex             // protects the following
	members     map[string]memberEntry // latest state per node id, from events
	conflictMem *Member                // first node seen claiming our id
}

type memberEntry struct {
	m     Member
	since time.Time // when m.State was set
}

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
)

func (d *delegate) setMeta(enc []byte) {
	d.metaMu.Lock()
	d.meta = enc
	d.metaMu.Unlock()
}

// setLeaving adds the leaving flag to this node's meta.
func (d *delegate) setLeaving() {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	meta, _, err := decodeMeta(d.meta)
	if err != nil { // cannot happen: we encoded it
		return
	}
	d.meta = encodeLeaving(meta)
}

// NodeMeta implements memberlist.Delegate. The meta was checked against
// MetaMaxSize when set.
func (d *delegate) NodeMeta(limit int) []byte {
	d.metaMu.RLock()
	defer d.metaMu.RUnlock()
	if len(d.meta) > limit { // cannot happen: checked against MetaMaxSize
		return nil
	}
	return append([]byte(nil), d.meta...)
}

// NotifyMsg implements memberlist.Delegate; Exchange sends no user messages.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (d *delegate) LocalState(bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState([]byte, bool) {}

// NotifyAlive implements memberlist.AliveDelegate: it keeps out nodes that
// are not Exchange nodes (undecodable metadata) and nodes whose metadata names
// another node.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	meta, _, err := decodeMeta(peer.Meta)
	if err != nil {
		return fmt.Errorf("not an Exchange node: %w", err)
	}
	if meta.NodeID != peer.Name {
		return fmt.Errorf("metadata names node %q, not %q", meta.NodeID, peer.Name)
	}
	return nil
}

// NotifyConflict implements memberlist.ConflictDelegate: two nodes claim one
// name at different addresses. memberlist keeps the one it knew.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.log.Error("membership: node id conflict: two nodes claim one NodeID; the second is ignored",
		"nodeID", existing.Name, "known", existing.Address(), "other", other.Address())
	if existing.Name != d.local {
		return
	}
	d.mu.Lock()
	if d.conflictMem == nil {
		// existing is this node's own entry (it holds our name), whether
		// the other node joined us or we joined its cluster.
		c := toMember(other, StateAlive)
		d.conflictMem = &c
	}
	d.mu.Unlock()
}

// conflict returns the first node seen claiming this node's id.
func (d *delegate) conflict() (Member, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conflictMem == nil {
		return Member{}, false
	}
	return *d.conflictMem, true
}

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.notify(EventJoin, n) }

// NotifyLeave implements memberlist.EventDelegate: a node that left or
// failed. memberlist v0.6.0 does not say which (it leaves Node.State unset),
// so a node that leaves first gossips a leaving flag in its meta.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	if _, leaving, _ := decodeMeta(n.Meta); leaving {
		d.notify(EventLeave, n)
		return
	}
	d.notify(EventFail, n)
}

// NotifyUpdate implements memberlist.EventDelegate. The leaving flag's update
// is not an event: the leave follows.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	if _, leaving, _ := decodeMeta(n.Meta); leaving {
		d.log.Debug("membership: node leaving", "nodeID", n.Name)
		return
	}
	d.notify(EventUpdate, n)
}

func (d *delegate) notify(t EventType, n *memberlist.Node) {
	state := StateAlive
	switch t {
	case EventLeave:
		state = StateLeft
	case EventFail:
		state = StateDead
	}
	mem := toMember(n, state)
	now := time.Now()
	d.mu.Lock()
	d.members[mem.Meta.NodeID] = memberEntry{m: mem, since: now}
	d.pruneLocked(now)
	d.mu.Unlock()

	level := slog.LevelInfo
	if mem.Meta.NodeID == d.local {
		level = slog.LevelDebug
	}
	d.log.Log(context.Background(), level, "membership: node "+t.String(),
		"nodeID", mem.Meta.NodeID, "addr", mem.Addr, "raftAddr", mem.Meta.RaftAddr, "grpcAddr", mem.Meta.GRPCAddr)
	d.q.push(Event{Type: t, Member: mem})
}

// pruneLocked forgets nodes that left or failed more than departedTTL ago.
func (d *delegate) pruneLocked(now time.Time) {
	for id, e := range d.members {
		if (e.m.State == StateDead || e.m.State == StateLeft) && now.Sub(e.since) > d.departedTTL {
			delete(d.members, id)
		}
	}
}

// known returns every node the events reported (alive, or departed within
// departedTTL), by id.
func (d *delegate) known() map[string]Member {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneLocked(now)
	out := make(map[string]Member, len(d.members))
	for id, e := range d.members {
		out[id] = e.m
	}
	return out
}
