package reliability

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// Outages and slowness of the services around the functions: Kafka, the DR cluster, S3 and the
// primary. Each is produced at the network level (the Kafka proxy, the Mongo server's
// SetUnavailable and DropConnections, the S3 endpoint's switch), so the failures reach the
// functions through the real driver, Kafka client and AWS SDK.

// kafkaFailBound is how long a capture invocation may take to fail when Kafka is unreachable:
// connecting is bounded by kafka.ConnectTimeout, delivery by the producer's retries.
const kafkaFailBound = kafka.ConnectTimeout + 10*time.Second

// TestKafkaUnreachable cuts Kafka off while changes wait to be captured.
func TestKafkaUnreachable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.write(5)
	before := h.checkpoint()
	h.kproxy.SetDown(true)

	// The container's producer was connected before the outage: delivery fails once its
	// retries run out.
	start := time.Now()
	sum, err := h.capture(nil)
	took := time.Since(start)
	if err == nil || !errors.Is(err, kafka.ErrNotAcknowledged) || !strings.Contains(sum.Error, "kafka") {
		t.Fatalf("capture with Kafka down: %v (summary error %q); want a Kafka delivery error", err, sum.Error)
	}
	if took > kafkaFailBound {
		t.Fatalf("capture took %v to fail, want under %v", took, kafkaFailBound)
	}
	t.Logf("delivery failure after %v: %v", took.Round(time.Millisecond), err)
	// The checkpoint did not move.
	if after := h.checkpoint(); !bytes.Equal(after.ResumeToken, before.ResumeToken) {
		t.Fatalf("the checkpoint moved although nothing was published (%d of 90 events after it)", h.eventsAfter(after.ResumeToken))
	}

	// The next invocation (a new producer, as functions/capture builds after a delivery failure)
	// cannot connect, and says so as quickly.
	start = time.Now()
	_, err = h.capture(nil)
	took2 := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "connect to kafka brokers") {
		t.Fatalf("capture with Kafka down and no producer: %v; want a connection error", err)
	}
	if took2 > kafkaFailBound {
		t.Fatalf("connecting took %v to fail, want under %v", took2, kafkaFailBound)
	}
	t.Logf("connection failure after %v: %v", took2.Round(time.Millisecond), err)
	if after := h.checkpoint(); !bytes.Equal(after.ResumeToken, before.ResumeToken) {
		t.Fatal("the checkpoint moved although nothing was published")
	}

	h.kproxy.SetDown(false)
	h.settle()
	l := h.account()
	record(t, "Kafka unreachable (proxy cuts every connection) while changes wait",
		"capture fails within the bound (delivery, then connecting), naming the broker; the checkpoint is unchanged; after recovery the next invocation publishes everything", l)
}

// TestKafkaSlow puts 200 ms of latency on every chunk of Kafka traffic, both ways, so that one
// produce round trip takes longer than capture's idle timeout.
func TestKafkaSlow(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.kproxy.SetDelay(200 * time.Millisecond)
	h.write(10)
	sum, err := h.capture(nil)
	if err != nil || sum.Events != 180 || sum.Acknowledged != 180 || !sum.CheckpointSaved {
		t.Fatalf("capture over a slow link: %d events, %d acknowledged, saved %t, error %v; want 180, 180, true, nil",
			sum.Events, sum.Acknowledged, sum.CheckpointSaved, err)
	}
	if sum.DrainMillis < 400 || sum.PublishMillis == 0 {
		t.Errorf("the invocation took %d ms, %d ms of it blocked on Kafka; the proxy adds 400 ms to every round trip", sum.DrainMillis, sum.PublishMillis)
	}
	t.Logf("capture over the slow link: drain %d ms, blocked on Kafka %d ms", sum.DrainMillis, sum.PublishMillis)
	h.settle()
	h.kproxy.SetDelay(0)
	l := h.account()
	record(t, "Kafka slow (200 ms added to every chunk, both ways)",
		"capture waits for the slow acknowledgements and succeeds; the checkpoint moves only once every event is acknowledged; apply keeps up", l)
}

