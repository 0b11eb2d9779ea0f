package reliability

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// Bugs found by these tests (docs/reliability.md, "Bugs found"). Each test failed until its bug
// was fixed and now guards against its return.

// TestStaleLeaseHolderDoesNotRegressDR guards against a consistency hole these tests found
// (fixed in 63ff1e7). Fencing protected the checkpoint, but not the topic: a capture that
// stalled past its lease still held events it had read, whose fullDocument (updateLookup) was
// the document as it was then, and published them after the new holder had published newer
// versions; apply, which applies an update with a fullDocument as a replace, put the older
// version back in DR. Its checkpoint write was fenced, no event was lost, but DR regressed until
// the document changed again. Now a run ends when its lease expires, so the stale holder
// publishes nothing after the takeover.
//
// Still open (docs/capture.md): messages already handed to the Kafka client before the lease
// expired and delivered after it (a stall inside the producer) need fencing on the broker side.
func TestStaleLeaseHolderDoesNotRegressDR(t *testing.T) {
	h := newHarness(t, harnessOptions{LeaseTTL: time.Second})
	h.write(5) // document 1: inserted, then updated (updated: true, n: 100)
	stalled, resume, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var staleErr error
	go func() {
		defer close(done)
		// The stale holder reads the 90 events (MAX_EVENTS 90), then stalls before publishing
		// the 10th.
		_, staleErr = h.invoke("stale-holder", capture.Overrides{MaxEvents: 90}, func(d capture.Deps, c *crash) capture.Deps {
			d.Checkpoints = frozenRenewals{Checkpoints: d.Checkpoints, frozen: stalled, resume: resume}
			d.Publisher = hookedPublisher{Publisher: d.Publisher, crash: c, before: func(n int, _ capture.Batch) error {
				if n == 10 {
					close(stalled)
					<-resume
				}
				return nil
			}}
			return d
		})
	}()
	<-stalled
	// Document 1 changes again while the holder is stalled.
	foo := h.primary.Database(watchDB).Collection(watchColl)
	must(t, func() error {
		_, err := foo.UpdateOne(h.ctx, bson.D{{Key: "_id", Value: int64(1)}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v2", Value: true}}}})
		return err
	})
	h.written++
	waitForLong(t, "the stale holder's lease to expire", 10*time.Second, func() bool {
		st := h.checkpoint()
		return st.Lease != nil && time.Now().After(st.Lease.ExpiresAt.Add(50*time.Millisecond))
	})
	if next, err := h.captureAs("new-holder", nil); err != nil || next.Events != 91 {
		t.Fatalf("new holder: %d events, error %v; want 91", next.Events, err)
	}
	close(resume)
	<-done
	// The frozen holder stops on its own at its unrenewed lease's expiry, or is fenced at its
	// first renewal or save after the takeover: either way it never moves the checkpoint again.
	if !errors.Is(staleErr, checkpoint.ErrFenced) && !errors.Is(staleErr, capture.ErrLeaseExpiring) {
		t.Fatalf("stale holder returned %v, want checkpoint.ErrFenced or capture.ErrLeaseExpiring", staleErr)
	}
	h.settle()
	var dr bson.M
	if err := h.dr.Database(watchDB).Collection(watchColl).FindOne(h.ctx, bson.D{{Key: "_id", Value: int64(1)}}).Decode(&dr); err != nil {
		t.Fatal(err)
	}
	if dr["v2"] != true {
		t.Errorf("BUG: DR document 1 regressed to the version the stale lease holder read before it stalled: %v (the primary has v2: true)", dr)
	}
	h.account()
}

// TestMalformedBSONValuesAreDeadLettered is the end-to-end regression test of two bugs found by
// FuzzUnmarshal (seeds in pkg/changeevent/testdata/fuzz/FuzzUnmarshal), fixed in 0992aac by
// validating every message recursively before the driver decodes it:
//   - zero-length-document: a value whose BSON length header is 0 (00 00 00 00) made
//     changeevent.Unmarshal panic inside the driver's bson.Raw.Validate (mongo-driver v1.17.x,
//     bsoncore.Document.Validate indexes d[length-1]; upstream GODRIVER-3931);
//   - nested-document-without-null: Validate does not read nested documents fully, so Unmarshal
//     accepted a delete whose documentKey is not valid BSON, and apply failed on its _id.
//
// Either way apply's invocation failed and the event source mapping retried the same batch
// forever: every later record of that partition waited. The record must be dead-lettered.
func TestMalformedBSONValuesAreDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value []byte
	}{
		{"zero-length-document", []byte{0, 0, 0, 0}},
		{"nested-document-without-null", []byte("\xd5\x00\x00\x00\x10v\x00\x01\x00\x00\x00\x02op\x00\a\x00\x00\x00delete\x00\x03ns\x00\x1f\x00\x00\x00\x02dB\x00\x04\x00\x00\x00b!r\x00\x02coll\x00\x04\x00\x00\x00foo\x00\x00\x03documentKey\x00\x1f\x00\x00\x00\x03_id\x00\x15\x00\x00\x00000000000000000000\x1100000000000\x0000000000\t00000000\x0000000000\x03resumeToken\x007\x00\x00\x00000000000000000000000000000000000000000000000000000\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.produce([]*sarama.ProducerMessage{{Topic: topic, Partition: 0, Key: sarama.StringEncoder("x"), Value: sarama.ByteEncoder(tc.value)}})
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				keys, err := h.archive.List(h.ctx, prefix+"deadletter/")
				if err != nil {
					t.Fatal(err)
				}
				if len(keys) == 1 && h.failedApplies() == 0 {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			var last error
			for _, c := range h.applyCalls() {
				if c.err != nil {
					last = c.err
				}
			}
			msg := fmt.Sprint(last)
			if i := strings.Index(msg, "\n"); i > 0 {
				msg = msg[:i] // the first line of a panic, without the stack
			}
			t.Fatalf("BUG: the record was not dead-lettered; %d apply invocations failed (the batch is stuck), last: %s", h.failedApplies(), msg)
		})
	}
}

// TestSRVURIRefusedBeforeDNS (fixed in 53f4a93): a mongodb+srv:// URI with TLS disabled is not
// loopback and must be refused by pkg/docdb's TLS policy, at once and with the policy's message.
// It used to be resolved first (connstring.ParseAndValidate looks up the SRV record), so the
// caller waited for DNS and got a DNS error that said nothing about TLS.
func TestSRVURIRefusedBeforeDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := docdb.Connect(ctx, docdb.Settings{URI: "mongodb+srv://u:pw-secret@cluster.example.invalid/", TLS: docdb.TLSDisabled}, nil)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "TLS is disabled") || took > time.Second {
		t.Errorf("BUG: mongodb+srv:// with TLS disabled: after %v, error %v; want the TLS policy error at once, before any DNS lookup", took.Round(time.Millisecond), err)
	}
}

// TestPublishAfterDeadlineIsRefused: kafka.Batch.Publish with a context that is already done
// must not send the message. It selects between the producer's input and ctx.Done() without
// checking ctx first, so when both are ready Go picks one at random and about half such messages
// are sent. Since 63ff1e7 a capture run's deadline is its lease's expiry, so this lets a stale
// holder publish one more (possibly older) message after another capture took over; seen as a
// 10th copy in TestLeaseExpiresWhileHolderRuns.
func TestPublishAfterDeadlineIsRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	pub, err := h.publisher()
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(h.ctx)
	cancel()
	sent := 0
	for i := range 200 { // a batch fails for good once Publish reports the context: one try each
		batch := pub.Begin(100)
		if _, err := batch.Publish(done, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte("late")}); err == nil {
			sent++
		}
		batch.End()
	}
	if sent > 0 {
		t.Errorf("BUG: %d of 200 messages were accepted by Publish with a context already done", sent)
	}
}
