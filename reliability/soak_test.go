package reliability

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// TestSoak runs capture and apply against a sustained stream of writes and samples the
// process's live heap (HeapInuse after a GC) and goroutine count. The stack runs in a child
// process, so the samples are the functions' (driver, Kafka client, AWS SDK, capture, apply,
// the event source mapping), not the in-memory clusters'. After a warm-up quarter, the average
// of the last quarter of samples must stay within a tolerance of the first quarter's: a leak
// grows with the number of events handled, which keeps rising for the whole run.
//
// Default 24 s (part of `make test`); SOAK_DURATION=10m for the long run.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	duration, every := 24*time.Second, time.Second
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		duration, every = d, max(time.Second, d/120)
	}
	// LEASE_TTL 20 s: a run may last until 5 s before its lease expires, longer than its 5 s drain.
	opts := harnessOptions{Lean: true, Timeout: duration + 3*time.Minute, CheckpointEvery: 500, LeaseTTL: 20 * time.Second}
	ctx := testContext(t, opts)
	h := buildHarness(t, ctx, startStackProcess(t, ctx), opts)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The writers: one round (18 changes in the watched scope, 1 outside) every 90 ms, about
	// 200 changes a second.
	wg.Go(func() {
		tick := time.NewTicker(90 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				h.write(1)
			}
		}
	})
	// The schedule: capture invocations back to back, each draining for 5 s (CONTINUOUS_DRAIN,
	// as with a one-minute schedule and a 45 s drain, scaled down).
	var captures, captureErrs int
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := h.invoke(fmt.Sprintf("soak-%d", captures), capture.Overrides{ContinuousDrain: capture.Duration(5 * time.Second)}, nil)
			captures++
			if err != nil {
				captureErrs++
				t.Logf("capture: %v", err)
			}
		}
	})

	type sample struct {
		at         time.Duration
		heap       uint64
		goroutines int
	}
	var samples []sample
	start := time.Now()
	tick := time.NewTicker(every)
	for time.Since(start) < duration {
		<-tick.C
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, sample{time.Since(start), ms.HeapInuse, runtime.NumGoroutine()})
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	written := h.written
	h.settle()
	l := h.account()

	// Skip the warm-up quarter; compare the first and last quarters of the rest.
	measured := samples[len(samples)/4:]
	q := max(1, len(measured)/4)
	avg := func(s []sample) (heap float64, gor float64) {
		for _, x := range s {
			heap += float64(x.heap)
			gor += float64(x.goroutines)
		}
		return heap / float64(len(s)), gor / float64(len(s))
	}
	firstHeap, firstG := avg(measured[:q])
	lastHeap, lastG := avg(measured[len(measured)-q:])
	const mib = 1 << 20
	t.Logf("soak %v: %d changes written (%.0f/s), %d capture invocations (%d failed), %d apply invocations (%d failed); "+
		"heap in use %.1f MiB -> %.1f MiB, goroutines %.1f -> %.1f (first vs last quarter after warm-up, %d samples every %v)",
		duration, written, float64(written)/duration.Seconds(), captures, captureErrs, h.calls.Load(), h.failed.Load(),
		firstHeap/mib, lastHeap/mib, firstG, lastG, len(samples), every)
	for _, s := range samples {
		t.Logf("  t=%5.1fs heap %6.1f MiB goroutines %d", s.at.Seconds(), float64(s.heap)/mib, s.goroutines)
	}
	if lastHeap > firstHeap*1.25+4*mib {
		t.Errorf("live heap grew from %.1f MiB to %.1f MiB: more than 25%% + 4 MiB", firstHeap/mib, lastHeap/mib)
	}
	if lastG > firstG+10 {
		t.Errorf("goroutines grew from %.1f to %.1f", firstG, lastG)
	}
	if captureErrs > 0 || h.failed.Load() > 0 {
		t.Errorf("%d capture and %d apply invocations failed without any injected fault", captureErrs, h.failed.Load())
	}
	if l.Written < 1000 {
		t.Errorf("only %d changes in %v: the soak did not sustain a write rate", l.Written, duration)
	}
}