// TestDRUnreachable takes the DR cluster down while apply has batches to write.
func TestDRUnreachable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.drSrv.SetUnavailable(true)
	h.write(5)
	if _, err := h.capture(nil); err != nil {
		t.Fatal(err)
	}
	waitForLong(t, "a failed apply invocation", 40*time.Second, func() bool { return h.failedApplies() > 0 })
	for _, c := range h.applyCalls() {
		if c.err != nil {
			t.Logf("apply with DR down: %v", c.err)
			if !strings.Contains(c.err.Error(), watchDB+"."+watchColl) {
				t.Errorf("apply error %q does not name the namespace it was writing", c.err)
			}
			break
		}
	}
	h.drSrv.SetUnavailable(false)
	h.settle()
	l := h.account()
	record(t, "DR cluster unreachable (server drops and refuses connections)",
		"apply invocations fail with the driver's error, naming the namespace; the mapping retries the same batch with backoff; once DR is back the retry converges", l)
}

// TestS3Unreachable cuts the archive bucket's endpoint off while deletes wait to be archived.
func TestS3Unreachable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.s3ep.down.Store(true)
	h.write(5)
	if _, err := h.capture(nil); err != nil {
		t.Fatal(err)
	}
	waitForLong(t, "a failed apply invocation", 40*time.Second, func() bool { return h.failedApplies() > 0 })
	var failure error
	for _, c := range h.applyCalls() {
		if c.err != nil {
			failure = c.err
			break
		}
	}
	if !strings.Contains(failure.Error(), "s3://"+bucket) {
		t.Errorf("apply error %q does not name the archive bucket", failure)
	}
	t.Logf("apply with S3 down: %v", failure)
	if h.s3ep.refused.Load() == 0 {
		t.Fatal("no S3 request was refused: the fault did not take effect")
	}
	h.s3ep.down.Store(false)
	h.settle()
	l := h.account()
	record(t, "S3 unreachable (endpoint closes every connection)",
		"apply invocations fail naming the bucket (after the SDK's retries); the batch is redelivered until the archive write succeeds", l)
}

// TestPrimaryDropsConnections cuts every connection to the primary twice while capture drains
// 1080 events. The driver resumes a change stream after a network error by itself, once: when
// that resume meets the connection pool the failure cleared (another operation, such as a
// checkpoint save, hit a dead connection first), the driver gives up and the invocation fails
// with the network error; the next invocation resumes from the checkpoint. Both happen (the
// second was seen in a full-suite run under load; 8 of 8 runs of this test alone resumed);
// neither loses an event or duplicates a DR document.
func TestPrimaryDropsConnections(t *testing.T) {
	h := newHarness(t, harnessOptions{CheckpointEvery: 200})
	h.write(60)
	drops := 0
	sum, err := h.capture(func(d capture.Deps, c *crash) capture.Deps {
		d.Streams = hookedStreams{StreamOpener: d.Streams, afterEvent: func(n int) {
			if n == 300 || n == 700 {
				h.primarySrv.DropConnections()
				drops++
			}
		}}
		return d
	})
	if drops != 2 {
		t.Fatalf("dropped connections %d times, want 2", drops)
	}
	switch {
	case err == nil && sum.Events == 1080:
		t.Log("the driver resumed the change stream across both drops")
	case err != nil && isNetworkError(err):
		t.Logf("the invocation failed with a network error after %d events: %v", sum.Events, err)
	default:
		t.Fatalf("capture across dropped connections: %d events, error %v; want 1080 without an error, or a network error", sum.Events, err)
	}
	h.settle()
	l := h.account()
	record(t, "primary drops every connection, twice, in the middle of a 1080-event drain",
		"the driver resumes the change stream from its last token, or, when its one resume attempt meets the cleared connection pool, the invocation fails with the network error and the next one resumes from the checkpoint", l)
}

// isNetworkError reports whether err is a lost connection as the driver reports it.
func isNetworkError(err error) bool {
	var le mongo.LabeledError
	if errors.As(err, &le) && le.HasErrorLabel("NetworkError") {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection pool") || strings.Contains(msg, "socket was unexpectedly closed") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")
}

// waitForLong is waitFor with a chosen timeout.
func waitForLong(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
