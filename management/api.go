package management

import (
	"context"

	"github.com/exchangekit/exchange/batch"
	"github.com/exchangekit/exchange/command"
	"github.com/exchangekit/exchange/controller"
)

// Exchange is what the management API reads and drives on the controller.
// *controller.Controller satisfies it. Every method must be safe for
// concurrent use.
type Exchange interface {
	// Channels returns every registered channel of the cluster.
	Channels() []controller.ChannelInfo
	// Channel returns one channel by id.
	Channel(id string) (controller.ChannelInfo, bool)
	// Targets returns every target.
	Targets() []controller.TargetInfo
	// Target returns one target by id.
	Target(id string) (controller.TargetInfo, bool)
	// SendVia sends cmd to a channel of the target (its primary only, with
	// primaryOnly) and returns its reply and the channel chosen (see
	// controller.Controller.SendVia).
	SendVia(ctx context.Context, targetID string, cmd *command.Command, primaryOnly bool) (*command.Reply, controller.Route, error)
	// Cluster describes the cluster as this node sees it.
	Cluster() controller.ClusterInfo
}

// targetIDLister is implemented by an Exchange that lists the ids of its
// targets (those with at least one channel) a page at a time, sorted, without
// building them; *controller.Controller does, in O(log targets + limit). GET
// /exchange/targets then reads only the ids and targets of the page it
// returns, whatever the size of the registry.
type targetIDLister interface {
	// TargetIDsAfter returns at most limit ids, sorted, after the id after
	// ("": from the first).
	TargetIDsAfter(after string, limit int) []string
}

// targetsReader is implemented by an Exchange that reads several targets at
// once, as Target reads one; *controller.Controller does, in a few reads of
// its state for a whole page. Pages of targets and channels then cost that,
// not a read per target.
type targetsReader interface {
	// TargetsOf returns the targets among ids that have at least one
	// channel, in the order of ids.
	TargetsOf(ids []string) []controller.TargetInfo
}

// Batches is what the management API reads and drives of the batch runner.
// Every method must be safe for concurrent use.
type Batches interface {
	// ExecuteBatch validates and stores b (durably, with the raft-backed
	// store) and returns at once; the runner delivers it in the background.
	// It fails with batch.ErrExists for a duplicate id and
	// *batch.ValidationError for bad input.
	ExecuteBatch(ctx context.Context, b batch.Batch) (batch.Batch, error)
	// GetBatch returns one batch, or batch.ErrNotFound.
	GetBatch(id string) (batch.Batch, error)
	// ListBatches returns the batches matching f.
	ListBatches(f batch.Filter) []batch.Batch
	// DeleteBatch removes batch id whatever its status, which cancels it if
	// it has not finished; an error wrapping batch.ErrNotFound if there is
	// none.
	DeleteBatch(ctx context.Context, id string) error
}

// batchPager is implemented by Batches that read a page of batches without
// reading them all (*batch.Runner): the listings of batches then cost a
// page, whatever the number of batches stored.
type batchPager interface {
	// ListBatchesPage returns at most limit batches that match f, ordered
	// by creation time then id, after the position after (nil: from the
	// first).
	ListBatchesPage(f batch.Filter, after *batch.Position, limit int) []batch.Batch
}

// The controller and the batch runner are what New is normally given.
var (
	_ Exchange = (*controller.Controller)(nil)
	_ Batches  = (*batch.Runner)(nil)
)
