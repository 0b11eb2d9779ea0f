// Package capture is the capture function's logic: take the scope's lease, resume the change
// stream after the saved checkpoint, drain a bounded batch while publishing every event to Kafka,
// and move the checkpoint only to events Kafka acknowledged.
//
// One invocation, top to bottom (Capturer.Run: lease -> open -> drain -> finish):
//
//  1. Acquire the scope's lease (lease.go). When another capture holds it until a time before
//     the run's soft deadline, wait for it to lapse and take it over; otherwise stop cleanly
//     (StopLeaseHeld). A heartbeat renews the lease every LEASE_TTL/3; the run's context ends
//     as soon as a renewal fails or is fenced, or just before an unrenewed expiry.
//  2. Load the checkpoint and open the stream: resumeAfter the saved token (startAfter when it
//     is an invalidate's), else startAtOperationTime (a reset to a time, or START_AT), else now.
//  3. Drain (drain.go): read events with TryNext (each empty getMore waits up to MAX_AWAIT on the
//     server), convert, check the namespace, claim-check oversized events to S3 (message.go),
//     dead-letter poison to S3 (deadletter.go), and publish without waiting for each
//     acknowledgement: a document change by its key's hash, a collection event once to every
//     partition. The acknowledgements are followed by acks (acks.go); every CHECKPOINT_EVERY of
//     them the checkpoint moves to the newest event whose predecessors were all acknowledged.
//  4. Stop at MAX_EVENTS, MAX_BYTES, the deadline minus DEADLINE_MARGIN, IDLE_TIMEOUT without an
//     event, CONTINUOUS_DRAIN elapsed, or an invalidate event.
//  5. Finish: wait for every acknowledgement, then save the stream's resume token: after the last
//     event, or the post-batch resume token, so a quiet scope's checkpoint keeps moving forward
//     within the change stream retention window. A batch left unacknowledged aborts its
//     producer, so nothing it holds reaches Kafka after the run.
//  6. Release the lease, log one summary line, emit EMF metrics.
//
// A failure anywhere leaves the checkpoint at (or before) the last acknowledged event: the next
// invocation republishes the unacknowledged tail (at-least-once; apply is idempotent).
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/metrics"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// Stop reasons reported in Summary.StopReason.
const (
	StopMaxEvents       = "max-events"
	StopMaxBytes        = "max-bytes"
	StopDeadline        = "deadline"
	StopIdle            = "idle"
	StopContinuousDrain = "continuous-drain-elapsed"
	StopInvalidate      = "invalidate"
	StopLeaseHeld       = "lease-held"
	StopError           = "error"
)

// Options are the drain's bounds and settings (from pkg/config, possibly overridden per
// invocation).
type Options struct {
	Scope                 scope.Scope
	MaxEvents             int
	MaxBytes              int64
	CheckpointEvery       int
	IdleTimeout           time.Duration
	ContinuousDrain       time.Duration // >0: keep draining this long, ignoring IdleTimeout
	DeadlineMargin        time.Duration
	StartAt               time.Time // first run only; zero means now
	LeaseTTL              time.Duration
	ChangeStreamRetention time.Duration // for LagRetentionFraction
	MaxMessageBytes       int           // larger messages are claim-checked
	ArchivePrefix         string        // key prefix of claim-check objects
	// InFlightMessages and InFlightBytes bound what is published but not yet acknowledged.
	InFlightMessages int
	InFlightBytes    int64
}

// Defaults for the in-flight window.
const (
	DefaultInFlightMessages = 8192
	DefaultInFlightBytes    = 64 << 20
)

// Deps are the capture's collaborators.
type Deps struct {
	Streams     StreamOpener
	Publisher   Publisher
	Checkpoints Checkpoints
	Blobs       Blob             // may be nil when no event can exceed MaxMessageBytes (tests)
	Now         func() time.Time // nil: time.Now
	// Sleep waits d on the Now clock (a run waiting for a held lease); nil: a timer, cut short
	// when ctx ends.
	Sleep   func(ctx context.Context, d time.Duration) error
	Logger  *slog.Logger // nil: slog.Default()
	Metrics io.Writer    // EMF lines; nil: discarded
}

// Capturer runs capture invocations for one scope.
type Capturer struct {
	opts Options
	deps Deps
}

