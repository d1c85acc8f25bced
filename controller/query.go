package controller

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/exchangekit/exchange/state"
)

// Channels returns every registered channel of the cluster, by target then
// registration order. The live fields are filled for this node's channels.
func (c *Controller) Channels() []ChannelInfo {
	var out []ChannelInfo
	locals := c.locals()
	c.store.View(func(s *state.State) {
		chs := slices.SortedFunc(maps.Values(s.Channels), func(a, b *state.Channel) int {
			return cmp.Or(cmp.Compare(a.TargetID, b.TargetID), cmp.Compare(a.Seq, b.Seq))
		})
		out = make([]ChannelInfo, 0, len(chs))
		for _, ch := range chs {
			out = append(out, c.channelInfo(s, ch, locals))
		}
	})
	return out
}

// Channel returns the registered channel id.
func (c *Controller) Channel(id string) (ChannelInfo, bool) {
	var (
		out ChannelInfo
		ok  bool
	)
	locals := c.localsOf(id) // not c.locals(): one lookup, not a copy of every local channel
	c.store.View(func(s *state.State) {
		var ch *state.Channel
		if ch, ok = s.Channels[id]; ok {
			out = c.channelInfo(s, ch, locals)
		}
	})
	return out, ok
}

// Targets returns every target that has at least one registered channel,
// sorted by id.
func (c *Controller) Targets() []TargetInfo {
	var out []TargetInfo
	locals := c.locals()
	c.store.View(func(s *state.State) {
		for _, t := range s.Targets() {
			out = append(out, c.targetInfo(s, t, locals))
		}
	})
	return out
}

// TargetIDs returns the ids of the targets that have at least one registered
// channel, sorted: O(targets), without reading their channels.
func (c *Controller) TargetIDs() []string {
	var out []string
	c.store.View(func(s *state.State) { out = s.Targets() })
	return out
}

// TargetIDsAfter returns a page of TargetIDs: at most limit ids, sorted,
// starting after the id after ("": from the first). It costs
// O(log targets + limit), so listings page through a large registry
// without reading all of it.
func (c *Controller) TargetIDsAfter(after string, limit int) []string {
	var out []string
	c.store.View(func(s *state.State) { out = s.TargetsAfter(after, limit) })
	return out
}

// Target returns target id, if it has at least one registered channel.
func (c *Controller) Target(id string) (TargetInfo, bool) {
	if ts := c.TargetsOf([]string{id}); len(ts) == 1 {
		return ts[0], true
	}
	return TargetInfo{}, false
}

// targetsChunk is how many targets TargetsOf reads in one view of the
// state: the view holds the state's read lock, which writes wait for.
const targetsChunk = 128

// TargetsOf returns the targets among ids that have at least one registered
// channel, as Target returns each, in the order of ids: a page of targets
// (GET /exchange/targets), read in two views of the state per targetsChunk
// targets rather than two per target, into one slice of channels.
func (c *Controller) TargetsOf(ids []string) []TargetInfo {
	out := make([]TargetInfo, 0, len(ids))
	var scratch []*state.Channel
	var chIDs []string
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), targetsChunk)]
		ids = ids[len(chunk):]
		chIDs = chIDs[:0]
		c.store.View(func(s *state.State) {
			for _, id := range chunk {
				scratch = s.AppendTargetChannels(scratch[:0], id)
				for _, ch := range scratch {
					chIDs = append(chIDs, ch.ID)
				}
			}
		})
		locals := c.localsOf(chIDs...) // the chunk's, not a copy of every local channel
		c.store.View(func(s *state.State) {
			infos := make([]ChannelInfo, 0, len(chIDs)) // the chunk's channels, each target's a part
			for _, id := range chunk {
				scratch = s.AppendTargetChannels(scratch[:0], id)
				if len(scratch) == 0 {
					continue // it lost its channels since
				}
				pid, epoch := s.PrimaryOf(id)
				from := len(infos)
				for _, ch := range scratch {
					infos = append(infos, c.channelInfo(s, ch, locals))
				}
				out = append(out, TargetInfo{ID: id, PrimaryID: pid, Epoch: epoch, Channels: infos[from:len(infos):len(infos)]})
			}
		})
	}
	return out
}

// Cluster describes the cluster as this node sees it. A single node is its
// own leader.
func (c *Controller) Cluster() ClusterInfo {
	if c.cfg.ClusterInfo != nil {
		return c.cfg.ClusterInfo()
	}
	return ClusterInfo{
		NodeID:   c.nodeID,
		LeaderID: c.nodeID,
		State:    "Leader",
		Members:  []MemberInfo{{NodeID: c.nodeID, State: "alive", Leader: true}},
	}
}

func (c *Controller) targetInfo(s *state.State, target string, locals map[string]*local) TargetInfo {
	pid, epoch := s.PrimaryOf(target)
	t := TargetInfo{ID: target, PrimaryID: pid, Epoch: epoch, Channels: []ChannelInfo{}}
	for _, ch := range s.TargetChannels(target) {
		t.Channels = append(t.Channels, c.channelInfo(s, ch, locals))
	}
	return t
}

func (c *Controller) channelInfo(s *state.State, ch *state.Channel, locals map[string]*local) ChannelInfo {
	pid, epoch := s.PrimaryOf(ch.TargetID)
	info := ChannelInfo{
		ID:           ch.ID,
		TargetID:     ch.TargetID,
		ConnectorID:  ch.ConnectorID,
		NodeID:       ch.NodeID,
		Active:       ch.Active,
		Primary:      pid == ch.ID,
		Epoch:        epoch,
		RegisteredAt: ch.RegisteredAt,
		Metadata:     maps.Clone(ch.Metadata),
	}
	if lc := locals[ch.ID]; lc != nil && ch.NodeID == c.nodeID {
		info.Local = true
		info.InFlight = lc.ch.InFlight()
		info.RemoteAddr = lc.peer.Addr
		if ns := lc.lastHealthy.Load(); ns != 0 {
			info.LastHealthyAt = time.Unix(0, ns)
		}
	}
	return info
}

// Counts is the size of the registry as this node sees it, for gauges.
type Counts struct {
	Channels       int // registered channels in the cluster
	ActiveChannels int // of which active
	Targets        int // targets with at least one channel
	Primaries      int // targets that have a primary
	LocalInFlight  int // commands in progress on the channels held by this node
}

// Counts returns the registry's sizes without listing it: the registry
// counts are counters the state keeps up to date, read in O(1) under its
// lock, so a scrape never holds up registrations. LocalInFlight is a counter
// too, kept by this node's channels as their calls and handlers come and go
// (channel.Config.InFlightTotal).
func (c *Controller) Counts() Counts {
	var n Counts
	c.store.View(func(s *state.State) {
		n = Counts{Channels: s.ChannelCount(), ActiveChannels: s.ActiveChannelCount(),
			Targets: s.TargetCount(), Primaries: s.PrimaryCount()}
	})
	n.LocalInFlight = int(c.inFlight.Load())
	return n
}
