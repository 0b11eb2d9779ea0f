package reliability

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// One capture per scope: the lease and its fencing counter.

// TestTwoCapturesRace starts a second capture on the scope while the first holds the lease.
func TestTwoCapturesRace(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.write(5)
	acquired, proceed, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var first capture.Summary
	var firstErr error
	go func() {
		defer close(done)
		first, firstErr = h.captureAs("capture-A", func(d capture.Deps, c *crash) capture.Deps {
			d.Checkpoints = hookedCheckpoints{Checkpoints: d.Checkpoints, crash: c, acquired: func(checkpoint.Lease) {
				close(acquired)
				<-proceed // hold the lease until the second capture has tried
			}}
			return d
		})
	}()
	<-acquired
	second, err := h.captureAs("capture-B", nil)
	close(proceed)
	<-done
	// capture-A froze right after acquiring (it never renewed): capture-B waits for that lease
	// to lapse, takes the scope over and captures everything; capture-A, resumed, finds its lease
	// gone and publishes nothing.
	if err != nil || second.Events != 90 || second.LeaseWaitMillis == 0 || !strings.Contains(second.LeaseHeldBy, "capture-A") {
		t.Fatalf("second capture: stop %q, %d events, waited %d ms for the lease held by %q, error %v; want a takeover naming capture-A and 90 events",
			second.StopReason, second.Events, second.LeaseWaitMillis, second.LeaseHeldBy, err)
	}
	if first.Messages != 0 {
		t.Fatalf("first capture published %d messages after losing its lease (error %v), want 0", first.Messages, firstErr)
	}
	t.Logf("first capture, resumed after the takeover: stop %q, error %v", first.StopReason, firstErr)
	h.settle()
	l := h.account()
	record(t, "two captures race on one scope",
		"the first freezes after acquiring; the second waits for its lease to lapse, takes over and captures everything; the first, resumed, publishes nothing", l)
}

// TestLeaseExpiresWhileHolderRuns stalls a capture past its lease TTL, lets another capture take
// the scope over and finish, then lets the stale one continue.
func TestLeaseExpiresWhileHolderRuns(t *testing.T) {
	h := newHarness(t, harnessOptions{LeaseTTL: time.Second})
	h.write(5)
	stalled, resume, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var staleErr error
	go func() {
		defer close(done)
		_, staleErr = h.captureAs("stale-holder", func(d capture.Deps, c *crash) capture.Deps {
			d.Checkpoints = frozenRenewals{Checkpoints: d.Checkpoints, frozen: stalled, resume: resume}
			d.Publisher = hookedPublisher{Publisher: d.Publisher, crash: c, before: func(n int, _ capture.Batch) error {
				if n == 10 {
					close(stalled)
					<-resume // a long GC pause, a frozen container, a network stall
				}
				return nil
			}}
			return d
		})
	}()
	<-stalled
	waitForLong(t, "the stale holder's lease to expire", 10*time.Second, func() bool {
		st := h.checkpoint()
		return st.Lease != nil && time.Now().After(st.Lease.ExpiresAt.Add(50*time.Millisecond))
	})
	next, err := h.captureAs("new-holder", nil)
	if err != nil || next.Events != 90 || !next.CheckpointSaved {
		t.Fatalf("capture after the lease expired: %d events, saved %t, error %v; want 90, true, nil", next.Events, next.CheckpointSaved, err)
	}
	taken := h.checkpoint().ResumeToken
	close(resume)
	<-done
	// The frozen holder stops on its own at its unrenewed lease's expiry, or is fenced at its
	// first renewal or save after the takeover: either way it never moves the checkpoint again.
	if !errors.Is(staleErr, checkpoint.ErrFenced) && !errors.Is(staleErr, capture.ErrLeaseExpiring) {
		t.Fatalf("stale holder returned %v, want checkpoint.ErrFenced or capture.ErrLeaseExpiring", staleErr)
	}
	if !bytes.Equal(h.checkpoint().ResumeToken, taken) {
		t.Fatal("the stale holder moved the checkpoint after losing its lease")
	}
	t.Logf("stale holder: %v", staleErr)
	h.settle()
	l := h.account()
	// A run stops before its unrenewed lease expires and refuses to publish after that: after
	// the takeover the stale holder has published nothing more than its 9 messages from before
	// the stall (the 10th, the one it stalled on, is refused).
	if l.Republished != 9 {
		t.Errorf("%d copies in Kafka, want the stale holder's 9 from before its stall", l.Republished)
	}
	record(t, "a capture stalls past its lease TTL while another takes over",
		"the new holder captures everything; the frozen holder stops at its unrenewed lease's expiry (ErrLeaseExpiring) or is fenced (ErrFenced): the checkpoint stays where the new holder put it", l)
}

// frozenRenewals stands for a frozen process: once frozen is closed, Renew blocks until resume is
// closed (the whole container stalls, heartbeat included), then renews, which by then is fenced
// when another capture took the lease over.
type frozenRenewals struct {
	capture.Checkpoints
	frozen, resume <-chan struct{}
}

func (f frozenRenewals) Renew(ctx context.Context, l checkpoint.Lease) (checkpoint.Lease, error) {
	select {
	case <-f.frozen:
		select {
		case <-f.resume:
		case <-ctx.Done():
			return l, ctx.Err()
		}
	default:
	}
	return f.Checkpoints.Renew(ctx, l)
}
