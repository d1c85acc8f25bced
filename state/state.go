package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/exchangekit/exchange/batch"
	"maps"
	"slices"
	"time"

	"github.com/exchangekit/exchange/command"
)

var (
	// ErrNotFound is returned for ops on a channel, target or batch that does
	// not exist.
	ErrNotFound = errors.New("state: not found")
	// ErrExists is returned when creating something whose id is taken.
	ErrExists = errors.New("state: already exists")
	// ErrInvalid is returned for malformed ops.
	ErrInvalid = errors.New("state: invalid op")
	// ErrSuperseded is returned for the registration of a stale connection
	// attempt: the same connector instance already has a channel of the
	// target from a later attempt (RegisterChannel, decision 0018).
	ErrSuperseded = errors.New("state: superseded by a later attempt of the same connector instance")
)

// Channel is a registered channel, as every node sees it.
type Channel struct {
	ID           string            `json:"id"`
	TargetID     string            `json:"targetId"`
	ConnectorID  string            `json:"connectorId,omitempty"`
	NodeID       string            `json:"nodeId"`
	Active       bool              `json:"active"`
	RegisteredAt time.Time         `json:"registeredAt"`
	Seq          uint64            `json:"seq"` // registration order, assigned by Apply
	Metadata     map[string]string `json:"metadata,omitempty"`
	// Instance and Attempt are what the connector's HELLO said of itself:
	// the id of its running instance (random per process run) and the
	// number of its connection attempt, growing with every attempt. Both are
	// empty/zero for connectors that do not send them. They order the
	// channels of one instance in a take-over (RegisterChannel).
	Instance string `json:"instance,omitempty"`
	Attempt  uint64 `json:"attempt,omitempty"`
}

// Primary is a target's primary channel. ChannelID is empty while the target
// has none. Epoch is the value of the State's epoch counter taken by the
// target's last primary change, so it only ever grows.
type Primary struct {
	ChannelID string `json:"channelId,omitempty"`
	Epoch     uint64 `json:"epoch"`
}

// State is the whole replicated state. Use NewState or Unmarshal; mutate only
// with Apply. Readers must not modify what they read.
type State struct {
	Channels map[string]*Channel `json:"channels"`
	// Primaries holds an entry for every target that has channels (and for
	// no other: a target's entry goes with its last channel).
	Primaries map[string]*Primary `json:"primaries"`
	// Seq is the last registration sequence number handed out.
	Seq uint64 `json:"seq"`
	// Epoch is the last primary epoch handed out. Every primary change of
	// any target takes the next value, so a target's epochs keep growing
	// even when it leaves (and its Primaries entry goes) and comes back.
	Epoch uint64 `json:"epoch"`

	batchState

	idx *index // derived from Channels; maintained by Apply, never serialised
}

// NewState returns an empty State.
func NewState() *State {
	s := &State{Channels: map[string]*Channel{}, Primaries: map[string]*Primary{}, idx: newIndex()}
	s.initBatches()
	return s
}

// EventKind names a change.
type EventKind string

// Event kinds.
const (
	ChannelRegistered   EventKind = "channel_registered"
	ChannelUnregistered EventKind = "channel_unregistered"
	PrimaryElected      EventKind = "primary_elected"
	PrimaryEvicted      EventKind = "primary_evicted"
	// StateRestored: the whole State was replaced (a raft snapshot was
	// restored); the event carries no ids, subscribers resync from View.
	StateRestored EventKind = "state_restored"
)

// Event describes one change made by Apply.
type Event struct {
	Kind      EventKind
	TargetID  string
	ChannelID string
	NodeID    string
	Epoch     uint64
	// BatchID is set on batch events, and Batch is the batch table's own
	// event, carried as it is: the batch runner gets batch events, typed,
	// never rebuilt from these fields.
	BatchID string
	Batch   *batch.Event
	// ReplacedBy is set on the ChannelUnregistered event of a channel taken
	// over by a newer channel of the same connector (RegisterChannel
	// TakeOver): the id of that newer channel.
	ReplacedBy string
}

// Op is one state change: exactly one field is set. Ops are JSON-encoded as
// raft log entries, so their fields must stay compatible across versions.
type Op struct {
	Register           *RegisterChannel    `json:"register,omitempty"`
	Unregister         *UnregisterChannel  `json:"unregister,omitempty"`
	SetPrimary         *SetPrimary         `json:"setPrimary,omitempty"`
	RemoveNodeChannels *RemoveNodeChannels `json:"removeNodeChannels,omitempty"`

	batchOps
}

