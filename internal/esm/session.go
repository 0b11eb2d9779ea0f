package esm

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-lambda-go/events"
)

// groupHandler is the sarama.ConsumerGroupHandler. Each partition claim's
// goroutine forwards messages into one channel; one batcher per session
// turns that stream into events, so a batch can span partitions as an ESM
// batch does. sarama runs one session at a time, so the per-session fields
// are replaced in Setup and only read after it.
type groupHandler struct {
	src    *EventSource
	runCtx context.Context // handler invocations outlive a rebalance, as Lambda invocations do

	in   chan *sarama.ConsumerMessage
	done chan struct{}
}

// Setup starts the session's batcher.
func (g *groupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	g.in = make(chan *sarama.ConsumerMessage)
	g.done = make(chan struct{})
	b := &batcher{src: g.src, sess: sess, in: g.in}
	go func() {
		defer close(g.done)
		b.run(g.runCtx)
	}()
	g.src.log.Info("session started", "member", sess.MemberID(), "generation", sess.GenerationID(),
		"claims", fmt.Sprint(sess.Claims()))
	return nil
}

// ConsumeClaim forwards one partition's messages, in offset order, to the
// batcher until the session ends.
func (g *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	done := sess.Context().Done()
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			select {
			case g.in <- m:
			case <-done:
				return nil
			}
		case <-done:
			return nil
		}
	}
}

// Cleanup waits for the batcher, so that a batch whose handler is still
// running is marked and committed before sarama's final commit of the
// session.
func (g *groupHandler) Cleanup(sarama.ConsumerGroupSession) error {
	<-g.done
	return nil
}

// batcher builds batches from one session's messages and delivers them.
type batcher struct {
	src  *EventSource
	sess sarama.ConsumerGroupSession
	in   <-chan *sarama.ConsumerMessage
	held *sarama.ConsumerMessage // a message that did not fit the previous batch
}

// run collects and delivers batches until the session ends. A batch not yet
// delivered when it ends is dropped uncommitted; the partition's next owner
// reads it again from the committed offset.
func (b *batcher) run(runCtx context.Context) {
	for {
		batch := b.collect()
		if batch == nil {
			return
		}
		if !b.deliver(runCtx, batch) {
			return
		}
	}
}

// collect returns the next batch, or nil when the session ends first. It
// waits for a first record, then returns when BatchSize records are in,
// the next record would push the payload past MaxPayloadBytes, or
// BatchingWindow has passed since the first record.
func (b *batcher) collect() []*sarama.ConsumerMessage {
	cfg := b.src.cfg
	done := b.sess.Context().Done()

	first := b.held
	b.held = nil
	if first == nil {
		select {
		case first = <-b.in:
		case <-done:
			return nil
		}
	}
	batch := []*sarama.ConsumerMessage{first}
	size := recordSize(first)

	window := time.NewTimer(cfg.BatchingWindow)
	defer window.Stop()
	for len(batch) < cfg.BatchSize {
		select {
		case m := <-b.in:
			n := recordSize(m)
			if size+n > cfg.MaxPayloadBytes {
				b.held = m
				return batch
			}
			size += n
			batch = append(batch, m)
		case <-window.C:
			return batch
		case <-done:
			return nil
		}
	}
	return batch
}

// deliver hands the batch to the handler until it is through, then marks
// and commits every record's offset. It returns false when the session ended
// first; nothing of the batch is committed then.
func (b *batcher) deliver(runCtx context.Context, batch []*sarama.ConsumerMessage) bool {
	start := time.Now()
	if !b.handle(runCtx, batch) {
		return false
	}
	for _, m := range batch {
		b.sess.MarkMessage(m, "")
	}
	b.sess.Commit()
	b.src.log.Debug("batch handled", "records", len(batch), "duration", time.Since(start))
	return true
}

// handle invokes the handler with the records until it succeeds, retrying
// with backoff for ever; with BisectBatchOnFunctionError a failed batch of
// several records is split in two halves instead, handled in order (each
// record of a partition stays behind the ones before it). It returns false
// when the session ended first.
func (b *batcher) handle(runCtx context.Context, batch []*sarama.ConsumerMessage) bool {
	src, cfg := b.src, b.src.cfg
	ev := buildEvent(batch, cfg.EventSourceARN, src.bootstrap())
	log := src.log.With("records", len(batch), "position", describePosition(ev))

	wait := cfg.RetryBackoff
	for attempt := 1; ; attempt++ {
		err := src.invoke(runCtx, ev)
		if err == nil {
			return true
		}
		if runCtx.Err() != nil || b.sess.Context().Err() != nil {
			log.Info("batch not committed: session ended; it will be redelivered", "err", err)
			return false
		}
		if cfg.BisectBatchOnFunctionError && len(batch) > 1 {
			half := len(batch) / 2
			log.Warn("handler failed; bisecting the batch", "err", err, "halves", fmt.Sprintf("%d+%d", half, len(batch)-half))
			return b.handle(runCtx, batch[:half]) && b.handle(runCtx, batch[half:])
		}
		if attempt >= cfg.WarnAfterAttempts {
			log.Error("BATCH STUCK: handler keeps failing; retrying the same records, none are skipped",
				"attempt", attempt, "err", err, "backoff", wait)
		} else {
			log.Warn("handler failed; retrying the same batch", "attempt", attempt, "err", err, "backoff", wait)
		}
		if !sleep(b.sess.Context(), wait) {
			log.Info("batch not committed: session ended; it will be redelivered")
			return false
		}
		wait = min(2*wait, cfg.MaxRetryBackoff)
	}
}

// invoke calls the handler once, as Lambda would: bounded by HandlerTimeout
// and with a panic turned into an error.
func (s *EventSource) invoke(ctx context.Context, ev events.KafkaEvent) (err error) {
	if s.cfg.HandlerTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.HandlerTimeout)
		defer cancel()
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return s.handler(ctx, ev)
}

// describePosition names the offsets a batch covers, e.g.
// "changevents-0:10..19,changevents-1:4..4", for logs.
func describePosition(ev events.KafkaEvent) string {
	keys := make([]string, 0, len(ev.Records))
	for k := range ev.Records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		recs := ev.Records[k]
		parts = append(parts, fmt.Sprintf("%s:%d..%d", k, recs[0].Offset, recs[len(recs)-1].Offset))
	}
	return strings.Join(parts, ",")
}
