package capture

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// held is a run's hold on its scope's lease. Once a fenced write says the lease was taken over,
// it is lost: nothing more is saved or released with it.
type held struct {
	deps Deps

	mu    sync.Mutex
	lease checkpoint.Lease
	lost  error // why the lease is no longer ours; nil while it is
}

// acquire takes the scope's lease for owner (checkpoint.ErrLeaseHeld when another capture holds it).
func acquire(ctx context.Context, deps Deps, scope, owner string, ttl time.Duration) (*held, error) {
	lease, err := deps.Checkpoints.Acquire(ctx, scope, owner, ttl)
	if err != nil {
		return nil, err
	}
	return &held{deps: deps, lease: lease}, nil
}

func (h *held) expiresAt() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease.ExpiresAt
}

func (h *held) isLost() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lost != nil
}

// save moves the checkpoint under the lease.
func (h *held) save(ctx context.Context, pos checkpoint.Position) error {
	h.mu.Lock()
	lease, lost := h.lease, h.lost
	h.mu.Unlock()
	if lost != nil {
		return lost
	}
	err := h.deps.Checkpoints.Save(ctx, lease, pos)
	if errors.Is(err, checkpoint.ErrFenced) {
		h.mu.Lock()
		h.lost = err
		h.mu.Unlock()
	}
	return err
}

// release frees the lease so that the next capture need not wait for it to expire, unless it
// was lost.
func (h *held) release(ctx context.Context) {
	h.mu.Lock()
	lease, lost := h.lease, h.lost
	h.mu.Unlock()
	if lost != nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.deps.Checkpoints.Release(rctx, lease); err != nil {
		h.deps.Logger.Warn("release lease", "scope", lease.Scope, "error", err)
	}
}