// New returns a Capturer.
func New(opts Options, deps Deps) *Capturer {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Sleep == nil {
		deps.Sleep = sleep
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Metrics == nil {
		deps.Metrics = io.Discard
	}
	if opts.InFlightMessages <= 0 {
		opts.InFlightMessages = DefaultInFlightMessages
	}
	if opts.InFlightBytes <= 0 {
		opts.InFlightBytes = DefaultInFlightBytes
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 1000
	}
	return &Capturer{opts: opts, deps: deps}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Invocation is one run's identity and overrides.
type Invocation struct {
	Owner     string    // lease owner: the Lambda request id (a retry of the same request keeps it)
	Deadline  time.Time // when the function is killed; zero: now + 15 minutes
	Overrides Overrides // from a manual invoke
}

// ClusterTime is a cluster time in a summary: the timestamp and its wall-clock reading.
type ClusterTime struct {
	T    uint32    `json:"t"`
	I    uint32    `json:"i"`
	Time time.Time `json:"time"`
}

func clusterTime(ts primitive.Timestamp) *ClusterTime {
	if ts.T == 0 {
		return nil
	}
	return &ClusterTime{T: ts.T, I: ts.I, Time: changeevent.Time(ts)}
}

// Summary describes one invocation: the Lambda's return value and the summary log line.
type Summary struct {
	Scope            string         `json:"scope"`
	Owner            string         `json:"owner"`
	Events           int            `json:"events"`
	Messages         int            `json:"messages"` // published; a collection event is one per partition
	ByOperation      map[string]int `json:"byOperation"`
	Skipped          int            `json:"skipped,omitempty"` // out of scope or unknown operation type
	Bytes            int64          `json:"bytes"`
	ClaimChecks      int            `json:"claimChecks,omitempty"`
	DeadLettered     int            `json:"deadLettered,omitempty"` // set aside to S3 (DeadLetter), not published
	Acknowledged     int            `json:"acknowledged"`
	FirstClusterTime *ClusterTime   `json:"firstClusterTime,omitempty"`
	LastClusterTime  *ClusterTime   `json:"lastClusterTime,omitempty"`
	StopReason       string         `json:"stopReason"`
	LagSeconds       float64        `json:"lagSeconds"`
	CheckpointSaved  bool           `json:"checkpointSaved"`
	Checkpoints      int            `json:"checkpoints"` // saves during and at the end of the drain
	// LeaseHeldBy names the holder and expiry of the lease when the run found it held: it then
	// waited LeaseWaitMillis for it to lapse and took over, or (StopLeaseHeld) gave up because it
	// would not lapse before the run's soft deadline.
	LeaseHeldBy     string `json:"leaseHeldBy,omitempty"`
	LeaseWaitMillis int64  `json:"leaseWaitMillis,omitempty"`
	DrainMillis     int64  `json:"drainMillis"`
	PublishMillis   int64  `json:"publishMillis"`
	Error           string `json:"error,omitempty"`
}

// run is the state of one invocation.
type run struct {
	c       *Capturer
	opts    Options
	inv     Invocation
	lease   *held
	stream  Stream
	batch   Batch
	acks    *acks
	sum     Summary
	metrics metrics.Set

	lastClusterTime primitive.Timestamp // of the newest event handled (or the saved checkpoint)
	lastPublished   primitive.Timestamp // of the newest event published: Summary.LastClusterTime
	ackedSinceSave  int                 // published events acknowledged since the last save
	publishTime     time.Duration
	one             [1]kafka.Message // the messages of a document change (copies), reused
}

// Run performs one invocation. It returns an error only when the invocation failed (the summary
// then says why); a lease held by another capture is a clean stop, not an error.
func (c *Capturer) Run(ctx context.Context, inv Invocation) (Summary, error) {
	r := &run{c: c, opts: inv.Overrides.apply(c.opts), inv: inv}
	r.acks = newAcks(r.opts.InFlightBytes)
	r.sum = Summary{Scope: r.opts.Scope.ID(), Owner: inv.Owner, ByOperation: map[string]int{}}
	r.metrics.Dimension("Function", "capture")
	r.metrics.Dimension("Scope", r.sum.Scope)
	start := c.deps.Now()
	if r.inv.Deadline.IsZero() {
		r.inv.Deadline = start.Add(15 * time.Minute)
	}

	err := r.execute(ctx)

	r.sum.DrainMillis = c.deps.Now().Sub(start).Milliseconds()
	r.sum.PublishMillis = r.publishTime.Milliseconds()
	if r.sum.FirstClusterTime != nil {
		r.sum.LastClusterTime = clusterTime(r.lastPublished)
	}
	if err != nil {
		r.sum.StopReason = StopError
		r.sum.Error = err.Error()
	}
	r.emit(err)
	return r.sum, err
}

// execute is one invocation: lease, open, drain, finish.
func (r *run) execute(ctx context.Context) error {
	lease, err := r.takeLease(ctx)
	if lease == nil || err != nil {
		return err // nil when another capture holds the lease: a clean stop
	}
	r.lease = lease
	// Released last, after the producer was flushed or aborted (close, below).
	defer lease.release(ctx)
	// The run's context ends when the lease is lost or about to expire unrenewed; reading stops
	// at the soft deadline (the function's deadline - DEADLINE_MARGIN), and waiting for
	// acknowledgements may use half the margin more.
	runCtx := lease.keep(ctx)
	hardCtx, cancel := context.WithTimeout(runCtx, r.untilDeadline(r.opts.DeadlineMargin/2))
	defer cancel()
	err = r.open(hardCtx)
	defer r.close(ctx)
	if err != nil {
		return r.leaseLostOr(err)
	}
	invalidate, drainErr := r.drain(hardCtx)
	return r.finish(ctx, hardCtx, invalidate, drainErr)
}

// leaseLostOr returns why the lease was lost, which explains err, or err.
func (r *run) leaseLostOr(err error) error {
	if lost := r.lease.lostErr(); lost != nil {
		return fmt.Errorf("capture stopped, its lease lost: %w", lost)
	}
	return err
}

// open loads the checkpoint, opens the change stream after it and starts the Kafka batch.
func (r *run) open(ctx context.Context) error {
	state, err := r.c.deps.Checkpoints.Load(ctx, r.opts.Scope.ID())
	if err != nil {
		return err
	}
	r.lastClusterTime = state.ClusterTime
	start, from := r.startFrom(state)
	stream, err := r.c.deps.Streams.Open(ctx, r.opts.Scope, start)
	if err != nil {
		return r.streamFailed(classify(err, r.opts.Scope, from))
	}
	r.stream = stream
	if r.batch, err = r.c.deps.Publisher.Begin(ctx, r.opts.InFlightMessages); err != nil {
		return err
	}
	return nil
}

// close ends the batch (aborting its producer when messages were left unacknowledged: a failed
// or timed-out flush, a lost lease) and closes the stream, whatever happened. The abort may wait
// for requests already sent until the lease expires, or the function's deadline: a run never
// outlives its lease.
func (r *run) close(ctx context.Context) {
	if r.batch != nil {
		limit := r.inv.Deadline
		if exp := r.lease.expiresAt(); !exp.IsZero() && exp.Before(limit) {
			limit = exp
		}
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit.Sub(r.c.deps.Now()))
		r.batch.End(ectx)
		cancel()
	}
	if r.stream != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = r.stream.Close(cctx)
	}
}

