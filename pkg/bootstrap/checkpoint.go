package bootstrap

import (
	"context"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// CheckpointStore is the Checkpointer over capture's state collection (pkg/checkpoint). It resets
// the scope's checkpoint to start at the position's cluster time (whole seconds, rounded down:
// replaying up to a second more is harmless), or after its resume token when the server gave no
// cluster time. The reset also fences any capture holding the lease.
type CheckpointStore struct {
	Store *checkpoint.Store
}

// SetStart implements Checkpointer.
func (c CheckpointStore) SetStart(ctx context.Context, sc scope.Scope, start StartPosition, who string) error {
	var to checkpoint.ResetTo
	if !start.ClusterTime.IsZero() {
		to.StartAt = time.Unix(int64(start.ClusterTime.T), 0).UTC()
	} else {
		to.ResumeToken = start.ResumeToken
	}
	return c.Store.Reset(ctx, sc.ID(), to, who)
}
