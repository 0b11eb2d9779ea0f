//go:build unix

package lambdarun

import (
	"context"
	"fmt"
	"time"
)

// EventInvokeConfig is an asynchronous invocation's retry configuration (the template's
// EventInvokeConfig). The zero value retries nothing; Lambda's default without an
// EventInvokeConfig is 2 retries within 6 hours.
type EventInvokeConfig struct {
	// MaximumRetryAttempts is how many times a failed attempt (a function error, a timeout, a
	// crash) is retried: 0 to 2.
	MaximumRetryAttempts int
	// MaximumEventAge drops the event once it is this old (60 s to 6 h; 0 means 6 h).
	MaximumEventAge time.Duration
	// RetryDelays are the waits before the first and the second retry (default Lambda's: one
	// minute, then two).
	RetryDelays []time.Duration
}

// InvokeEvent runs one asynchronous (Event) invocation, as EventBridge's schedule does, with the
// retries cfg allows: every attempt carries the same request id, as Lambda's retries do. It
// returns every attempt; the event is dropped after the last one fails (no on-failure
// destination is emulated). The returned error is the emulator's.
func (f *Function) InvokeEvent(ctx context.Context, payload []byte, cfg EventInvokeConfig) ([]Result, error) {
	if len(payload) > MaxAsyncPayload {
		return nil, fmt.Errorf("lambdarun: RequestEntityTooLargeException: %d byte event exceeds %d bytes", len(payload), MaxAsyncPayload)
	}
	if cfg.MaximumRetryAttempts < 0 || cfg.MaximumRetryAttempts > 2 {
		return nil, fmt.Errorf("lambdarun: MaximumRetryAttempts %d is outside 0..2", cfg.MaximumRetryAttempts)
	}
	maxAge := cfg.MaximumEventAge
	if maxAge <= 0 {
		maxAge = 6 * time.Hour
	}
	delays := cfg.RetryDelays
	if len(delays) == 0 {
		delays = []time.Duration{time.Minute, 2 * time.Minute}
	}
	id, queued := NewRequestID(), time.Now()
	var results []Result
	for attempt := 0; attempt <= cfg.MaximumRetryAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(delays[min(attempt-1, len(delays)-1)])
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return results, nil
			}
			if time.Since(queued) > maxAge {
				f.log.Warn("event dropped: older than MaximumEventAge", "requestId", id, "age", time.Since(queued).String())
				return results, nil
			}
		}
		r, err := f.invoke(ctx, id, payload)
		if err != nil {
			return results, err
		}
		results = append(results, r)
		if r.Err == nil {
			break
		}
	}
	return results, nil
}
