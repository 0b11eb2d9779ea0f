package localrun

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/docdb-dr/docdb-dr/internal/lambdarun"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// stopGrace is how long Stop lets a scheduled capture invocation in progress finish before
// cancelling it (a cancelled invocation is a failed one, and logs as such; out of process, its
// sandbox is killed).
const stopGrace = 5 * time.Second

// schedule invokes capture every CaptureInterval until ctx is done. A tick that comes while an
// invocation runs is kept (one at most) and served when it ends, as a throttled scheduled
// invocation of a function with reserved concurrency 1 is served late rather than dropped. Each
// tick is an asynchronous invocation: a failed one is retried CaptureRetryAttempts times with
// the same request id (template.yaml: none).
func (p *Pipeline) schedule(ctx context.Context) {
	tick := time.NewTicker(p.opts.CaptureInterval)
	defer tick.Stop()
	invCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancel) })
	defer stop()
	for {
		p.invokeEvent(invCtx, ctx)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// invokeEvent is one scheduled (asynchronous) invocation with its retries; schedCtx ends the
// retries when the schedule stops.
func (p *Pipeline) invokeEvent(ctx, schedCtx context.Context) {
	id := lambdarun.NewRequestID()
	for attempt := 0; attempt <= p.opts.CaptureRetryAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(p.opts.CaptureRetryDelay)
			select {
			case <-t.C:
			case <-schedCtx.Done():
				t.Stop()
				return
			}
		}
		if r := p.invoke(ctx, id, attempt, capture.Overrides{}); r.Err == nil {
			return
		}
	}
}

// CaptureOnce runs one capture invocation now (after the one in progress, if any) with a fresh
// request id, as a manual (synchronous) invoke, and returns its summary. Overrides are those of
// a manual invoke.
func (p *Pipeline) CaptureOnce(ctx context.Context, o capture.Overrides) (capture.Summary, error) {
	r := p.invoke(ctx, lambdarun.NewRequestID(), 0, o)
	return r.Summary, r.Err
}

// invoke runs one capture invocation as request id (in process, or in the emulated Lambda
// sandbox) and records its result.
func (p *Pipeline) invoke(ctx context.Context, id string, attempt int, o capture.Overrides) CaptureResult {
	p.captureMu.Lock()
	defer p.captureMu.Unlock()
	if err := ctx.Err(); err != nil {
		return CaptureResult{Err: err}
	}
	p.invocations.Add(1)
	payload, err := json.Marshal(o)
	if err != nil {
		return CaptureResult{Err: fmt.Errorf("localrun: capture overrides: %w", err)}
	}
	var r CaptureResult
	if p.captureProc != nil {
		r = p.invokeProcess(ctx, id, payload)
	} else {
		r = CaptureResult{Owner: id, Started: time.Now()}
		deadline := r.Started.Add(p.opts.CaptureTimeout)
		ictx, cancel := context.WithDeadline(lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: id}), deadline)
		r.Summary, r.Err = p.capture.Handle(ictx, payload)
		cancel()
		r.Ended = time.Now()
	}
	r.Attempt = attempt
	if p.opts.OnCapture != nil {
		p.opts.OnCapture(r)
	}
	p.mu.Lock()
	if r.Err == nil && r.Summary.CheckpointSaved {
		p.lastOK = r
	}
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
	return r
}

// invokeProcess invokes the capture bootstrap through the Runtime API emulator. A failed
// invocation returns no summary, as Lambda's Invoke API returns only the error.
func (p *Pipeline) invokeProcess(ctx context.Context, id string, payload []byte) CaptureResult {
	res, err := p.captureProc.InvokeAs(ctx, id, payload)
	r := CaptureResult{Owner: id, Started: res.Started, Ended: res.Ended, PID: res.PID, ColdStart: res.ColdStart, Killed: res.Killed,
		InitDuration: res.InitDuration, PeakRSS: res.PeakRSS}
	switch {
	case err != nil:
		r.Err = err
	case res.Err != nil:
		r.Err = res.Err
		r.Summary = capture.Summary{Owner: id, StopReason: capture.StopError, Error: res.Err.Error()}
	default:
		if err := json.Unmarshal(res.Payload, &r.Summary); err != nil {
			r.Err = fmt.Errorf("localrun: capture response %q: %w", res.Payload, err)
		}
	}
	return r
}

// WaitCapture waits for a capture invocation that started after since, succeeded and saved its
// checkpoint, and returns it. Such an invocation read the change stream after since, so its
// checkpoint (the stream's resume token after its last read) is past every write acknowledged
// before since, on any server: a way to know capture has "seen" a moment in time without decoding
// resume tokens, which are opaque. It only waits: the schedule (or the caller) runs capture.
func (p *Pipeline) WaitCapture(ctx context.Context, since time.Time) (CaptureResult, error) {
	for {
		p.mu.Lock()
		last, wait := p.lastOK, p.notify
		p.mu.Unlock()
		if last.Started.After(since) {
			return last, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return CaptureResult{}, fmt.Errorf("pipeline: no successful capture invocation started after %s: %w",
				since.Format(time.RFC3339Nano), ctx.Err())
		}
	}
}

// Sync returns once everything written to the primary before the call has been captured and
// applied: it runs capture until an invocation that started after the call reads to the end of
// the stream (it stops idle, or a continuous drain sees no event at all), then waits for apply to
// handle every record in the topic. Failed invocations are retried (tests inject them); ctx bounds
// the whole wait. Call it while nothing else writes, or it may chase the writers.
func (p *Pipeline) Sync(ctx context.Context) error {
	var last error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pipeline: sync: capture did not reach the end of the stream after %d invocations (last: %v): %w", attempt-1, last, err)
		}
		sum, err := p.CaptureOnce(ctx, capture.Overrides{})
		switch {
		case err != nil:
			last = err
			continue
		case sum.StopReason == capture.StopIdle,
			sum.StopReason == capture.StopContinuousDrain && sum.Events == 0:
		default:
			last = fmt.Errorf("stopped with %s after %d events", sum.StopReason, sum.Events)
			continue
		}
		break
	}
	return p.WaitCaughtUp(ctx)
}