// RegisterChannel adds a channel to the registry. The channel's ids and
// metadata must keep to the identity limits (command.CheckIdentity; its id
// and node id to command.CheckID): a registration that does not is refused
// with ErrInvalid, so nothing unbounded reaches the log's applied state.
//
// TakeOver, for a channel with a ConnectorID, makes the registration take
// over the target's other channels of that connector, in the same change:
// they are unregistered (their ChannelUnregistered events carry ReplacedBy),
// and if one of them was the target's primary, the new channel (when active)
// becomes primary with the next epoch, so the target never goes without a
// primary in between. Channels of other connectors keep their places. For an
// anonymous channel (ConnectorID empty) TakeOver does nothing.
//
// A stale attempt does not take over: when the channel carries an Instance
// and one of the channels it would take over has the same Instance and a
// higher Attempt, the connector has given up on this attempt and is
// connected through the later one, so the registration is refused with
// ErrSuperseded and changes nothing. Channels without an Instance, or of
// another instance, are taken over as above.
type RegisterChannel struct {
	Channel  Channel `json:"channel"`
	TakeOver bool    `json:"takeOver,omitempty"`
}

// UnregisterChannel removes a channel. Removing an unknown channel is a no-op,
// so a retried op is harmless.
type UnregisterChannel struct {
	ChannelID string `json:"channelId"`
}

// SetPrimary forces a target's primary (ChannelID empty: no primary). The
// channel must be registered for the target and active. Elections normally
// happen inside Apply; this op exists for operators moving the role by hand.
type SetPrimary struct {
	TargetID  string `json:"targetId"`
	ChannelID string `json:"channelId,omitempty"`
}

// RemoveNodeChannels removes every channel held by a node: the node died or
// restarted, and its channels died with it. UpToSeq, when set, spares the
// channels registered after it (Seq > UpToSeq): the raft leader removes a
// dead node's channels as of the state it read when it decided, so channels
// the node registered after coming back are kept.
type RemoveNodeChannels struct {
	NodeID  string `json:"nodeId"`
	UpToSeq uint64 `json:"upToSeq,omitempty"`
}

// Apply applies op to s and returns what changed. It is deterministic: it reads
// no clock and no randomness (times come inside the op). Registry ops cost
// O(what they change): the indexes find a target's, a node's and a
// connector's channels without a scan of the registry.
func (s *State) Apply(op Op) ([]Event, error) {
	if s.idx == nil { // a State not made by NewState or Unmarshal
		s.idx = buildIndex(s)
	}
	switch {
	case op.Register != nil:
		return s.register(op.Register.Channel, op.Register.TakeOver)
	case op.Unregister != nil:
		return s.unregister(op.Unregister.ChannelID), nil
	case op.SetPrimary != nil:
		return s.setPrimary(op.SetPrimary.TargetID, op.SetPrimary.ChannelID)
	case op.RemoveNodeChannels != nil:
		return s.removeNode(op.RemoveNodeChannels.NodeID, op.RemoveNodeChannels.UpToSeq), nil
	}
	if evs, ok, err := s.applyBatch(op); ok {
		return evs, err
	}
	return nil, fmt.Errorf("%w: no operation set", ErrInvalid)
}

