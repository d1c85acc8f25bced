package batch

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/btree"
)

// Table holds the batches of the replicated state, with indexes by target
// (creation order), key and status, and in the listings' order (creation
// time, then id: Page) overall and per status. It changes only through Apply, which is
// deterministic: the same ops in the same order give the same Table on every
// node, and a Table restored from its JSON behaves exactly like the one that
// was encoded.
//
// A Table is not safe for concurrent use; the store that holds it serialises
// Apply and readers. The zero Table is empty and ready to use.
type Table struct {
	seq      uint64                           // last creation sequence number handed out
	byID     map[string]*entry                // every batch
	byTarget map[string][]*entry              // target → batches, creation order
	open     map[string][]*entry              // target → unfinished batches, creation order
	byKey    map[string][]*entry              // key → batches, creation order
	byStatus map[Status]*btree.BTreeG[*entry] // status → batches, listing order (byListing)
	listing  *btree.BTreeG[*entry]            // every batch, listing order: pages of the listing (Page)
	ended    []*entry                         // terminal batches by (UpdatedAt, seq): retention order
}

// cmpListing is the order of the API's listings: creation time, then id.
func cmpListing(a, b *entry) int {
	return cmp.Or(a.b.CreatedAt.Compare(b.b.CreatedAt), strings.Compare(a.b.ID, b.b.ID))
}

func byListing(a, b *entry) bool { return cmpListing(a, b) < 0 }

// listingDegree is the degree of the listing's B-trees (nodes of up to 63
// entries), as the state's ordered index of targets.
const listingDegree = 32

func newListing() *btree.BTreeG[*entry] { return btree.NewG(listingDegree, byListing) }

// entry is one stored batch and its creation sequence number.
type entry struct {
	seq uint64
	b   Batch
}

// NewTable returns an empty Table.
func NewTable() *Table {
	t := &Table{}
	t.init()
	return t
}

func (t *Table) init() {
	if t.byID != nil {
		return
	}
	t.byID = map[string]*entry{}
	t.byTarget = map[string][]*entry{}
	t.open = map[string][]*entry{}
	t.byKey = map[string][]*entry{}
	t.byStatus = map[Status]*btree.BTreeG[*entry]{}
	t.listing = newListing()
}

// Len returns the number of batches.
func (t *Table) Len() int { return len(t.byID) }

// Get returns a copy of batch id.
func (t *Table) Get(id string) (Batch, bool) {
	e, ok := t.byID[id]
	if !ok {
		return Batch{}, false
	}
	return e.b.Clone(), true
}

// Filter selects batches. Zero fields match everything; set fields must all
// match (each batch is tested on its own: there is no grouping by target).
type Filter struct {
	Status   Status
	TargetID string
	Key      string
}

func (f Filter) match(b *Batch) bool {
	return (f.Status == 0 || b.Status == f.Status) &&
		(f.TargetID == "" || b.TargetID == f.TargetID) &&
		(f.Key == "" || b.Key == f.Key)
}

// Position is where a page of batches starts: after the batch created at
// CreatedAt with id ID, in the order of the listings (creation time, then
// id). An ID of "" is before every batch created at CreatedAt.
type Position struct {
	CreatedAt time.Time
	ID        string
}

// Page returns copies of at most limit batches that match f, in the order of
// the listings (creation time, then id), after the position after (from the
// first when nil). Its cost does not grow with the table: it reads the
// batches it returns and those it passes over, from after on, in the
// batches of f's target or key when f names one, else of f's status, else
// of the whole table.
func (t *Table) Page(f Filter, after *Position, limit int) []Batch {
	out := []Batch{}
	if limit <= 0 {
		return out
	}
	var pivot *entry
	if after != nil {
		pivot = &entry{b: Batch{CreatedAt: after.CreatedAt, ID: after.ID}}
	}
	take := func(e *entry) bool {
		if pivot != nil && !byListing(pivot, e) {
			return true // at or before the position: skipped
		}
		if f.match(&e.b) {
			out = append(out, e.b.Clone())
		}
		return len(out) < limit
	}
	es, ok := t.named(f)
	if !ok {
		tree := t.listing
		if f.Status != 0 {
			tree = t.byStatus[f.Status]
		}
		if tree == nil {
			return out
		}
		if pivot == nil {
			tree.Ascend(take)
		} else {
			tree.AscendGreaterOrEqual(pivot, take)
		}
		return out
	}
	// A target's or a key's batches, in creation order: in the listing's
	// order (take skips those up to the position).
	es = slices.Clone(es)
	slices.SortFunc(es, cmpListing)
	for _, e := range es {
		if !take(e) {
			break
		}
	}
	return out
}

