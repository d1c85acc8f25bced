package state

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/google/btree"
)

// index holds the lookups of a State derived from its channels: channels by
// target (in registration order), by node, and by target and connector, and
// the target ids in order. It is never serialised: Apply maintains it,
// Unmarshal rebuilds it. Every update costs O(1) (a map insert or delete and a
// list link), or O(log targets) when a target appears or goes (the ordered
// ids), so registry ops cost what they change, never a scan of the registry.
type index struct {
	targets map[string]*targetIndex        // target id → its channels
	order   *btree.BTreeG[string]          // the keys of targets, in order: pages of targets (TargetsAfter)
	nodes   map[string]map[string]*Channel // node id → channel id → channel
	links   map[string]*link               // channel id → its place in its target's list

	// Counts kept up to date so that gauges read them in O(1).
	active    int // channels with Active set
	primaries int // Primaries entries with a ChannelID: targets that have a primary
}

// targetIndex is one target's channels: a list ordered by (Seq, ID), oldest
// registration first, and the channels of each connector.
//
// connectors is made only while the target has two channels or more: most
// targets have one (a connector's reconnection takes its old channel over
// before the new one is added), and the list's head then answers for it.
// That spares each such target two maps (about 0.5 KiB per channel).
type targetIndex struct {
	head, tail *link
	n          int
	connectors map[string]map[string]*Channel // connector id → channel id → channel; nil while n ≤ 1
}

// connectorChannels returns the target's channels opened by connector, in
// registration order.
func (t *targetIndex) connectorChannels(connector string) []*Channel {
	if t.connectors == nil {
		if t.head != nil && t.head.c.ConnectorID == connector {
			return []*Channel{t.head.c}
		}
		return nil
	}
	return sortedChannels(t.connectors[connector])
}

// link is a channel's element in its target's list.
type link struct {
	c          *Channel
	prev, next *link
}

// orderDegree is the degree of the B-tree of target ids: nodes of up to 63
// ids (about 1 KiB), a few levels deep for a million targets.
const orderDegree = 32

func newIndex() *index {
	return &index{
		targets: map[string]*targetIndex{},
		order:   btree.NewOrderedG[string](orderDegree),
		nodes:   map[string]map[string]*Channel{},
		links:   map[string]*link{},
	}
}

// buildIndex indexes the channels of s from scratch. It only reads s.
func buildIndex(s *State) *index {
	ix := newIndex()
	chs := slices.SortedFunc(maps.Values(s.Channels), compareChannels)
	for _, c := range chs {
		ix.add(c)
	}
	ix.primaries = countPrimaries(s.Primaries)
	return ix
}

// countPrimaries counts the entries of primaries that name a channel.
func countPrimaries(primaries map[string]*Primary) int {
	n := 0
	for _, p := range primaries {
		if p != nil && p.ChannelID != "" {
			n++
		}
	}
	return n
}

// compareChannels orders channels by registration: Seq, then ID.
func compareChannels(a, b *Channel) int {
	return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.ID, b.ID))
}

// add indexes c. Channels normally arrive in registration order, so the
// insertion point is found at the tail of the target's list at once.
func (ix *index) add(c *Channel) {
	t := ix.targets[c.TargetID]
	if t == nil {
		t = &targetIndex{}
		ix.targets[c.TargetID] = t
		ix.order.ReplaceOrInsert(c.TargetID)
	}
	l := &link{c: c}
	after := t.tail
	for after != nil && compareChannels(after.c, c) > 0 {
		after = after.prev
	}
	l.prev = after
	if after == nil {
		l.next, t.head = t.head, l
	} else {
		l.next, after.next = after.next, l
	}
	if l.next == nil {
		t.tail = l
	} else {
		l.next.prev = l
	}
	t.n++
	if c.Active {
		ix.active++
	}
	ix.links[c.ID] = l
	switch {
	case t.connectors != nil:
		setAdd(t.connectors, c.ConnectorID, c)
	case t.n > 1: // the second channel: index the target's connectors from now on
		t.connectors = map[string]map[string]*Channel{}
		for l := t.head; l != nil; l = l.next {
			setAdd(t.connectors, l.c.ConnectorID, l.c)
		}
	}
	setAdd(ix.nodes, c.NodeID, c)
}

// remove unindexes c, which must be indexed.
func (ix *index) remove(c *Channel) {
	t := ix.targets[c.TargetID]
	l := ix.links[c.ID]
	delete(ix.links, c.ID)
	if l.prev == nil {
		t.head = l.next
	} else {
		l.prev.next = l.next
	}
	if l.next == nil {
		t.tail = l.prev
	} else {
		l.next.prev = l.prev
	}
	t.n--
	if c.Active {
		ix.active--
	}
	if t.n <= 1 {
		t.connectors = nil // the head answers again
	} else {
		setRemove(t.connectors, c.ConnectorID, c.ID)
	}
	setRemove(ix.nodes, c.NodeID, c.ID)
	if t.n == 0 {
		delete(ix.targets, c.TargetID)
		ix.order.Delete(c.TargetID)
	}
}

// firstActive returns the target's longest-registered active channel, or nil.
func (t *targetIndex) firstActive() *Channel {
	for l := t.head; l != nil; l = l.next {
		if l.c.Active {
			return l.c
		}
	}
	return nil
}

