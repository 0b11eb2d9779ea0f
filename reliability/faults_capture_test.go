package reliability

import (
	"bytes"
	"errors"
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// Crashes of the capture function. Each test writes 10 rounds (180 change events in the watched
// scope), crashes one invocation at a boundary, lets the following invocations run as the
// schedule would, and accounts for every event.

// TestCaptureCrashAfterReadBeforePublish kills capture while it holds events it has read from
// the change stream but not yet published: the 100th event never reaches Kafka.
func TestCaptureCrashAfterReadBeforePublish(t *testing.T) {
	h := newHarness(t, harnessOptions{CheckpointEvery: 25})
	h.write(10)
	before := h.checkpoint()
	_, err := h.capture(func(d capture.Deps, c *crash) capture.Deps {
		d.Publisher = hookedPublisher{Publisher: d.Publisher, crash: c, before: func(n int, b capture.Batch) error {
			switch n {
			case 50:
				// Let Kafka acknowledge the first 49, so that capture saves a checkpoint
				// during the drain (every 25 acknowledgements) before it crashes.
				waitFor(t, "49 acknowledgements", func() bool { return b.Acked() >= 49 })
			case 100:
				return c.fire()
			}
			return nil
		}}
		d.Checkpoints = hookedCheckpoints{Checkpoints: d.Checkpoints, crash: c, saves: new(int)}
		return d
	})
	if !errors.Is(err, errCrashed) {
		t.Fatalf("crashed invocation returned %v, want the injected crash", err)
	}
	// The checkpoint moved during the drain (every 25 acknowledgements) but never past an event
	// that was not published: at least the 81 events from the 100th on are still after it.
	st := h.checkpoint()
	if bytes.Equal(st.ResumeToken, before.ResumeToken) {
		t.Fatal("no checkpoint was saved during the drain; the test wants one before the crash")
	}
	if after := h.eventsAfter(st.ResumeToken); after < 81 {
		t.Fatalf("the checkpoint covers events that were never published: only %d of 180 events are after it", after)
	}
	h.settle()
	l := h.account()
	record(t, "capture crashes after reading an event, before publishing it",
		"invocation fails; the checkpoint stays at or before the last acknowledged event; the next invocation (after the crashed one's lease expires) republishes from there", l)
}

// TestCaptureCrashAfterPublishBeforeCheckpoint kills capture after Kafka acknowledged every
// event, before the checkpoint is saved: the next invocation publishes all of them again.
func TestCaptureCrashAfterPublishBeforeCheckpoint(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.write(10)
	before := h.checkpoint()
	sum, err := h.capture(func(d capture.Deps, c *crash) capture.Deps {
		d.Checkpoints = hookedCheckpoints{Checkpoints: d.Checkpoints, crash: c, saves: new(int),
			beforeSave: func(int) error { return c.fire() }}
		return d
	})
	if !errors.Is(err, errCrashed) {
		t.Fatalf("crashed invocation returned %v, want the injected crash", err)
	}
	if sum.Acknowledged != 180 {
		t.Fatalf("Kafka acknowledged %d events before the crash, want all 180", sum.Acknowledged)
	}
	if after := h.checkpoint(); !bytes.Equal(after.ResumeToken, before.ResumeToken) {
		t.Fatal("the checkpoint moved although the invocation crashed before saving it")
	}
	h.settle()
	l := h.account()
	if l.Republished != 180 {
		t.Errorf("republished %d events, want all 180 (at-least-once)", l.Republished)
	}
	record(t, "capture crashes after Kafka acknowledged, before saving the checkpoint",
		"invocation fails; the checkpoint is unchanged; the next invocation republishes every acknowledged event (at-least-once) and apply's idempotent writes absorb the copies", l)
}

// TestCaptureCrashAfterCheckpoint kills capture right after the checkpoint was saved, before it
// released its lease: the next scheduled invocation waits for the lease to expire, then
// continues from the checkpoint without republishing anything.
func TestCaptureCrashAfterCheckpoint(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.write(10)
	_, err := h.capture(func(d capture.Deps, c *crash) capture.Deps {
		d.Checkpoints = hookedCheckpoints{Checkpoints: d.Checkpoints, crash: c, saves: new(int),
			afterSave: func(int) error { return c.fire() }}
		return d
	})
	if !errors.Is(err, errCrashed) {
		t.Fatalf("crashed invocation returned %v, want the injected crash", err)
	}
	if after := h.eventsAfter(h.checkpoint().ResumeToken); after != 0 {
		t.Fatalf("%d events after the saved checkpoint, want 0", after)
	}
	// The crashed invocation could not release its lease: the next one waits for it to lapse
	// (LEASE_TTL), says whose it was, and takes over.
	sum, err := h.capture(nil)
	if err != nil || sum.LeaseHeldBy == "" || sum.LeaseWaitMillis == 0 || sum.StopReason == capture.StopLeaseHeld {
		t.Fatalf("invocation right after the crash: stop %q, waited %d ms for %q, error %v; want a takeover after the lease lapsed",
			sum.StopReason, sum.LeaseWaitMillis, sum.LeaseHeldBy, err)
	}
	h.settle()
	l := h.account()
	if l.Republished != 0 {
		t.Errorf("republished %d events after a saved checkpoint, want 0", l.Republished)
	}
	record(t, "capture crashes after saving the checkpoint, before releasing its lease",
		"invocation fails; the next invocation waits for the dead holder's lease to lapse (LEASE_TTL), takes over and resumes after the checkpoint; nothing is republished", l)
}