// named returns the batches of f's target, else of f's key, in creation
// order; ok is false when f names neither.
func (t *Table) named(f Filter) (es []*entry, ok bool) {
	switch {
	case f.TargetID != "":
		return t.byTarget[f.TargetID], true
	case f.Key != "":
		return t.byKey[f.Key], true
	}
	return nil, false
}

// List returns copies of the batches that match f, oldest first.
func (t *Table) List(f Filter) []Batch {
	es, ok := t.named(f)
	switch {
	case ok:
	case f.Status != 0:
		if m := t.byStatus[f.Status]; m != nil {
			m.Ascend(func(e *entry) bool { es = append(es, e); return true })
		}
		slices.SortFunc(es, bySeq)
	default:
		es = t.all()
	}
	out := []Batch{}
	for _, e := range es {
		if f.match(&e.b) {
			out = append(out, e.b.Clone())
		}
	}
	return out
}

func bySeq(a, b *entry) int { return cmp.Compare(a.seq, b.seq) }

// byEnd orders terminal batches for retention.
func byEnd(a, b *entry) int {
	if c := a.b.UpdatedAt.Compare(b.b.UpdatedAt); c != 0 {
		return c
	}
	return bySeq(a, b)
}

// all returns every entry, creation order.
func (t *Table) all() []*entry {
	es := make([]*entry, 0, len(t.byID))
	for _, e := range t.byID {
		es = append(es, e)
	}
	slices.SortFunc(es, bySeq)
	return es
}

// heads returns, for every target with unfinished batches, its oldest one:
// the only batch of the target that may run. Oldest head first.
func (t *Table) heads() []*entry {
	hs := make([]*entry, 0, len(t.open))
	for _, es := range t.open {
		hs = append(hs, es[0])
	}
	slices.SortFunc(hs, bySeq)
	return hs
}

// expired returns up to limit ids of terminal batches that ended at or
// before cutoff, and when the first one left ended (zero if none is left).
func (t *Table) expired(cutoff time.Time, limit int) (ids []string, next time.Time) {
	for _, e := range t.ended {
		if e.b.UpdatedAt.After(cutoff) {
			return ids, e.b.UpdatedAt
		}
		if len(ids) == limit {
			return ids, e.b.UpdatedAt
		}
		ids = append(ids, e.b.ID)
	}
	return ids, time.Time{}
}

// Apply applies op and returns what changed. It is deterministic: it reads no
// clock and no randomness (times and delays travel inside the op). A failing
// op changes nothing.
func (t *Table) Apply(op Op) ([]Event, error) {
	t.init()
	switch {
	case op.Create != nil:
		return t.create(op.Create.Batch)
	case op.Start != nil:
		return t.start(op.Start)
	case op.Result != nil:
		return t.update(op.Result.ID, "record result", func(b *Batch) error { return b.result(*op.Result) })
	case op.Finish != nil:
		return t.update(op.Finish.ID, "finish attempt", func(b *Batch) error { return b.finishOp(*op.Finish) })
	case op.Reset != nil:
		return t.reset(op.Reset), nil
	case op.Delete != nil:
		return t.delete(op.Delete.ID)
	}
	return nil, fmt.Errorf("%w: no batch operation set", ErrInvalid)
}