func (s *State) register(c Channel, takeOver bool) ([]Event, error) {
	if c.ID == "" || c.TargetID == "" {
		return nil, fmt.Errorf("%w: register needs a channel id and a target id", ErrInvalid)
	}
	if err := checkChannel(&c); err != nil {
		return nil, fmt.Errorf("%w: register: %w", ErrInvalid, err)
	}
	if _, ok := s.Channels[c.ID]; ok { // before any take-over: a retried op changes nothing
		return nil, fmt.Errorf("register channel %s: %w", c.ID, ErrExists)
	}
	var (
		evs     []Event
		inherit bool // the new channel inherits the primary role of a channel it takes over
	)
	if takeOver && c.ConnectorID != "" {
		if newer := s.laterAttempt(c); newer != nil {
			return nil, fmt.Errorf("register channel %s (connector %s, instance %s, attempt %d): %w: channel %s is attempt %d",
				c.ID, c.ConnectorID, c.Instance, c.Attempt, ErrSuperseded, newer.ID, newer.Attempt)
		}
		evs, inherit = s.takeOver(c)
	}
	s.Seq++
	c.Seq = s.Seq
	if len(c.Metadata) == 0 {
		c.Metadata = nil // as a replica decoding the op has it; an empty map still costs its header
	} else {
		c.Metadata = maps.Clone(c.Metadata)
	}
	s.Channels[c.ID] = &c
	s.idx.add(&c)
	if evs == nil {
		evs = make([]Event, 0, 2) // registered, and (commonly) the target's first election
	}
	evs = append(evs, Event{Kind: ChannelRegistered, TargetID: c.TargetID, ChannelID: c.ID, NodeID: c.NodeID})
	if inherit && c.Active {
		evs = s.changePrimary(evs, c.TargetID, c.ID)
	}
	return s.elect(evs, c.TargetID), nil
}

// laterAttempt returns a channel of c's target and connector from the same
// instance as c and a later attempt, if there is one: c is then stale.
func (s *State) laterAttempt(c Channel) *Channel {
	if c.Instance == "" {
		return nil
	}
	t := s.idx.targets[c.TargetID]
	if t == nil {
		return nil
	}
	for _, old := range t.connectorChannels(c.ConnectorID) {
		if old.Instance == c.Instance && old.Attempt > c.Attempt {
			return old
		}
	}
	return nil
}

// takeOver unregisters the channels of c's target opened by c's connector,
// without electing (register elects once, after adding c). It reports
// whether one of them was the target's primary.
func (s *State) takeOver(c Channel) (evs []Event, wasPrimary bool) {
	t := s.idx.targets[c.TargetID]
	if t == nil {
		return nil, false
	}
	cur, _ := s.PrimaryOf(c.TargetID)
	for _, old := range t.connectorChannels(c.ConnectorID) {
		wasPrimary = wasPrimary || old.ID == cur
		s.removeChannel(old)
		evs = append(evs, Event{Kind: ChannelUnregistered, TargetID: old.TargetID, ChannelID: old.ID,
			NodeID: old.NodeID, ReplacedBy: c.ID})
	}
	return evs, wasPrimary
}

// checkChannel checks a channel to register against the identity limits. It
// is cheap (bounded by the limits) and deterministic.
func checkChannel(c *Channel) error {
	if err := command.CheckID("channel id", c.ID, command.MaxIDBytes); err != nil {
		return err
	}
	if c.NodeID != "" {
		if err := command.CheckID("nodeId", c.NodeID, command.MaxIDBytes); err != nil {
			return err
		}
	}
	if c.Instance != "" {
		if err := command.CheckID("instance", c.Instance, command.MaxIDBytes); err != nil {
			return err
		}
	}
	return command.CheckIdentity(c.ConnectorID, c.TargetID, c.Metadata)
}

func (s *State) unregister(id string) []Event {
	c, ok := s.Channels[id]
	if !ok {
		return nil
	}
	s.removeChannel(c)
	evs := make([]Event, 1, 2) // unregistered, and (commonly) the target's election
	evs[0] = Event{Kind: ChannelUnregistered, TargetID: c.TargetID, ChannelID: c.ID, NodeID: c.NodeID}
	return s.elect(evs, c.TargetID)
}

func (s *State) removeChannel(c *Channel) {
	delete(s.Channels, c.ID)
	s.idx.remove(c)
}

// removeNode removes all of a node's channels first, then elects once per
// affected target, so a target whose primary and runner-up both died with the
// node changes primary (and epoch) once, not once per channel.
func (s *State) removeNode(node string, upTo uint64) []Event {
	set := s.idx.nodes[node]
	if len(set) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(set))
	evs := make([]Event, 0, len(ids))
	targets := map[string]bool{}
	for _, id := range ids {
		c := s.Channels[id]
		if upTo > 0 && c.Seq > upTo {
			continue
		}
		s.removeChannel(c)
		targets[c.TargetID] = true
		evs = append(evs, Event{Kind: ChannelUnregistered, TargetID: c.TargetID, ChannelID: c.ID, NodeID: c.NodeID})
	}
	for _, t := range slices.Sorted(maps.Keys(targets)) {
		evs = s.elect(evs, t)
	}
	return evs
}