// finish waits for every acknowledgement (bounded by hardCtx), then moves the checkpoint to the
// newest position whose events were all acknowledged: the last event, or the post-batch resume
// token of the last empty batch, so that a quiet scope's checkpoint keeps moving within the
// retention window. An invalidate ends the stream: the next run must startAfter it. A lost lease
// saves nothing.
func (r *run) finish(ctx, hardCtx context.Context, invalidate *checkpoint.Position, drainErr error) error {
	if r.lease.lostErr() != nil {
		return r.leaseLostOr(drainErr)
	}
	flushStart := r.c.deps.Now()
	flushErr := r.batch.Flush(hardCtx)
	r.publishTime += r.c.deps.Now().Sub(flushStart)
	r.collectAcks()
	if flushErr != nil {
		flushErr = fmt.Errorf("publish to kafka: %w", flushErr)
	}

	final := r.acks.Position()
	if invalidate != nil && drainErr == nil && flushErr == nil {
		final = *invalidate
	}
	if r.lease.lostErr() != nil {
		return r.leaseLostOr(errors.Join(drainErr, flushErr))
	}
	if len(final.ResumeToken) > 0 {
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.save(saveCtx, final); err != nil {
			return errors.Join(drainErr, flushErr, err)
		}
		r.sum.CheckpointSaved = true
	}
	return errors.Join(drainErr, flushErr)
}

// startFrom chooses where the stream opens and describes it for error messages.
func (r *run) startFrom(state checkpoint.State) (Start, string) {
	switch {
	case len(state.ResumeToken) > 0 && state.AfterInvalidate:
		return Start{StartAfter: state.ResumeToken}, "after the invalidate event saved at " + describe(state)
	case len(state.ResumeToken) > 0:
		return Start{ResumeAfter: state.ResumeToken}, "resume token saved at " + describe(state)
	case state.StartAt.T != 0:
		ts := state.StartAt
		return Start{StartAt: &ts}, fmt.Sprintf("start time %s set by %s", changeevent.Time(ts).Format(time.RFC3339), resetWho(state))
	case !r.opts.StartAt.IsZero():
		ts := primitive.Timestamp{T: uint32(r.opts.StartAt.Unix())}
		return Start{StartAt: &ts}, "START_AT " + r.opts.StartAt.Format(time.RFC3339)
	}
	return Start{}, "now"
}

