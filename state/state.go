package state

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

var (
	// ErrNotFound is returned for ops on a channel, target or batch that does
	// not exist.
	ErrNotFound = errors.New("state: not found")
	// ErrExists is returned when creating something whose id is taken.
	ErrExists = errors.New("state: already exists")
	// ErrInvalid is returned for malformed ops.
	ErrInvalid = errors.New("state: invalid op")
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
}

// Primary is a target's primary channel. ChannelID is empty while the target
// has none; Epoch is kept so that it only ever grows.
type Primary struct {
	ChannelID string `json:"channelId,omitempty"`
	Epoch     uint64 `json:"epoch"`
}

// State is the whole replicated state. Use NewState; mutate only with Apply.
// Readers must not modify what they read.
type State struct {
	Channels  map[string]*Channel `json:"channels"`
	Primaries map[string]*Primary `json:"primaries"`
	// Seq is the last registration sequence number handed out.
	Seq uint64 `json:"seq"`

	batchState
}

// NewState returns an empty State.
func NewState() *State {
	s := &State{Channels: map[string]*Channel{}, Primaries: map[string]*Primary{}}
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
	// BatchID is set on batch events.
	BatchID string
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

// RegisterChannel adds a channel to the registry.
type RegisterChannel struct {
	Channel Channel `json:"channel"`
}

// UnregisterChannel removes a channel. Removing an unknown channel is a no-op,
// so a retried op is harmless.
type UnregisterChannel struct {
	ChannelID string `json:"channelId"`
}

// SetPrimary forces a target's primary (ChannelID empty: no primary). The
// channel must be registered for the target. Elections normally happen inside
// Apply; this op exists for operators moving the role by hand.
type SetPrimary struct {
	TargetID  string `json:"targetId"`
	ChannelID string `json:"channelId,omitempty"`
}

// RemoveNodeChannels removes every channel held by a node: the node died or
// restarted, and its channels died with it.
type RemoveNodeChannels struct {
	NodeID string `json:"nodeId"`
}

// Apply applies op to s and returns what changed. It is deterministic: it reads
// no clock and no randomness (times come inside the op).
func (s *State) Apply(op Op) ([]Event, error) {
	switch {
	case op.Register != nil:
		return s.register(op.Register.Channel)
	case op.Unregister != nil:
		return s.unregister(op.Unregister.ChannelID), nil
	case op.SetPrimary != nil:
		return s.setPrimary(op.SetPrimary.TargetID, op.SetPrimary.ChannelID)
	case op.RemoveNodeChannels != nil:
		return s.removeNode(op.RemoveNodeChannels.NodeID), nil
	}
	if evs, ok, err := s.applyBatch(op); ok {
		return evs, err
	}
	return nil, fmt.Errorf("%w: no operation set", ErrInvalid)
}

func (s *State) register(c Channel) ([]Event, error) {
	if c.ID == "" || c.TargetID == "" {
		return nil, fmt.Errorf("%w: register needs a channel id and a target id", ErrInvalid)
	}
	if _, ok := s.Channels[c.ID]; ok {
		return nil, fmt.Errorf("register channel %s: %w", c.ID, ErrExists)
	}
	s.Seq++
	c.Seq = s.Seq
	c.Metadata = maps.Clone(c.Metadata)
	s.Channels[c.ID] = &c
	evs := []Event{{Kind: ChannelRegistered, TargetID: c.TargetID, ChannelID: c.ID, NodeID: c.NodeID}}
	return append(evs, s.elect(c.TargetID)...), nil
}

func (s *State) unregister(id string) []Event {
	c, ok := s.Channels[id]
	if !ok {
		return nil
	}
	delete(s.Channels, id)
	evs := []Event{{Kind: ChannelUnregistered, TargetID: c.TargetID, ChannelID: c.ID, NodeID: c.NodeID}}
	return append(evs, s.elect(c.TargetID)...)
}

// removeNode removes all of a node's channels first, then elects once per
// affected target, so a target whose primary and runner-up both died with the
// node changes primary (and epoch) once, not once per channel.
func (s *State) removeNode(node string) []Event {
	var evs []Event
	targets := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(s.Channels)) {
		c := s.Channels[id]
		if c.NodeID != node {
			continue
		}
		delete(s.Channels, id)
		targets[c.TargetID] = true
		evs = append(evs, Event{Kind: ChannelUnregistered, TargetID: c.TargetID, ChannelID: c.ID, NodeID: c.NodeID})
	}
	for _, t := range slices.Sorted(maps.Keys(targets)) {
		evs = append(evs, s.elect(t)...)
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
	}
	return s.changePrimary(target, channelID), nil
}

// elect applies Elect's decision for target.
func (s *State) elect(target string) []Event {
	next, change := Elect(s, target)
	if !change {
		return nil
	}
	return s.changePrimary(target, next)
}

func (s *State) changePrimary(target, next string) []Event {
	p := s.Primaries[target]
	if p == nil {
		p = &Primary{}
		s.Primaries[target] = p
	}
	if p.ChannelID == next {
		return nil
	}
	p.ChannelID = next
	p.Epoch++
	if next == "" {
		return []Event{{Kind: PrimaryEvicted, TargetID: target, Epoch: p.Epoch}}
	}
	return []Event{{Kind: PrimaryElected, TargetID: target, ChannelID: next, NodeID: s.Channels[next].NodeID, Epoch: p.Epoch}}
}

// Elect decides target's primary: it returns the channel that should be
// primary ("" for none) and whether that differs from the current one. It is
// pure: it only reads s.
func Elect(s *State, target string) (channelID string, change bool) {
	cur := ""
	if p := s.Primaries[target]; p != nil {
		cur = p.ChannelID
	}
	if c, ok := s.Channels[cur]; ok && c.Active && c.TargetID == target {
		return cur, false // sticky: a healthy primary keeps the role
	}
	var best *Channel
	for _, c := range s.Channels {
		if c.TargetID != target || !c.Active {
			continue
		}
		if best == nil || c.Seq < best.Seq || (c.Seq == best.Seq && c.ID < best.ID) {
			best = c
		}
	}
	next := ""
	if best != nil {
		next = best.ID
	}
	return next, next != cur
}

// TargetChannels returns target's channels, oldest registration first.
func (s *State) TargetChannels(target string) []*Channel {
	var out []*Channel
	for _, c := range s.Channels {
		if c.TargetID == target {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *Channel) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// Targets returns the ids of the targets that have at least one channel, sorted.
func (s *State) Targets() []string {
	seen := map[string]bool{}
	for _, c := range s.Channels {
		seen[c.TargetID] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// PrimaryOf returns target's primary channel id ("" if none) and epoch.
func (s *State) PrimaryOf(target string) (string, uint64) {
	if p := s.Primaries[target]; p != nil {
		return p.ChannelID, p.Epoch
	}
	return "", 0
}

// Marshal encodes s for a snapshot.
func (s *State) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal decodes a snapshot made by Marshal.
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
	s.initBatches()
	return s, nil
}
