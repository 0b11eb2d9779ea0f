package reliability

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// Crashes of the apply function and redeliveries. The event source mapping redelivers a batch
// until an invocation returns success, so each crash shows up as a failed invocation followed
// by a successful one of the same records.

// TestApplyCrashAfterDRWriteBeforeArchive kills apply after it wrote documents to DR, as it is
// about to write its first delete archive object.
func TestApplyCrashAfterDRWriteBeforeArchive(t *testing.T) {
	fault := armed()
	var writesBeforeCrash int64
	h := newHarness(t, harnessOptions{
		DR: func(d apply.DR) apply.DR { return hookedDR{DR: d} },
		Archive: func(a apply.Archive) apply.Archive {
			return hookedArchive{Archive: a, beforePut: func(ctx context.Context, key string) error {
				c := crashOf(ctx)
				if c == nil || !strings.Contains(key, "deletes/") {
					return nil
				}
				// Apply PUTs a segment's objects alongside its DR writes: wait for one of them to
				// be done (a segment of deletes only has none; a later batch then crashes).
				for wait := time.Now().Add(5 * time.Second); c.drWrites.Load() == 0 && time.Now().Before(wait); {
					time.Sleep(time.Millisecond)
				}
				if c.drWrites.Load() > 0 && fault.take() {
					writesBeforeCrash = c.drWrites.Load()
					return c.fire()
				}
				return nil
			}}
		},
		Handler: crashable(nil),
	})
	h.write(10)
	h.settle()
	if fault.count() != 1 || writesBeforeCrash == 0 {
		t.Fatalf("the crash fired %d times after %d DR writes; want once, after at least one", fault.count(), writesBeforeCrash)
	}
	failed := h.failedApplies()
	if failed != 1 {
		t.Fatalf("%d failed apply invocations, want exactly the crashed one", failed)
	}
	l := h.account()
	record(t, "apply crashes after writing to DR, before writing the delete archive",
		"invocation fails; the mapping redelivers the batch; the DR writes are repeated idempotently and the deletes archived", l)
}

// TestApplyCrashAfterArchiveBeforeSuccess kills apply after every DR and archive write of a
// batch succeeded, before it could report success: the whole batch is delivered again.
func TestApplyCrashAfterArchiveBeforeSuccess(t *testing.T) {
	fault := armed()
	h := newHarness(t, harnessOptions{
		Handler: crashable(func(c *crash, sum apply.Summary, err error) error {
			if err == nil && sum.ArchivePuts > 0 && fault.take() {
				return c.fire()
			}
			return err
		}),
	})
	h.write(10)
	h.settle()
	if fault.count() != 1 || h.failedApplies() != 1 {
		t.Fatalf("crash fired %d times, %d failed invocations; want 1 and 1", fault.count(), h.failedApplies())
	}
	l := h.account()
	if l.ArchiveLines != l.Archived {
		t.Errorf("the archive holds %d lines for %d deletes: the redelivery added copies instead of overwriting its objects", l.ArchiveLines, l.Archived)
	}
	record(t, "apply crashes after writing DR and the archive, before returning success",
		"the mapping redelivers the batch; DR writes are repeated idempotently and the archive objects are rewritten under the same keys (no duplicate lines)", l)
}

// TestDuplicateDelivery delivers every batch twice in a row, then replays the whole topic
// through a second consumer group (an operator resetting the offsets).
func TestDuplicateDelivery(t *testing.T) {
	h := newHarness(t, harnessOptions{
		Handler: func(next applyFunc) applyFunc {
			return func(ctx context.Context, ev events.KafkaEvent) (apply.Summary, error) {
				if _, err := next(ctx, ev); err != nil {
					return apply.Summary{}, err
				}
				return next(ctx, ev)
			}
		},
	})
	h.write(10)
	h.settle()
	before := h.documents(h.dr)
	h.replayTopic("reliability-replay")
	after := h.documents(h.dr)
	if len(before) != len(after) {
		t.Fatalf("replaying the topic changed DR from %d to %d documents", len(before), len(after))
	}
	for i := range before {
		if before[i].key != after[i].key || string(before[i].raw) != string(after[i].raw) {
			t.Fatalf("replaying the topic changed DR document %s", before[i].raw)
		}
	}
	l := h.account()
	record(t, "every batch delivered twice, then the whole topic replayed by a new consumer group",
		"DR is unchanged by the copies (upserting replaces, absolute updates); archive objects are rewritten under the same keys", l)
}

// TestPoisonRecords puts records apply can never use into the topic between real changes:
// they are dead-lettered and the partition keeps moving.
func TestPoisonRecords(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.write(5)
	bad := &changeevent.Event{Version: 99, Operation: changeevent.Insert, NS: changeevent.Namespace{DB: watchDB, Coll: watchColl},
		DocumentKey: mustMarshal(bson.D{{Key: "_id", Value: 1}}), ResumeToken: mustMarshal(bson.D{{Key: "_data", Value: "00"}})}
	future, err := changeevent.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	h.produce([]*sarama.ProducerMessage{
		{Topic: topic, Key: sarama.StringEncoder("garbage"), Value: sarama.ByteEncoder("this is not BSON")},
		{Topic: topic, Key: sarama.StringEncoder("empty"), Value: sarama.ByteEncoder(nil)},
		{Topic: topic, Key: sarama.StringEncoder("future"), Value: sarama.ByteEncoder(future)},
		{Topic: topic, Key: sarama.StringEncoder("header"), Value: sarama.ByteEncoder(mustMarshal(bson.D{{Key: "v", Value: int32(1)}})),
			Headers: []sarama.RecordHeader{{Key: []byte(changeevent.HeaderFormat), Value: []byte("7")}}},
	})
	h.write(5)
	h.settle()
	l := h.account()
	if l.DeadLettered != 4 {
		t.Errorf("%d dead letters, want the 4 poison records", l.DeadLettered)
	}
	if h.failedApplies() != 0 {
		t.Errorf("%d apply invocations failed: a poison record must not fail its batch", h.failedApplies())
	}
	record(t, "4 poison records (not BSON, empty, unknown version, unknown format header) in the topic",
		"each is dead-lettered with its reason; the batches around them are applied; no invocation fails", l)
}

// replayTopic runs a second event source mapping with a new consumer group, which reads the
// topic from the start, and waits until it has applied all of it.
func (h *harness) replayTopic(group string) {
	h.t.Helper()
	saved := h.opts.GroupID
	h.opts.GroupID = group
	h.startMapping()
	h.opts.GroupID = saved
	h.waitApplied()
}

// produce writes records straight to the topic.
func (h *harness) produce(msgs []*sarama.ProducerMessage) {
	h.t.Helper()
	cfg, err := kafka.SaramaConfig(kafka.Settings{Brokers: h.brokers, Topic: topic})
	if err != nil {
		h.t.Fatal(err)
	}
	p, err := sarama.NewSyncProducer(h.brokers, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	defer p.Close()
	if err := p.SendMessages(msgs); err != nil {
		h.t.Fatal(err)
	}
}

func mustMarshal(v any) bson.Raw {
	b, err := bson.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