func describe(state checkpoint.State) string {
	if state.ClusterTime.T != 0 {
		return "cluster time " + changeevent.Time(state.ClusterTime).Format(time.RFC3339)
	}
	return state.UpdatedAt.UTC().Format(time.RFC3339)
}

func resetWho(state checkpoint.State) string {
	if state.ResetBy != nil {
		return state.ResetBy.Who
	}
	return "an operator"
}

func (r *run) streamFailed(err error) error {
	if errors.Is(err, ErrHistoryLost) {
		r.metrics.Put("HistoryLost", metrics.Count, 1)
	}
	return err
}

// untilDeadline is the time left before the deadline minus margin.
func (r *run) untilDeadline(margin time.Duration) time.Duration {
	return r.inv.Deadline.Add(-margin).Sub(r.c.deps.Now())
}

// collectAcks takes the acknowledgements that arrived since the last call.
func (r *run) collectAcks() {
	n := r.acks.Advance(r.batch.Acked())
	r.sum.Acknowledged += n
	r.ackedSinceSave += n
}

// maybeSave checkpoints the last acknowledged position every CheckpointEvery acknowledgements.
func (r *run) maybeSave(ctx context.Context) error {
	if r.ackedSinceSave < r.opts.CheckpointEvery || len(r.acks.Position().ResumeToken) == 0 {
		return nil
	}
	return r.save(ctx, r.acks.Position())
}

// save moves the checkpoint (fenced: a lease taken over fails with checkpoint.ErrFenced, and the
// run then neither saves nor releases again).
func (r *run) save(ctx context.Context, pos checkpoint.Position) error {
	if err := r.lease.save(ctx, pos); err != nil {
		return err
	}
	r.ackedSinceSave = 0
	r.sum.Checkpoints++
	return nil
}

// emit writes the summary log line and the EMF metrics.
func (r *run) emit(err error) {
	now := r.c.deps.Now()
	if last := r.sum.LastClusterTime; last != nil {
		r.sum.LagSeconds = now.Sub(last.Time).Seconds()
		if r.sum.LagSeconds < 0 {
			r.sum.LagSeconds = 0
		}
	}
	m := &r.metrics
	m.Put("Events", metrics.Count, float64(r.sum.Events))
	for op, n := range r.sum.ByOperation {
		m.Put("Events."+op, metrics.Count, float64(n))
	}
	m.Put("Bytes", metrics.Bytes, float64(r.sum.Bytes))
	m.Put("ClaimChecks", metrics.Count, float64(r.sum.ClaimChecks))
	m.Put("DeadLettered", metrics.Count, float64(r.sum.DeadLettered))
	m.Put("DrainTime", metrics.Milliseconds, float64(r.sum.DrainMillis))
	m.Put("PublishTime", metrics.Milliseconds, float64(r.sum.PublishMillis))
	m.Put("ReplicationLagSeconds", metrics.Seconds, r.sum.LagSeconds)
	if ret := r.opts.ChangeStreamRetention; ret > 0 {
		m.Put("LagRetentionFraction", metrics.None, r.sum.LagSeconds/ret.Seconds())
	}
	m.Put("CheckpointSaved", metrics.Count, b2f(r.sum.CheckpointSaved))
	m.Put("Errors", metrics.Count, b2f(err != nil))
	for _, name := range []string{"HistoryLost", "LeaseHeld"} {
		if _, ok := m.Value(name); !ok {
			m.Put(name, metrics.Count, 0)
		}
	}
	m.Put("LeaseWaitTime", metrics.Milliseconds, float64(r.sum.LeaseWaitMillis))
	if merr := m.Emit(r.c.deps.Metrics, now); merr != nil {
		r.c.deps.Logger.Warn("emit metrics", "error", merr)
	}

	r.c.deps.Logger.LogAttrs(context.Background(), summaryLevel(err, r.sum.CheckpointSaved), "capture summary", slog.Any("summary", r.sum))
}

// CutShort reports whether an invocation that returned err was cancelled by its caller after its
// checkpoint was saved (an operator stopping `docdbdr run`; Lambda never cancels an invocation, it
// lets the deadline strike). It still returns its error, but nothing acknowledged is lost.
func CutShort(err error, checkpointSaved bool) bool {
	return errors.Is(err, context.Canceled) && checkpointSaved
}

// summaryLevel is the summary line's level: ERROR for a failed invocation, WARN for one cut short
// (CutShort).
func summaryLevel(err error, checkpointSaved bool) slog.Level {
	switch {
	case err == nil:
		return slog.LevelInfo
	case CutShort(err, checkpointSaved):
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
