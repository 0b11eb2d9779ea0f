package localrun

import (
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// TestCaptureStopsCleanlyAtItsDeadline: when the soft deadline (Lambda deadline minus
// DEADLINE_MARGIN) strikes while a getMore waits on a quiet stream, the invocation stops with reason
// "deadline" and succeeds. Before 5c20540 about one in six failed with "change stream on bar.foo:
// context deadline exceeded": the driver sets the socket's read deadline to the context's and turns
// the socket timeout into context.DeadlineExceeded, which can happen before the context's own timer
// has fired. pkg/capture's softDeadlinePassed now reads that error as the deadline too.
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
