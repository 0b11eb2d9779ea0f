package localrun

import (
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// TestCaptureStopsCleanlyAtItsDeadline shows a capture bug (pkg/capture, not this package): when
// the soft deadline (Lambda deadline minus DEADLINE_MARGIN) strikes while a getMore waits on a
// quiet stream, the invocation should stop with reason "deadline" and succeed. About one time in
// six it fails instead with "change stream on bar.foo: context deadline exceeded". The driver sets
// the socket's read deadline to the context's deadline and turns the socket timeout into
// context.DeadlineExceeded, which can happen before the context's own timer has fired; capture's
// check (readCtx.Err() != nil && ctx.Err() == nil) then sees readCtx.Err() == nil and reports a
// stream failure. Checking the clock against the soft deadline (or errors.Is(err,
// context.DeadlineExceeded)) instead of readCtx.Err() would fix it.
func TestCaptureStopsCleanlyAtItsDeadline(t *testing.T) {
	p, ctx := startPipeline(t, Options{ManualCapture: true, CaptureTimeout: 1300 * time.Millisecond},
		map[string]string{"MAX_AWAIT": "3s", "IDLE_TIMEOUT": "30s", "DEADLINE_MARGIN": "1s"})
	const invocations = 12
	failures := 0
	for i := range invocations {
		sum, err := p.CaptureOnce(ctx, capture.Overrides{})
		if err != nil || sum.StopReason != capture.StopDeadline {
			failures++
			t.Logf("invocation %d: stop %q, error %v", i, sum.StopReason, err)
		}
	}
	if failures > 0 {
		t.Errorf("%d of %d invocations on a quiet stream failed at their deadline instead of stopping cleanly", failures, invocations)
	}
}
