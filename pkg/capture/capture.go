// Package capture is the capture function's logic: take the scope's lease, resume the change
// stream after the saved checkpoint, drain a bounded batch while publishing every event to Kafka,
// and move the checkpoint only to events Kafka acknowledged.
//
// One invocation, top to bottom (Capturer.Run):
//
//  1. Acquire the scope's lease. If another capture holds it, stop cleanly (StopLeaseHeld).
//  2. Load the checkpoint and open the stream: resumeAfter the saved token (startAfter when it
//     is an invalidate's), else startAtOperationTime (a reset to a time, or START_AT), else now.
//  3. Drain: read events with TryNext (each empty getMore waits up to MAX_AWAIT on the server),
//     convert, check the namespace, claim-check oversized events to S3, and publish without
//     waiting for each acknowledgement. Acknowledgements are consumed as they arrive; every
//     CHECKPOINT_EVERY of them the checkpoint moves to the newest event whose predecessors were
//     all acknowledged.
//  4. Stop at MAX_EVENTS, MAX_BYTES, the deadline minus DEADLINE_MARGIN, IDLE_TIMEOUT without an
//     event, CONTINUOUS_DRAIN elapsed, or an invalidate event.
//  5. Wait for every acknowledgement, then save the stream's resume token: after the last event,
//     or the post-batch resume token, so a quiet scope's checkpoint keeps moving forward within
//     the change stream retention window.
//  6. Release the lease, log one summary line, emit EMF metrics.
//
// A failure anywhere leaves the checkpoint at (or before) the last acknowledged event: the next
// invocation republishes the unacknowledged tail (at-least-once; apply is idempotent).
package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"golang.org/x/sync/semaphore"

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
	Logger      *slog.Logger     // nil: slog.Default()
	Metrics     io.Writer        // EMF lines; nil: discarded
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
	Acknowledged     int            `json:"acknowledged"`
	FirstClusterTime *ClusterTime   `json:"firstClusterTime,omitempty"`
	LastClusterTime  *ClusterTime   `json:"lastClusterTime,omitempty"`
	StopReason       string         `json:"stopReason"`
	LagSeconds       float64        `json:"lagSeconds"`
	CheckpointSaved  bool           `json:"checkpointSaved"`
	Checkpoints      int            `json:"checkpoints"` // saves during and at the end of the drain
	LeaseHeldBy      string         `json:"leaseHeldBy,omitempty"`
	// DeadlineCappedByLease: LEASE_TTL was shorter than the time left, so the run ended early
	// enough never to outlive its lease.
	DeadlineCappedByLease bool   `json:"deadlineCappedByLease,omitempty"`
	DrainMillis           int64  `json:"drainMillis"`
	PublishMillis         int64  `json:"publishMillis"`
	Error                 string `json:"error,omitempty"`
}

// pending is an event read from the stream whose position the checkpoint may take once the
// message with sequence number needs (and so every earlier one) is acknowledged. Events that are
// not published (out of scope) need the last message published before them.
type pending struct {
	needs     uint64
	pos       checkpoint.Position
	size      int64
	published bool
}

// run is the state of one invocation.
type run struct {
	c       *Capturer
	opts    Options
	inv     Invocation
	lease   checkpoint.Lease
	stream  Stream
	batch   Batch
	sum     Summary
	metrics metrics.Set

	queue           []pending           // read, not yet acknowledged, in stream order
	lastClusterTime primitive.Timestamp // of the newest event handled (or the saved checkpoint)
	lastSeq         uint64              // sequence number of the last message published
	inFlightBytes   int64
	lastAcked       checkpoint.Position // newest position whose predecessors are all acknowledged
	ackedSinceSave  int
	publishTime     time.Duration
}

// Run performs one invocation. It returns an error only when the invocation failed (the summary
// then says why); a lease held by another capture is a clean stop, not an error.
func (c *Capturer) Run(ctx context.Context, inv Invocation) (Summary, error) {
	r := &run{c: c, opts: inv.Overrides.apply(c.opts), inv: inv}
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
	if err != nil {
		r.sum.StopReason = StopError
		r.sum.Error = err.Error()
	}
	r.emit(err)
	return r.sum, err
}

