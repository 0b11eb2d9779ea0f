package capture

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/metrics"
)

// The lease keeps one capture per scope. A run holds it for as long as it lives: a heartbeat
// renews it every LEASE_TTL/3, so a holder that dies (kill -9, out of memory, a Lambda timeout)
// blocks the scope for at most one TTL after its last renewal. A run never outlives its lease:
// its context ends when a renewal fails or is fenced, or when the lease comes within
// DEADLINE_MARGIN/2 (at least LEASE_TTL/10) of its expiry without a renewal; publishing stops there and the producer is
// aborted (see finish and the publisher slot), so a capture that lost its lease cannot put older
// versions behind a newer holder's in Kafka.

// leasePoll is how often a run waiting for a held lease tries again, so that a release by the
// holder is noticed within it; leaseSlack is added to the holder's expiry before trying, for the
// store's clock granularity (BSON dates have milliseconds).
const (
	leasePoll  = time.Second
	leaseSlack = 10 * time.Millisecond
)

// leaseGuard is how long before an unrenewed expiry a run stops: DEADLINE_MARGIN/2, and at least
// LEASE_TTL/10 so that a zero margin still leaves the abort some time. It stays under the
// LEASE_TTL*2/3 that a renewal every LEASE_TTL/3 leaves, given LEASE_TTL > DEADLINE_MARGIN.
func leaseGuard(margin, ttl time.Duration) time.Duration { return max(margin/2, ttl/10) }

// ErrLeaseExpiring ends a run whose lease came within the guard of its expiry unrenewed (the
// heartbeat could not renew it in time): the run stops before another capture may take over.
var ErrLeaseExpiring = errors.New("lease about to expire without a renewal")

// held is a run's hold on its scope's lease: the latest lease a renewal returned, and why it was
// lost, if it was. Its methods are safe for concurrent use (the heartbeat renews while the drain
// saves).
type held struct {
	deps  Deps
	guard time.Duration // the run stops this long before the lease expires

	mu     sync.Mutex
	lease  checkpoint.Lease
	lost   error // why the lease is no longer ours; nil while it is
	fenced bool  // lost to a takeover or reset: it must not be released
	cancel context.CancelCauseFunc
	stop   *time.Timer   // ends the run guard before the expiry
	done   chan struct{} // closed when the heartbeat exits
}

// takeLease acquires the scope's lease for the run. When another capture holds it until a time
// before the run's soft deadline, it waits for the lease to lapse (or to be released) and takes
// it over; otherwise it records the holder in the summary and returns a nil lease and no error.
func (r *run) takeLease(ctx context.Context) (*held, error) {
	scope, waitStart := r.opts.Scope.ID(), r.c.deps.Now()
	defer func() { r.sum.LeaseWaitMillis = r.c.deps.Now().Sub(waitStart).Milliseconds() }()
	for {
		lease, err := r.c.deps.Checkpoints.Acquire(ctx, scope, r.inv.Owner, r.opts.LeaseTTL)
		var busy *checkpoint.HeldError
		if !errors.As(err, &busy) {
			if err != nil {
				return nil, err
			}
			if r.sum.LeaseHeldBy != "" {
				r.c.deps.Logger.Info("took over the lease", "scope", scope, "from", r.sum.LeaseHeldBy)
			}
			return &held{deps: r.c.deps, lease: lease, guard: leaseGuard(r.opts.DeadlineMargin, r.opts.LeaseTTL)}, nil
		}
		if r.sum.LeaseHeldBy == "" {
			r.sum.LeaseHeldBy = err.Error()
			r.c.deps.Logger.Warn("lease held by another capture", "scope", scope, "error", err)
		}
		now := r.c.deps.Now()
		if !busy.ExpiresAt.Before(r.inv.Deadline.Add(-r.opts.DeadlineMargin)) {
			r.sum.StopReason = StopLeaseHeld
			r.sum.LeaseHeldBy = err.Error()
			r.metrics.Put("LeaseHeld", metrics.Count, 1)
			return nil, nil
		}
		wait := min(busy.ExpiresAt.Sub(now)+leaseSlack, leasePoll)
		if err := r.c.deps.Sleep(ctx, max(wait, leaseSlack)); err != nil {
			return nil, fmt.Errorf("waiting for the lease on %s: %w", scope, err)
		}
	}
}