func (t *Table) create(b Batch) ([]Event, error) {
	if err := validateStored(&b); err != nil {
		return nil, fmt.Errorf("create batch %q: %w", b.ID, err)
	}
	if _, ok := t.byID[b.ID]; ok {
		return nil, fmt.Errorf("create batch %s: %w", b.ID, ErrExists)
	}
	// Copy what the op holds: the table must not share memory with it.
	cmds := make([]Command, len(b.Commands))
	for i, c := range b.Commands {
		cmds[i] = Command{Command: normCommand(c.Command), Status: StatusPending}
	}
	b.Commands = cmds
	b.MaxRetry = new(*b.MaxRetry)
	b.Error, b.Retry, b.Attempts = "", 0, 0
	b.LastRetryAt, b.NextAttemptAt = time.Time{}, time.Time{}
	b.CreatedAt, b.UpdatedAt = norm(b.CreatedAt), norm(b.UpdatedAt)
	t.seq++
	t.insert(&entry{seq: t.seq, b: b})
	return []Event{{Kind: EventCreated, BatchID: b.ID, TargetID: b.TargetID, Status: b.Status}}, nil
}

func (t *Table) start(op *StartAttempt) ([]Event, error) {
	e, ok := t.byID[op.ID]
	if !ok {
		return nil, fmt.Errorf("start batch %s: %w", op.ID, ErrNotFound)
	}
	if open := t.open[e.b.TargetID]; len(open) > 0 && open[0] != e {
		return nil, fmt.Errorf("start batch %s: %w: batch %s of target %q is older and not finished",
			op.ID, ErrConflict, open[0].b.ID, e.b.TargetID)
	}
	return t.update(op.ID, "start", func(b *Batch) error { return b.start(op.Now) })
}

// update applies fn to batch id in place and fixes the indexes. The
// transitions check everything before they change anything, so a failing fn
// leaves the batch as it was. It returns the events of the status change.
func (t *Table) update(id, what string, fn func(*Batch) error) ([]Event, error) {
	e, ok := t.byID[id]
	if !ok {
		return nil, fmt.Errorf("%s for batch %s: %w", what, id, ErrNotFound)
	}
	old := e.b.Status
	if err := fn(&e.b); err != nil {
		return nil, err
	}
	return t.changed(e, old), nil
}

// changed fixes the indexes after e's status changed from old, and returns
// the event the change makes.
func (t *Table) changed(e *entry, old Status) []Event {
	b := &e.b
	if old == b.Status {
		return nil
	}
	if m := t.byStatus[old]; m != nil {
		m.Delete(e)
		if m.Len() == 0 {
			delete(t.byStatus, old)
		}
	}
	t.indexStatus(e)
	ev := Event{BatchID: b.ID, TargetID: b.TargetID, Status: b.Status}
	switch {
	case b.Status.Terminal():
		t.open[b.TargetID] = removeEntry(t.open[b.TargetID], e)
		if len(t.open[b.TargetID]) == 0 {
			delete(t.open, b.TargetID)
		}
		t.ended = insertSorted(t.ended, e, byEnd)
		ev.Kind = EventTerminal
	case b.Status == StatusPending:
		ev.Kind = EventPending
	case b.Status == StatusInProgress:
		ev.Kind = EventStarted
	default:
		return nil
	}
	return []Event{ev}
}

func (t *Table) reset(op *ResetInProgress) []Event {
	var es []*entry
	if op.ID != "" {
		if e, ok := t.byID[op.ID]; ok {
			es = append(es, e)
		}
	} else {
		if m := t.byStatus[StatusInProgress]; m != nil {
			m.Ascend(func(e *entry) bool { es = append(es, e); return true })
		}
		slices.SortFunc(es, bySeq)
	}
	var evs []Event
	for _, e := range es {
		old := e.b.Status
		if e.b.reset(op.Now) {
			evs = append(evs, t.changed(e, old)...)
		}
	}
	return evs
}

func (t *Table) delete(id string) ([]Event, error) {
	e, ok := t.byID[id]
	if !ok {
		return nil, fmt.Errorf("delete batch %s: %w", id, ErrNotFound)
	}
	t.remove(e)
	return []Event{{Kind: EventDeleted, BatchID: id, TargetID: e.b.TargetID, Status: e.b.Status}}, nil
}