func (s *State) setPrimary(target, channelID string) ([]Event, error) {
	if target == "" {
		return nil, fmt.Errorf("%w: set primary needs a target id", ErrInvalid)
	}
	if channelID != "" {
		c, ok := s.Channels[channelID]
		if !ok || c.TargetID != target {
			return nil, fmt.Errorf("set primary of %s to %s: channel %w for that target", target, channelID, ErrNotFound)
		}
		if !c.Active {
			// Only an active channel is ever primary (Elect's rule): a
			// forced inactive one would be a primary no send may use.
			return nil, fmt.Errorf("%w: set primary of %s to %s: the channel is not active", ErrInvalid, target, channelID)
		}
	}
	return s.changePrimary(nil, target, channelID), nil
}

// elect applies Elect's decision for target, appending its event to evs;
// once the target's last channel is gone, it also drops the target's
// Primaries entry (the State's epoch counter, not the entry, keeps its
// epochs growing).
func (s *State) elect(evs []Event, target string) []Event {
	if next, change := Elect(s, target); change {
		evs = s.changePrimary(evs, target, next)
	}
	if s.idx.targets[target] == nil {
		if p := s.Primaries[target]; p != nil && p.ChannelID != "" {
			s.idx.primaries-- // not reached: a target without channels has no primary
		}
		delete(s.Primaries, target)
	}
	return evs
}

// changePrimary makes next target's primary, appending the change's event
// to evs; a change takes the next epoch.
func (s *State) changePrimary(evs []Event, target, next string) []Event {
	p := s.Primaries[target]
	if p == nil {
		if next == "" {
			return evs
		}
		p = &Primary{}
		s.Primaries[target] = p
	}
	if p.ChannelID == next {
		return evs
	}
	s.Epoch++
	switch {
	case p.ChannelID == "":
		s.idx.primaries++
	case next == "":
		s.idx.primaries--
	}
	p.ChannelID, p.Epoch = next, s.Epoch
	if next == "" {
		return append(evs, Event{Kind: PrimaryEvicted, TargetID: target, Epoch: p.Epoch})
	}
	return append(evs, Event{Kind: PrimaryElected, TargetID: target, ChannelID: next, NodeID: s.Channels[next].NodeID, Epoch: p.Epoch})
}

// Elect decides target's primary: it returns the channel that should be
// primary ("" for none) and whether that differs from the current one. It is
// pure: it only reads s. It looks at target's channels only, from the oldest
// registration up to the first active one.
func Elect(s *State, target string) (channelID string, change bool) {
	cur := ""
	if p := s.Primaries[target]; p != nil {
		cur = p.ChannelID
	}
	if c, ok := s.Channels[cur]; ok && c.Active && c.TargetID == target {
		return cur, false // sticky: a healthy primary keeps the role
	}
	next := ""
	if t := s.index().targets[target]; t != nil {
		if c := t.firstActive(); c != nil {
			next = c.ID
		}
	}
	return next, next != cur
}

// index returns s's index, or for a State that has none (one not made by
// NewState or Unmarshal, never applied to) a fresh one, without keeping it:
// readers must not modify s.
func (s *State) index() *index {
	if s.idx != nil {
		return s.idx
	}
	return buildIndex(s)
}

// TargetChannels returns target's channels, oldest registration first. It
// costs O(the target's channels).
func (s *State) TargetChannels(target string) []*Channel {
	t := s.index().targets[target]
	if t == nil {
		return nil
	}
	return s.AppendTargetChannels(make([]*Channel, 0, t.n), target)
}

// AppendTargetChannels appends target's channels to dst, in the order of
// TargetChannels, and returns the extended slice: TargetChannels for a
// caller that reads many targets into one slice.
func (s *State) AppendTargetChannels(dst []*Channel, target string) []*Channel {
	t := s.index().targets[target]
	if t == nil {
		return dst
	}
	for l := t.head; l != nil; l = l.next {
		dst = append(dst, l.c)
	}
	return dst
}

// Targets returns the ids of the targets that have at least one channel,
// sorted. It costs O(targets), whatever the number of channels.
func (s *State) Targets() []string {
	return s.TargetsAfter("", s.index().order.Len())
}