func (r *run) execute(ctx context.Context) error {
	c := r.c
	scope := r.opts.Scope.ID()
	lease, err := c.deps.Checkpoints.Acquire(ctx, scope, r.inv.Owner, r.opts.LeaseTTL)
	if errors.Is(err, checkpoint.ErrLeaseHeld) {
		r.sum.StopReason = StopLeaseHeld
		r.sum.LeaseHeldBy = err.Error()
		r.metrics.Put("LeaseHeld", metrics.Count, 1)
		return nil
	}
	if err != nil {
		return err
	}
	r.lease = lease
	// The run ends before its lease can expire, whatever the function's timeout: a capture still
	// publishing after another one took the expired lease would put the older versions it read
	// behind the newer ones in Kafka (fencing protects only the checkpoint). Checkpoints renew
	// the lease, but the deadline is not pushed back: the run stays within its first lease.
	if !lease.ExpiresAt.IsZero() && lease.ExpiresAt.Before(r.inv.Deadline) {
		r.inv.Deadline = lease.ExpiresAt
		r.sum.DeadlineCappedByLease = true
	}
	fenced := false
	defer func() {
		if fenced {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.deps.Checkpoints.Release(rctx, lease); err != nil {
			c.deps.Logger.Warn("release lease", "scope", scope, "error", err)
		}
	}()

	state, err := c.deps.Checkpoints.Load(ctx, scope)
	if err != nil {
		return err
	}
	r.lastClusterTime = state.ClusterTime
	start, from := r.startFrom(state)
	// Reading stops at the soft deadline; waiting for acknowledgements and saving the checkpoint
	// may use half the margin more.
	hardCtx, cancel := context.WithTimeout(ctx, r.untilDeadline(r.opts.DeadlineMargin/2))
	defer cancel()

	stream, err := c.deps.Streams.Open(hardCtx, r.opts.Scope, start)
	if err != nil {
		return r.streamFailed(classify(err, r.opts.Scope, from))
	}
	r.stream = stream
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stream.Close(cctx)
	}()

	if r.batch, err = c.deps.Publisher.Begin(hardCtx, r.opts.InFlightMessages); err != nil {
		return err
	}
	defer r.batch.End()

	invalidate, drainErr := r.drain(hardCtx)
	if errors.Is(drainErr, checkpoint.ErrFenced) {
		fenced = true
		return drainErr
	}

	// Wait for every acknowledgement (bounded by the hard deadline), then move the checkpoint.
	flushStart := c.deps.Now()
	flushErr := r.batch.Flush(hardCtx)
	r.publishTime += c.deps.Now().Sub(flushStart)
	r.collectAcks()

	// The checkpoint goes to the newest position whose events were all acknowledged: the last
	// event, or the post-batch resume token of the last empty batch, so that a quiet scope's
	// checkpoint keeps moving within the retention window. An invalidate ends the stream: the
	// next run must startAfter it.
	final := r.lastAcked
	if invalidate != nil && drainErr == nil && flushErr == nil {
		final = *invalidate
	}
	if len(final.ResumeToken) > 0 {
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.save(saveCtx, final); err != nil {
			if errors.Is(err, checkpoint.ErrFenced) {
				fenced = true
			}
			return errors.Join(drainErr, flushErr, err)
		}
		r.sum.CheckpointSaved = true
	}
	if drainErr != nil {
		return drainErr
	}
	if flushErr != nil {
		return fmt.Errorf("publish to kafka: %w", flushErr)
	}
	return nil
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

// drain reads and publishes until a stop condition. It returns the invalidate position when the
// stream was invalidated.
//
// Reading runs in its own goroutine (see read) so that waiting for the server's next batch
// overlaps converting and publishing the previous one; this goroutine converts, publishes,
// consumes acknowledgements and decides when to stop. Events the reader fetched beyond the stop
// point are simply dropped: the checkpoint never covers them.
func (r *run) drain(ctx context.Context) (*checkpoint.Position, error) {
	started := r.c.deps.Now()
	lastEvent := started    // when the reader got the newest event handled
	var quiet time.Duration // how long the stream has had nothing, as of the newest empty batch
	// Reads stop at the soft deadline (deadline - margin); publishing and the final save may take
	// until ctx's hard deadline.
	readCtx, stopReading := context.WithTimeout(ctx, r.untilDeadline(r.opts.DeadlineMargin))
	items := make(chan item, readAheadItems)
	credit := semaphore.NewWeighted(readAheadBytes)
	go r.read(readCtx, items, credit)
	defer func() {
		stopReading()
		for range items { // wait for the reader: the stream is not safe for concurrent use
		}
	}()

	for {
		r.collectAcks()
		if err := r.batch.Err(); err != nil {
			return nil, fmt.Errorf("publish to kafka: %w", err)
		}
		if err := r.maybeSave(ctx); err != nil {
			return nil, err
		}
		if reason := r.stopReason(started, quiet); reason != "" {
			r.sum.StopReason = reason
			return nil, nil
		}
		var it item
		var ok bool
		select {
		case it, ok = <-items:
		case <-ctx.Done():
			return nil, fmt.Errorf("change stream on %s: %w", r.opts.Scope, ctx.Err())
		}
		switch {
		case !ok || (it.err != nil && ctx.Err() == nil && softDeadlinePassed(readCtx, it.err)):
			// The reader stopped because the soft deadline passed.
			r.sum.StopReason = StopDeadline
			return nil, nil
		case it.err != nil:
			return nil, r.streamFailed(classify(it.err, r.opts.Scope, "the open stream"))
		case it.conv == nil:
			// An empty batch: every event read so far is handled, and the stream's post-batch
			// resume token may become the checkpoint once they are all acknowledged.
			quiet = it.at.Sub(lastEvent)
			if len(it.token) > 0 {
				pos := checkpoint.Position{ResumeToken: it.token, ClusterTime: r.lastClusterTime}
				r.queue = append(r.queue, pending{needs: r.lastSeq, pos: pos})
			}
			continue
		}
		lastEvent, quiet = it.at, 0
		inv, err := r.handle(ctx, <-it.conv)
		credit.Release(it.weight)
		if err != nil {
			return nil, err
		}
		if inv != nil {
			r.sum.StopReason = StopInvalidate
			return inv, nil
		}
	}
}

// softDeadlinePassed reports whether a read error is the soft deadline ending the read. The
// driver sets its socket deadline from the context's, so the read can fail with a timeout a
// moment before readCtx.Err() is set; a read error at (or within deadlineSlack of) the deadline
// is the deadline too. Stopping cleanly there is safe either way: the checkpoint only ever covers
// acknowledged events, and the next run resumes from it.
func softDeadlinePassed(readCtx context.Context, err error) bool {
	if readCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	dl, ok := readCtx.Deadline()
	return ok && time.Until(dl) < deadlineSlack
}

const deadlineSlack = 50 * time.Millisecond

// Read-ahead bounds: events fetched from the stream but not yet handled.
const (
	readAheadItems = 1024
	readAheadBytes = 16 << 20
)

// item is what the reader hands the drain, in stream order: an event being converted, or after
// an empty batch the stream's resume token, or the error that ended the stream.
type item struct {
	conv   <-chan converted // delivers the event once a converter is done with it
	at     time.Time        // when the reader got it
	weight int64            // read-ahead bytes it holds
	token  bson.Raw         // after an empty batch: the post-batch resume token
	err    error
}

// read pulls events from the stream until ctx is done or the stream fails, then closes out.
// TryNext waits up to the stream's max await time for a batch: no sleeping, no busy loop. Events
// are converted by one goroutine per CPU while the reader fetches the next ones; out keeps stream
// order because each item carries its own result channel.
func (r *run) read(ctx context.Context, out chan<- item, credit *semaphore.Weighted) {
	type job struct {
		raw    bson.Raw
		result chan<- converted
	}
	jobs := make(chan job, readAheadItems)
	var workers sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		workers.Go(func() {
			for j := range jobs {
				j.result <- r.convert(j.raw)
			}
		})
	}
	defer func() {
		close(jobs)
		workers.Wait()
		close(out)
	}()
	send := func(it item) bool {
		select {
		case out <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		if r.stream.TryNext(ctx) {
			raw := bytes.Clone(r.stream.Current()) // the driver reuses its buffer
			w := min(int64(len(raw)), readAheadBytes)
			if credit.Acquire(ctx, w) != nil {
				return
			}
			result := make(chan converted, 1)
			jobs <- job{raw: raw, result: result} // at most waits for a converter to take an earlier job
			if !send(item{conv: result, weight: w, at: r.c.deps.Now()}) {
				return
			}
			continue
		}
		if err := r.stream.Err(); err != nil {
			send(item{err: err})
			return
		}
		if !send(item{token: bytes.Clone(r.stream.ResumeToken()), at: r.c.deps.Now()}) {
			return
		}
	}
}

// stopReason returns why the drain should stop now, or "". quiet is how long the stream has
// returned nothing (measured by the reader, so events waiting to be handled never count as idle).
func (r *run) stopReason(started time.Time, quiet time.Duration) string {
	now := r.c.deps.Now()
	switch {
	case r.sum.Events >= r.opts.MaxEvents:
		return StopMaxEvents
	case r.sum.Bytes >= r.opts.MaxBytes:
		return StopMaxBytes
	case r.untilDeadline(r.opts.DeadlineMargin) <= 0:
		return StopDeadline
	case r.opts.ContinuousDrain > 0 && now.Sub(started) >= r.opts.ContinuousDrain:
		return StopContinuousDrain
	case r.opts.ContinuousDrain <= 0 && quiet >= r.opts.IdleTimeout:
		return StopIdle
	}
	return ""
}

// converted is an event after the pure, parallelisable part of handling it: decoded, checked
// against the scope and encoded as a Kafka message.
type converted struct {
	ev   changeevent.Event
	msg  kafka.Message // empty when skip or invalidate
	skip bool          // out of scope or an unknown operation type: not published
	err  error
}

// convert decodes a raw change stream event and encodes its message. It touches no run state, so
// several run at once (see drain).
func (r *run) convert(raw bson.Raw) converted {
	ev, err := changeevent.FromChangeStream(raw)
	if err != nil {
		return converted{err: fmt.Errorf("change stream on %s: %w", r.opts.Scope, err)}
	}
	c := converted{ev: ev}
	switch {
	case ev.Operation == changeevent.Invalidate:
		return c
	case !ev.Operation.Known() || !r.opts.Scope.Contains(&ev):
		c.skip = true
		return c
	}
	value, err := changeevent.Marshal(&ev)
	if err != nil {
		return converted{err: err}
	}
	key, err := changeevent.Key(&ev)
	if err != nil {
		return converted{err: fmt.Errorf("key of %s event on %s: %w", ev.Operation, ev.NS, err)}
	}
	c.msg = kafka.Message{Key: key, Value: value, Headers: changeevent.Headers(&ev)}
	return c
}

// handle publishes one converted event (claim-checking it when too large) and queues its
// position for the checkpoint. It returns the position of an invalidate event.
func (r *run) handle(ctx context.Context, c converted) (*checkpoint.Position, error) {
	if c.err != nil {
		return nil, c.err
	}
	ev := &c.ev
	pos := checkpoint.Position{ResumeToken: ev.ResumeToken, ClusterTime: ev.ClusterTime}
	r.lastClusterTime = ev.ClusterTime
	if ev.Operation == changeevent.Invalidate {
		pos.AfterInvalidate = true
		return &pos, nil
	}
	if c.skip {
		r.sum.Skipped++
		r.c.deps.Logger.Debug("skip event", "op", ev.Operation, "ns", ev.NS.String())
		r.queue = append(r.queue, pending{needs: r.lastSeq, pos: pos})
		return nil, nil
	}

	msg, claimChecked, err := r.fit(ctx, ev, c.msg)
	if err != nil {
		return nil, err
	}
	msgs, err := r.copies(ev, msg)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, m := range msgs {
		n := int64(m.Size())
		if err := r.waitForRoom(ctx, n); err != nil {
			return nil, err
		}
		t := r.c.deps.Now()
		seq, err := r.batch.Publish(ctx, m)
		r.publishTime += r.c.deps.Now().Sub(t)
		if err != nil {
			return nil, fmt.Errorf("publish to kafka: %w", err)
		}
		r.lastSeq = seq
		r.inFlightBytes += n
		size += n
	}
	// The event's position needs its last message, and so (acknowledgements count in publish
	// order) every copy of a collection event.
	r.queue = append(r.queue, pending{needs: r.lastSeq, pos: pos, size: size, published: true})

	r.sum.Events++
	r.sum.Messages += len(msgs)
	r.sum.ByOperation[string(ev.Operation)]++
	r.sum.Bytes += size
	if claimChecked {
		r.sum.ClaimChecks++
	}
	if r.sum.FirstClusterTime == nil {
		r.sum.FirstClusterTime = clusterTime(ev.ClusterTime)
	}
	r.sum.LastClusterTime = clusterTime(ev.ClusterTime)
	return nil, nil
}

// copies returns the messages that publish ev: msg itself for a document change, which the
// key's hash places; for a collection event (drop, rename, dropDatabase) one copy pinned to each
// partition of the topic, each with the barrier header naming the partition count, so that every
// partition sees the event at the same point relative to its own document changes.
func (r *run) copies(ev *changeevent.Event, msg kafka.Message) ([]kafka.Message, error) {
	if ev.Operation.IsDocumentChange() {
		return []kafka.Message{msg}, nil
	}
	n, err := r.batch.Partitions()
	if err != nil {
		return nil, fmt.Errorf("publish %s event on %s to every partition: %w", ev.Operation, ev.NS, err)
	}
	headers := append(slices.Clip(msg.Headers), [2]string{changeevent.HeaderBarrier, strconv.Itoa(int(n))})
	out := make([]kafka.Message, n)
	for p := range n {
		out[p] = kafka.Message{Key: msg.Key, Value: msg.Value, Headers: headers, Partition: p, Pinned: true}
	}
	return out, nil
}

// fit returns msg, or when it is over the Kafka limit, the claim-check message that replaces it.
func (r *run) fit(ctx context.Context, ev *changeevent.Event, msg kafka.Message) (kafka.Message, bool, error) {
	if msg.Size() <= r.opts.MaxMessageBytes {
		return msg, false, nil
	}
	if r.c.deps.Blobs == nil {
		return kafka.Message{}, false, fmt.Errorf("%s event on %s is %d bytes, over the %d-byte Kafka limit, and no claim-check store is configured",
			ev.Operation, ev.NS, msg.Size(), r.opts.MaxMessageBytes)
	}
	stub, err := claimCheck(ctx, r.c.deps.Blobs, r.opts.ArchivePrefix, ev, msg.Value)
	if err != nil {
		return kafka.Message{}, false, err
	}
	if msg.Value, err = changeevent.Marshal(stub); err != nil {
		return kafka.Message{}, false, err
	}
	if msg.Size() > r.opts.MaxMessageBytes {
		return kafka.Message{}, false, fmt.Errorf("%s event on %s: even the claim-check message is %d bytes, over the %d-byte Kafka limit (document key too large?)",
			ev.Operation, ev.NS, msg.Size(), r.opts.MaxMessageBytes)
	}
	return msg, true, nil
}

// waitForRoom blocks while the unacknowledged bytes would exceed the in-flight limit.
func (r *run) waitForRoom(ctx context.Context, size int64) error {
	for r.inFlightBytes > 0 && r.inFlightBytes+size > r.opts.InFlightBytes {
		progress := r.batch.Progress()
		r.collectAcks()
		if r.inFlightBytes == 0 || r.inFlightBytes+size <= r.opts.InFlightBytes {
			return nil
		}
		if err := r.batch.Err(); err != nil {
			return fmt.Errorf("publish to kafka: %w", err)
		}
		t := r.c.deps.Now()
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("publish to kafka: %d bytes unacknowledged: %w", r.inFlightBytes, ctx.Err())
		}
		r.publishTime += r.c.deps.Now().Sub(t)
	}
	return nil
}