// keep starts the heartbeat and returns the run's context, which ends when the lease is lost or
// about to expire unrenewed (context.Cause says which).
func (h *held) keep(parent context.Context) context.Context {
	ctx, cancel := context.WithCancelCause(parent)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cancel, h.done = cancel, make(chan struct{})
	if h.lease.ExpiresAt.IsZero() || h.lease.TTL <= 0 { // a store without expiry (tests)
		close(h.done)
		return ctx
	}
	h.stop = time.AfterFunc(h.untilStopLocked(), func() {
		h.lose(fmt.Errorf("%w at %s", ErrLeaseExpiring, h.expiresAt().UTC().Format(time.RFC3339Nano)), false)
	})
	go h.heartbeat(ctx, h.lease.TTL/3)
	return ctx
}

// heartbeat renews the lease every interval until ctx ends or a renewal fails.
func (h *held) heartbeat(ctx context.Context, interval time.Duration) {
	defer close(h.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		lease := h.lease
		h.mu.Unlock()
		renewed, err := h.deps.Checkpoints.Renew(ctx, lease)
		if err != nil {
			if ctx.Err() == nil {
				h.lose(fmt.Errorf("renew lease: %w", err), errors.Is(err, checkpoint.ErrFenced))
			}
			return
		}
		h.mu.Lock()
		h.lease = renewed
		h.stop.Reset(h.untilStopLocked())
		h.mu.Unlock()
	}
}

func (h *held) untilStopLocked() time.Duration {
	return h.lease.ExpiresAt.Add(-h.guard).Sub(h.deps.Now())
}

// lose records why the lease is no longer ours and ends the run's context at once.
func (h *held) lose(why error, fenced bool) {
	h.mu.Lock()
	if h.lost == nil {
		h.lost, h.fenced = why, fenced
	}
	cancel := h.cancel
	h.mu.Unlock()
	h.deps.Logger.Warn("lease lost: stopping", "error", why)
	if cancel != nil {
		cancel(why)
	}
}

func (h *held) expiresAt() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease.ExpiresAt
}

// lostErr is why the lease was lost, nil while it is held.
func (h *held) lostErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lost
}

// save moves the checkpoint under the lease. A fenced save loses the lease.
func (h *held) save(ctx context.Context, pos checkpoint.Position) error {
	h.mu.Lock()
	lease, lost := h.lease, h.lost
	h.mu.Unlock()
	if lost != nil {
		return lost
	}
	err := h.deps.Checkpoints.Save(ctx, lease, pos)
	if errors.Is(err, checkpoint.ErrFenced) {
		h.lose(err, true)
	}
	return err
}

// release stops the heartbeat and frees the lease so that the next capture need not wait for it
// to expire, unless it was taken over. It is called last, once the producer was flushed or
// aborted, so that the next holder cannot start while this run's messages may still move.
func (h *held) release(ctx context.Context) {
	h.mu.Lock()
	cancel, done := h.cancel, h.done
	h.mu.Unlock()
	if cancel != nil {
		cancel(context.Canceled)
		<-done
	}
	h.mu.Lock()
	lease, fenced := h.lease, h.fenced
	if h.stop != nil {
		h.stop.Stop()
	}
	h.mu.Unlock()
	if fenced {
		return
	}
	rctx, cancelRelease := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelRelease()
	if err := h.deps.Checkpoints.Release(rctx, lease); err != nil && !errors.Is(err, checkpoint.ErrFenced) {
		h.deps.Logger.Warn("release lease", "scope", lease.Scope, "error", err)
	}
}
