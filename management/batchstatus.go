package management

import (
	"cmp"
	"slices"

	"github.com/exchangekit/exchange/batch"
)

// batchStatuses are the statuses a batch can have, in lifecycle order.
var batchStatuses = []batch.Status{
	batch.StatusCreated, batch.StatusPending, batch.StatusInProgress, batch.StatusSucceeded, batch.StatusError,
}

// parseBatchStatus parses a status name, ignoring case.
func parseBatchStatus(name string) (batch.Status, bool) {
	s, err := batch.ParseStatus(name)
	return s, err == nil
}

func batchStatusNames() []string {
	out := make([]string, 0, len(batchStatuses))
	for _, s := range batchStatuses {
		out = append(out, s.String())
	}
	return out
}

func sortTargets(ts []Target) {
	slices.SortFunc(ts, func(a, b Target) int { return cmp.Compare(a.ID, b.ID) })
}