// collectAcks moves lastAcked over every queued event whose message (and all before it) Kafka
// acknowledged.
func (r *run) collectAcks() {
	acked := r.batch.Acked()
	n := 0
	for n < len(r.queue) && r.queue[n].needs <= acked {
		p := r.queue[n]
		r.lastAcked = p.pos
		if p.published {
			r.inFlightBytes -= p.size
			r.sum.Acknowledged++
			r.ackedSinceSave++
		}
		n++
	}
	if n > 0 {
		clear(r.queue[:n])
		r.queue = r.queue[n:]
	}
}

// maybeSave checkpoints the last acknowledged position every CheckpointEvery acknowledgements.
func (r *run) maybeSave(ctx context.Context) error {
	if r.ackedSinceSave < r.opts.CheckpointEvery || len(r.lastAcked.ResumeToken) == 0 {
		return nil
	}
	return r.save(ctx, r.lastAcked)
}

func (r *run) save(ctx context.Context, pos checkpoint.Position) error {
	if err := r.c.deps.Checkpoints.Save(ctx, r.lease, pos); err != nil {
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
	m.Put("DrainTime", metrics.Milliseconds, float64(r.sum.DrainMillis))
	m.Put("PublishTime", metrics.Milliseconds, float64(r.sum.PublishMillis))
	m.Put("ReplicationLagSeconds", metrics.Seconds, r.sum.LagSeconds)
	if ret := r.opts.ChangeStreamRetention; ret > 0 {
		m.Put("LagRetentionFraction", metrics.None, r.sum.LagSeconds/ret.Seconds())
	}
	m.Put("CheckpointSaved", metrics.Count, b2f(r.sum.CheckpointSaved))
	m.Put("Errors", metrics.Count, b2f(err != nil))
	if _, ok := m.Value("HistoryLost"); !ok {
		m.Put("HistoryLost", metrics.Count, 0)
	}
	if merr := m.Emit(r.c.deps.Metrics, now); merr != nil {
		r.c.deps.Logger.Warn("emit metrics", "error", merr)
	}

	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
	}
	r.c.deps.Logger.LogAttrs(context.Background(), level, "capture summary", slog.Any("summary", r.sum))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