func (t *Table) insert(e *entry) {
	b := &e.b
	t.byID[b.ID] = e
	t.listing.ReplaceOrInsert(e)
	t.byTarget[b.TargetID] = insertSorted(t.byTarget[b.TargetID], e, bySeq)
	if b.Key != "" {
		t.byKey[b.Key] = insertSorted(t.byKey[b.Key], e, bySeq)
	}
	t.indexStatus(e)
	if b.Status.Terminal() {
		t.ended = insertSorted(t.ended, e, byEnd)
	} else {
		t.open[b.TargetID] = insertSorted(t.open[b.TargetID], e, bySeq)
	}
}

func (t *Table) remove(e *entry) {
	b := &e.b
	delete(t.byID, b.ID)
	t.listing.Delete(e)
	removeFrom(t.byTarget, b.TargetID, e)
	if b.Key != "" {
		removeFrom(t.byKey, b.Key, e)
	}
	t.unindexStatus(e)
	if b.Status.Terminal() {
		t.ended = removeEntry(t.ended, e)
	} else {
		removeFrom(t.open, b.TargetID, e)
	}
}

func (t *Table) indexStatus(e *entry) {
	m := t.byStatus[e.b.Status]
	if m == nil {
		m = newListing()
		t.byStatus[e.b.Status] = m
	}
	m.ReplaceOrInsert(e)
}

func (t *Table) unindexStatus(e *entry) {
	if m := t.byStatus[e.b.Status]; m != nil {
		m.Delete(e)
		if m.Len() == 0 {
			delete(t.byStatus, e.b.Status)
		}
	}
}

// insertSorted inserts e into s, kept sorted by less. New entries almost
// always go last, so the search starts there.
func insertSorted(s []*entry, e *entry, less func(a, b *entry) int) []*entry {
	if n := len(s); n == 0 || less(s[n-1], e) < 0 {
		return append(s, e)
	}
	i, _ := slices.BinarySearchFunc(s, e, less)
	return slices.Insert(s, i, e)
}

// removeEntry removes e from s. Removing the first entry (the usual case:
// the oldest batch ends or expires first) costs O(1).
func removeEntry(s []*entry, e *entry) []*entry {
	i := slices.Index(s, e)
	switch {
	case i < 0:
		return s
	case i == 0:
		s[0] = nil
		return s[1:]
	}
	return slices.Delete(s, i, i+1)
}

func removeFrom(m map[string][]*entry, k string, e *entry) {
	s := removeEntry(m[k], e)
	if len(s) == 0 {
		delete(m, k)
		return
	}
	m[k] = s
}

// tableJSON is the snapshot form of a Table: the batches in creation order,
// each with its sequence number, and the last number handed out. The indexes
// are rebuilt on decoding.
type tableJSON struct {
	Seq     uint64      `json:"seq"`
	Batches []entryJSON `json:"batches"`
}

type entryJSON struct {
	Seq   uint64 `json:"seq"`
	Batch Batch  `json:"batch"`
}

// MarshalJSON encodes t for a snapshot.
func (t *Table) MarshalJSON() ([]byte, error) {
	w := tableJSON{Seq: t.seq, Batches: make([]entryJSON, 0, len(t.byID))}
	for _, e := range t.all() {
		w.Batches = append(w.Batches, entryJSON{Seq: e.seq, Batch: e.b})
	}
	return json.Marshal(w)
}

// UnmarshalJSON replaces t with a Table encoded by MarshalJSON.
func (t *Table) UnmarshalJSON(b []byte) error {
	var w tableJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("batch: decode table: %w", err)
	}
	n := Table{seq: w.Seq}
	n.init()
	for i, it := range w.Batches {
		switch {
		case it.Batch.ID == "":
			return fmt.Errorf("batch: decode table: entry %d has no id", i)
		case n.byID[it.Batch.ID] != nil:
			return fmt.Errorf("batch: decode table: batch %s appears twice", it.Batch.ID)
		case !it.Batch.Status.valid():
			return fmt.Errorf("batch: decode table: batch %s has no valid status", it.Batch.ID)
		case it.Seq == 0 || it.Seq > w.Seq || (i > 0 && it.Seq <= w.Batches[i-1].Seq):
			return fmt.Errorf("batch: decode table: batch %s is out of sequence", it.Batch.ID)
		}
		n.insert(&entry{seq: it.Seq, b: it.Batch})
	}
	*t = n
	return nil
}
