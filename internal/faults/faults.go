// Package faults holds failing decorators for the functions' collaborators, for fault
// injection in tests (localrun.Hooks, the reliability harness and the end-to-end suite). Each is
// driven by a Fault, which the test arms and disarms from its own goroutine while the functions
// run.
package faults

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// ErrInjected is the error every injected failure wraps.
var ErrInjected = errors.New("injected fault")

// Fault decides which calls of a decorated operation fail. Armed with Arm(after, times), it lets
// `after` units of work through, then fails `times` calls (times < 0: every call until Disarm).
// The zero Fault never fails.
type Fault struct {
	mu     sync.Mutex
	armed  bool
	after  int // units still allowed through
	times  int // calls still to fail; <0 unbounded
	fired  int // failures so far, over the Fault's life
	passed int // units let through while armed
}

// Arm makes the Fault fail after `after` more units of work, `times` times (negative: until
// Disarm).
func (f *Fault) Arm(after, times int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.after, f.times, f.passed = true, after, times, 0
}

// Disarm stops further failures.
func (f *Fault) Disarm() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = false
}

// Armed reports whether failures are still to come.
func (f *Fault) Armed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed
}

// Fired is the number of calls failed so far.
func (f *Fault) Fired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// take is called with the units of work a call is about to do. It returns how many of them may
// be done before failing, and whether the call fails (after doing those).
func (f *Fault) take(units int) (allowed int, fail bool) {
	if f == nil {
		return units, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed {
		return units, false
	}
	if units < f.after {
		f.after -= units
		f.passed += units
		return units, false
	}
	allowed = f.after
	f.passed += allowed
	f.after = 0
	f.fired++
	if f.times > 0 {
		f.times--
		if f.times == 0 {
			f.armed = false
		}
	}
	return allowed, true
}

// FailingCheckpoints wraps capture's Checkpoints; SaveFault fails Save (each Save is one unit):
// the invocation has published and Kafka acknowledged, but the checkpoint does not move, as if
// the function crashed before saving. The next invocation republishes the tail.
type FailingCheckpoints struct {
	capture.Checkpoints
	SaveFault *Fault
}

// Save fails when SaveFault says so, else saves.
func (c FailingCheckpoints) Save(ctx context.Context, lease checkpoint.Lease, pos checkpoint.Position) error {
	if _, fail := c.SaveFault.take(1); fail {
		return fmt.Errorf("save checkpoint of %s: %w", lease.Scope, ErrInjected)
	}
	return c.Checkpoints.Save(ctx, lease, pos)
}

// FailingDR wraps apply's DR writer; WriteFault counts document writes. When it fires inside a
// bulk write, the writes before the failure point are really performed (an ordered bulk write
// that stopped part way), then the call fails, so the batch is redelivered over a partly written
// DR.
type FailingDR struct {
	apply.DR
	WriteFault *Fault
}

// BulkWrite performs the allowed prefix of writes, then fails when WriteFault fires.
func (d FailingDR) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []apply.Write) (apply.BulkResult, error) {
	allowed, fail := d.WriteFault.take(len(writes))
	if !fail {
		return d.DR.BulkWrite(ctx, ns, writes)
	}
	res, err := d.DR.BulkWrite(ctx, ns, writes[:allowed])
	if err != nil {
		return res, err
	}
	return res, fmt.Errorf("bulk write on %s failed after %d of %d writes: %w", ns, allowed, len(writes), ErrInjected)
}

// FailingArchive wraps apply's archive; PutFault fails Put (each Put is one unit), so a batch
// that intercepted deletes is redelivered after some of its objects were written.
type FailingArchive struct {
	apply.Archive
	PutFault *Fault
}

// Put fails when PutFault says so, else writes.
func (a FailingArchive) Put(ctx context.Context, key string, body []byte) error {
	if _, fail := a.PutFault.take(1); fail {
		return fmt.Errorf("put %s: %w", key, ErrInjected)
	}
	return a.Archive.Put(ctx, key, body)
}