func setAdd(m map[string]map[string]*Channel, key string, c *Channel) {
	set := m[key]
	if set == nil {
		set = map[string]*Channel{}
		m[key] = set
	}
	set[c.ID] = c
}

func setRemove(m map[string]map[string]*Channel, key, id string) {
	set := m[key]
	delete(set, id)
	if len(set) == 0 {
		delete(m, key)
	}
}

// sortedChannels returns the channels of set in registration order.
func sortedChannels(set map[string]*Channel) []*Channel {
	if len(set) == 0 {
		return nil
	}
	return slices.SortedFunc(maps.Values(set), compareChannels)
}

// indexForm is an index written out as ids, for comparisons.
type indexForm struct {
	Targets    map[string][]string
	Nodes      map[string][]string
	Connectors map[string]map[string][]string
}

func (ix *index) form() indexForm {
	f := indexForm{Targets: map[string][]string{}, Nodes: map[string][]string{}, Connectors: map[string]map[string][]string{}}
	for id, t := range ix.targets {
		for l := t.head; l != nil; l = l.next {
			f.Targets[id] = append(f.Targets[id], l.c.ID)
		}
		f.Connectors[id] = map[string][]string{}
		for l := t.head; l != nil; l = l.next {
			conn := l.c.ConnectorID
			if _, ok := f.Connectors[id][conn]; ok {
				continue
			}
			for _, c := range t.connectorChannels(conn) {
				f.Connectors[id][conn] = append(f.Connectors[id][conn], c.ID)
			}
			slices.Sort(f.Connectors[id][conn])
		}
	}
	for node, set := range ix.nodes {
		f.Nodes[node] = slices.Sorted(maps.Keys(set))
	}
	return f
}

// Equal reports whether ix and o index the same channels the same way (so
// that go-cmp compares States by their index's content).
func (ix *index) Equal(o *index) bool {
	if ix == nil || o == nil {
		return ix == o
	}
	a, b := ix.form(), o.form()
	return maps.EqualFunc(a.Targets, b.Targets, slices.Equal) &&
		maps.EqualFunc(a.Nodes, b.Nodes, slices.Equal) &&
		maps.EqualFunc(a.Connectors, b.Connectors, func(x, y map[string][]string) bool {
			return maps.EqualFunc(x, y, slices.Equal)
		})
}

// checkIndex verifies that s's index is the one buildIndex would make, that
// its lists are well linked and that it points at the channels of s (not at
// stale copies).
func (s *State) checkIndex() error {
	ix := s.idx
	if ix == nil {
		return fmt.Errorf("state has no index")
	}
	if !ix.Equal(buildIndex(s)) {
		return fmt.Errorf("index %+v, rebuilt %+v", ix.form(), buildIndex(s).form())
	}
	if len(ix.links) != len(s.Channels) {
		return fmt.Errorf("%d links for %d channels", len(ix.links), len(s.Channels))
	}
	active := 0
	for _, c := range s.Channels {
		if c.Active {
			active++
		}
	}
	if ix.active != active {
		return fmt.Errorf("active count %d, %d active channels", ix.active, active)
	}
	if n := countPrimaries(s.Primaries); ix.primaries != n {
		return fmt.Errorf("primary count %d, %d targets with a primary", ix.primaries, n)
	}
	var ordered []string
	ix.order.Ascend(func(id string) bool { ordered = append(ordered, id); return true })
	if want := slices.Sorted(maps.Keys(ix.targets)); !slices.Equal(ordered, want) {
		return fmt.Errorf("ordered target ids %v, targets %v", ordered, want)
	}
	for id, t := range ix.targets {
		n := 0
		var prev *link
		for l := t.head; l != nil; prev, l = l, l.next {
			n++
			if l.prev != prev {
				return fmt.Errorf("target %s: bad back link at %s", id, l.c.ID)
			}
			if s.Channels[l.c.ID] != l.c || ix.links[l.c.ID] != l {
				return fmt.Errorf("target %s: channel %s is a stale copy", id, l.c.ID)
			}
			if prev != nil && compareChannels(prev.c, l.c) >= 0 {
				return fmt.Errorf("target %s: %s listed after %s", id, l.c.ID, prev.c.ID)
			}
		}
		if t.tail != prev || n != t.n {
			return fmt.Errorf("target %s: tail or count wrong (%d listed, count %d)", id, n, t.n)
		}
		if (t.connectors == nil) != (n <= 1) {
			return fmt.Errorf("target %s: %d channels, connector index made: %v", id, n, t.connectors != nil)
		}
		indexed := 0
		for _, set := range t.connectors {
			for cid, c := range set {
				if s.Channels[cid] != c || ix.links[cid] == nil || c.TargetID != id {
					return fmt.Errorf("target %s: connector index holds a stale channel %s", id, cid)
				}
			}
			indexed += len(set)
		}
		if t.connectors != nil && indexed != n {
			return fmt.Errorf("target %s: connector index holds %d channels of %d", id, indexed, n)
		}
	}
	for _, set := range ix.nodes {
		for id, c := range set {
			if s.Channels[id] != c {
				return fmt.Errorf("node index: channel %s is a stale copy", id)
			}
		}
	}
	return nil
}
