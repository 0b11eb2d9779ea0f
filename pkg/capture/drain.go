package capture

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"golang.org/x/sync/semaphore"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

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

	var group []converted // the events of the latest item not handled yet, in stream order
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
		if len(group) > 0 {
			c := group[0]
			group[0] = converted{}
			group = group[1:]
			inv, err := r.handle(ctx, c)
			credit.Release(c.weight)
			if err != nil {
				return nil, err
			}
			if inv != nil {
				r.sum.StopReason = StopInvalidate
				return inv, nil
			}
			continue
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
				r.acks.Track(checkpoint.Position{ResumeToken: it.token, ClusterTime: r.lastClusterTime}, 0, 0)
			}
			continue
		}
		lastEvent, quiet = it.at, 0
		group = <-it.conv // handled one event per turn of the loop, stop conditions checked before each
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

// Events are handed on in groups, so that the per-event cost of the hand-off (a result channel,
// a read-ahead credit, two channel sends) is paid per group: a group holds at most groupEvents
// events and groupBytes bytes (unless one event is larger), and never waits for the server: it
// ends with the events the driver has buffered.
const (
	groupEvents = 64
	groupBytes  = 256 << 10
	arenaBytes  = 256 << 10 // events are copied out of the driver's buffer into arenas this large
)

// item is what the reader hands the drain, in stream order: a group of events being converted,
// or after an empty batch the stream's resume token, or the error that ended the stream.
type item struct {
	conv  <-chan []converted // delivers the group's events once a converter is done with them
	at    time.Time          // when the reader got the group's last event
	token bson.Raw           // after an empty batch: the post-batch resume token
	err   error
}

// buffered is implemented by a Stream that knows how many events it holds without asking the
// server (the driver's change stream). A Stream without it hands on one event per group.
type buffered interface {
	RemainingBatchLength() int
}