// TargetsAfter returns the ids of at most limit targets that have at least
// one channel, sorted, starting after the id after ("": from the first): a
// page of Targets. It costs O(log targets + limit).
func (s *State) TargetsAfter(after string, limit int) []string {
	if limit <= 0 {
		return nil
	}
	order := s.index().order
	out := make([]string, 0, min(limit, order.Len()))
	next := func(id string) bool {
		if id == after && after != "" {
			return true // AscendGreaterOrEqual starts at after itself
		}
		out = append(out, id)
		return len(out) < limit
	}
	if after == "" {
		order.Ascend(next)
	} else {
		order.AscendGreaterOrEqual(after, next)
	}
	return out
}

// Nodes returns the ids of the nodes that hold at least one channel,
// sorted. It costs O(nodes).
func (s *State) Nodes() []string {
	var out []string
	for node, set := range s.index().nodes {
		if len(set) > 0 {
			out = append(out, node)
		}
	}
	slices.Sort(out)
	return out
}

// NodeChannels returns the channels held by node, oldest registration first.
func (s *State) NodeChannels(node string) []*Channel {
	return sortedChannels(s.index().nodes[node])
}

// ConnectorChannels returns target's channels opened by connector (the
// channels of no connector for ""), oldest registration first.
func (s *State) ConnectorChannels(target, connector string) []*Channel {
	if t := s.index().targets[target]; t != nil {
		return t.connectorChannels(connector)
	}
	return nil
}

// ChannelCount returns the number of registered channels.
func (s *State) ChannelCount() int { return len(s.Channels) }

// TargetCount returns the number of targets that have at least one channel.
// It costs O(1), as do ChannelCount, ActiveChannelCount and PrimaryCount.
func (s *State) TargetCount() int { return len(s.index().targets) }

// reelectInvalidPrimaries gives a new election (Elect's, with the next
// epoch) to every target of a restored snapshot whose primary is not a
// registered active channel of its own: a snapshot this version writes has
// none, but one restored by an operator may say anything. Targets go in
// sorted order, so that every node restoring the same bytes hands out the
// same epochs.
func (s *State) reelectInvalidPrimaries() {
	var bad []string
	for target, p := range s.Primaries {
		if p.ChannelID == "" {
			continue
		}
		if c, ok := s.Channels[p.ChannelID]; !ok || c.TargetID != target || !c.Active {
			bad = append(bad, target)
		}
	}
	slices.Sort(bad)
	for _, target := range bad {
		next, _ := Elect(s, target)
		s.changePrimary(nil, target, next)
	}
}

// ActiveChannelCount returns the number of registered channels that are
// active.
func (s *State) ActiveChannelCount() int { return s.index().active }

// PrimaryCount returns the number of targets that have a primary channel.
func (s *State) PrimaryCount() int { return s.index().primaries }

// PrimaryOf returns target's primary channel id ("" if none) and epoch (0 for
// a target without channels).
func (s *State) PrimaryOf(target string) (string, uint64) {
	if p := s.Primaries[target]; p != nil {
		return p.ChannelID, p.Epoch
	}
	return "", 0
}

// Marshal encodes s for a snapshot. The indexes are not part of it.
func (s *State) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal decodes a snapshot made by Marshal, by this version or an older
// one, and rebuilds the indexes. A snapshot from before the global epoch
// counter gets its counter set to the highest epoch of its targets, and loses
// the Primaries entries of targets without channels (their epochs live on in
// the counter). A target whose primary is not a registered active channel of
// its own is elected again (reelectInvalidPrimaries).
func Unmarshal(b []byte) (*State, error) {
	s := NewState()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("state: decode snapshot: %w", err)
	}
	if s.Channels == nil {
		s.Channels = map[string]*Channel{}
	}
	if s.Primaries == nil {
		s.Primaries = map[string]*Primary{}
	}
	for id, c := range s.Channels {
		if c == nil {
			delete(s.Channels, id)
			continue
		}
		c.ID = id
		s.Seq = max(s.Seq, c.Seq)
	}
	s.idx = buildIndex(s)
	for target, p := range s.Primaries {
		if p == nil {
			delete(s.Primaries, target)
			continue
		}
		s.Epoch = max(s.Epoch, p.Epoch)
		if s.idx.targets[target] == nil {
			delete(s.Primaries, target)
		}
	}
	s.idx.primaries = countPrimaries(s.Primaries)
	s.reelectInvalidPrimaries()
	s.initBatches()
	return s, nil
}