// read pulls events from the stream until ctx is done or the stream fails, then closes out.
// TryNext waits up to the stream's max await time for a batch: no sleeping, no busy loop. Groups
// of events are converted by one goroutine per CPU while the reader fetches the next ones; out
// keeps stream order because each item carries its own result channel. Each event is copied once
// out of the driver's buffer (which the driver reuses), into an arena shared by the events copied
// after it; the converted event points into it.
func (r *run) read(ctx context.Context, out chan<- item, credit *semaphore.Weighted) {
	type job struct {
		raws   []bson.Raw
		result chan<- []converted
	}
	jobs := make(chan job, readAheadItems)
	var workers sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		workers.Go(func() {
			for j := range jobs {
				cs := make([]converted, len(j.raws))
				for i, raw := range j.raws {
					cs[i] = r.convert(raw)
					cs[i].weight = weight(raw)
				}
				j.result <- cs
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
	buf, _ := r.stream.(buffered)
	var (
		arena []byte
		group []bson.Raw
		bytes int64
	)
	// flush hands the group on: its read-ahead credit first, then the job, then the item.
	flush := func() bool {
		if len(group) == 0 {
			return true
		}
		if credit.Acquire(ctx, bytes) != nil {
			return false
		}
		result := make(chan []converted, 1)
		jobs <- job{raws: group, result: result} // at most waits for a converter to take an earlier job
		group, bytes = nil, 0
		return send(item{conv: result, at: r.c.deps.Now()})
	}
	for {
		if r.stream.TryNext(ctx) {
			cur := r.stream.Current()
			// A group holds at most groupBytes, or one event alone: its credit (the sum of its
			// events' weights) never exceeds the whole read-ahead.
			if len(group) > 0 && bytes+weight(cur) > groupBytes && !flush() {
				return
			}
			if cap(arena)-len(arena) < len(cur) {
				arena = make([]byte, 0, max(arenaBytes, len(cur)))
			}
			start := len(arena)
			arena = append(arena, cur...)
			raw := bson.Raw(arena[start:len(arena):len(arena)])
			group = append(group, raw)
			bytes += weight(raw)
			if len(group) >= groupEvents || buf == nil || buf.RemainingBatchLength() == 0 {
				if !flush() {
					return
				}
			}
			continue
		}
		if !flush() { // (empty: every group ends with the driver's buffer)
			return
		}
		if err := r.stream.Err(); err != nil {
			send(item{err: err})
			return
		}
		if !send(item{token: slices.Clone(r.stream.ResumeToken()), at: r.c.deps.Now()}) {
			return
		}
	}
}

// weight is the read-ahead credit an event holds until it is handled (capped at the whole
// read-ahead, so that one huge event still goes through). A group's credit is the sum of its
// events'.
func weight(raw bson.Raw) int64 { return min(int64(len(raw)), readAheadBytes) }

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

// convert decodes a raw change stream event and encodes its message. It touches no run state, so
// several run at once (see drain).
func (r *run) convert(raw bson.Raw) converted {
	c := convertEvent(raw, r.opts.Scope.Contains)
	if c.err != nil {
		c.err = fmt.Errorf("change stream on %s: %w", r.opts.Scope, c.err)
	}
	return c
}

// handle publishes one converted event (claim-checking it when too large) and queues its
// position for the checkpoint. It returns the position of an invalidate event.
func (r *run) handle(ctx context.Context, c converted) (*checkpoint.Position, error) {
	if c.err != nil {
		return nil, r.deadLetter(ctx, c.raw, c.err)
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
		r.acks.Track(pos, 0, 0)
		return nil, nil
	}

	msg, claimChecked, err := fitMessage(ctx, r.c.deps.Blobs, r.opts.ArchivePrefix, r.opts.MaxMessageBytes, ev, c.msg)
	if err != nil {
		return nil, r.deadLetter(ctx, c.raw, err)
	}
	msgs, err := r.copies(ev, msg)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, m := range msgs {
		size += int64(m.Size())
	}
	if err := r.waitForRoom(ctx, size); err != nil {
		return nil, err
	}
	var last uint64
	for _, m := range msgs {
		t := r.c.deps.Now()
		seq, err := r.batch.Publish(ctx, m)
		r.publishTime += r.c.deps.Now().Sub(t)
		if err != nil {
			return nil, fmt.Errorf("publish to kafka: %w", err)
		}
		last = seq
	}
	// The event's position needs its last message, and so (acknowledgements count in publish
	// order) every copy of a collection event.
	r.acks.Track(pos, last, size)

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
	r.lastPublished = ev.ClusterTime // Run fills in Summary.LastClusterTime from it
	return nil, nil
}

// copies returns the messages that publish ev: msg itself for a document change, or one copy
// per partition of the topic for a collection event (barrierCopies).
func (r *run) copies(ev *changeevent.Event, msg kafka.Message) ([]kafka.Message, error) {
	if ev.Operation.IsDocumentChange() {
		r.one[0] = msg // handle is done with it before the next event
		return r.one[:], nil
	}
	n, err := r.batch.Partitions()
	if err != nil {
		return nil, fmt.Errorf("publish %s event on %s to every partition: %w", ev.Operation, ev.NS, err)
	}
	return barrierCopies(ev, msg, n), nil
}

// waitForRoom blocks while publishing size more bytes would exceed the in-flight limit.
func (r *run) waitForRoom(ctx context.Context, size int64) error {
	for {
		progress := r.batch.Progress()
		r.collectAcks()
		if r.acks.Room(size) {
			return nil
		}
		if err := r.batch.Err(); err != nil {
			return fmt.Errorf("publish to kafka: %w", err)
		}
		t := r.c.deps.Now()
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("publish to kafka: %d bytes unacknowledged: %w", r.acks.InFlight(), ctx.Err())
		}
		r.publishTime += r.c.deps.Now().Sub(t)
	}
}
