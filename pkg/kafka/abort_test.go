package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/docdb-dr/docdb-dr/internal/devstack/certs"
)

// slowBroker is a kfake cluster whose produce requests can be made slow: while delay is set,
// each produce request waits that long at the broker before the broker appends it (as a broker
// whose request queue or disk is stalled would). It records, at the broker, when each produce
// request arrived, when the broker went on to append it, and how many records it held.
type slowBroker struct {
	*kfake.Cluster
	delay atomic.Int64 // nanoseconds; 0: not slow

	mu   sync.Mutex
	seen []produced
}

type produced struct {
	arrived, appended time.Time
	records           int
}

func newSlowBroker(t testing.TB, opts ...kfake.Opt) *slowBroker {
	t.Helper()
	b := &slowBroker{Cluster: newCluster(t, opts...)}
	b.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		b.KeepControl()
		arrived := time.Now()
		if d := time.Duration(b.delay.Load()); d > 0 {
			b.SleepControl(func() { time.Sleep(d) })
		}
		n := 0
		for _, topic := range req.(*kmsg.ProduceRequest).Topics {
			for _, p := range topic.Partitions {
				var rb kmsg.RecordBatch
				if rb.ReadFrom(p.Records) == nil {
					n += int(rb.NumRecords)
				}
			}
		}
		b.mu.Lock()
		b.seen = append(b.seen, produced{arrived: arrived, appended: time.Now(), records: n})
		b.mu.Unlock()
		return nil, nil, false // the broker appends it now
	})
	return b
}

func (b *slowBroker) produced() []produced {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]produced(nil), b.seen...)
}

// publishSlowly publishes n messages after the broker turned slow, then flushes with a timeout
// shorter than the broker's delay: the flush fails with ErrNotAcknowledged while one produce
// request is held at the broker and the rest of the messages wait in the producer.
func publishSlowly(t *testing.T, b *slowBroker, p *Publisher, delay time.Duration, n int) *Batch {
	t.Helper()
	ctx := context.Background()
	batch := p.Begin(1000)
	if _, err := batch.Publish(ctx, Message{Key: []byte("k0"), Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	if err := batch.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b.delay.Store(int64(delay))
	for i := range n {
		if _, err := batch.Publish(ctx, Message{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			time.Sleep(50 * time.Millisecond) // the first slow request is on its way; the rest queue behind it
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := batch.Flush(fctx)
	if !errors.Is(err, ErrNotAcknowledged) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("flush against a slow broker: %v, want ErrNotAcknowledged wrapping the deadline", err)
	}
	return batch
}

// TestAbortAfterFlushTimeoutAgainstSlowBroker: a flush times out against a slow broker and the
// publisher is aborted with time left. Checked at the broker: nothing of the run arrives after
// Abort returned; the request the broker was holding was appended before that (Abort waited for
// its answer), and the messages the producer still buffered never arrive.
func TestAbortAfterFlushTimeoutAgainstSlowBroker(t *testing.T) {
	b := newSlowBroker(t)
	p, err := NewPublisher(context.Background(), Settings{Brokers: b.ListenAddrs(), Topic: "changevents"})
	if err != nil {
		t.Fatal(err)
	}
	const delay, n = time.Second, 300
	batch := publishSlowly(t, b, p, delay, n)
	batch.End()

	abortStart := time.Now()
	actx, cancel := context.WithTimeout(context.Background(), 3*delay)
	defer cancel()
	if err := p.Abort(actx); err != nil {
		t.Fatalf("Abort with time to spare: %v", err)
	}
	ended := time.Now()
	if _, err := p.Begin(10).Publish(context.Background(), Message{Key: []byte("x")}); !errors.Is(err, ErrAborted) {
		t.Errorf("publish after Abort: %v, want ErrAborted", err)
	}

	time.Sleep(delay + 500*time.Millisecond) // anything late would arrive by now
	seen, appended := b.produced(), 0
	for _, r := range seen {
		if r.arrived.After(abortStart) {
			t.Errorf("a produce request of %d records reached the broker %v after Abort began", r.records, r.arrived.Sub(abortStart))
		}
		if r.appended.After(ended) {
			t.Errorf("a produce request of %d records was appended %v after Abort returned", r.records, r.appended.Sub(ended))
		}
		appended += r.records
	}
	inTopic := len(consume(t, b.ListenAddrs(), "changevents", appended))
	if inTopic != appended || appended >= 1+n {
		t.Errorf("%d records in the topic, %d appended by the requests the broker saw, of %d published: want equal, and fewer than published",
			inTopic, appended, 1+n)
	}
	t.Logf("abort took %v (the slow request answered); %d of %d messages reached the broker, in %d requests",
		ended.Sub(abortStart).Round(time.Millisecond), appended, 1+n, len(seen))
}

// TestAbortReportsWhatItCouldNotWaitFor: when the time left is shorter than the broker's delay,
// Abort returns at its deadline and says that a request was unanswered: the broker still holds
// it and may append it later (the limit of any client-side abort; docs/capture.md). Nothing the
// producer buffered is sent, even then.
func TestAbortReportsWhatItCouldNotWaitFor(t *testing.T) {
	b := newSlowBroker(t)
	p, err := NewPublisher(context.Background(), Settings{Brokers: b.ListenAddrs(), Topic: "changevents"})
	if err != nil {
		t.Fatal(err)
	}
	const delay, n = time.Second, 300
	batch := publishSlowly(t, b, p, delay, n)
	batch.End()
	abortStart := time.Now()
	actx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = p.Abort(actx)
	took := time.Since(abortStart)
	if err == nil || !strings.Contains(err.Error(), "1 requests") || took > 300*time.Millisecond {
		t.Fatalf("Abort past its deadline: %v after %v, want it to report 1 unanswered request at its deadline", err, took)
	}
	time.Sleep(delay + 500*time.Millisecond)
	late := 0
	for _, r := range b.produced() {
		if r.arrived.After(abortStart) {
			t.Errorf("a produce request of %d records reached the broker after Abort began", r.records)
		}
		if r.appended.After(abortStart) {
			late++
		}
	}
	if late > 1 {
		t.Errorf("%d requests appended after the abort, want at most the one the broker held", late)
	}
	t.Logf("Abort: %v; requests appended after it: %d", err, late)
}

// TestPublisherOverTLS: the publisher's gate speaks TLS itself (so that it counts Kafka
// frames): it verifies the broker's certificate and delivers.
func TestPublisherOverTLS(t *testing.T) {
	bundle, err := certs.New()
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, kfake.TLS(bundle.ServerTLS))
	cfg, err := SaramaConfig(Settings{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Net.TLS.Config = bundle.ClientTLS
	p, err := NewPublisherWithConfig(context.Background(), c.ListenAddrs(), "changevents", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := p.Begin(10)
	for i := range 5 {
		if _, err := b.Publish(ctx, Message{Key: []byte("k"), Value: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !cfg.Net.TLS.Enable {
		t.Error("NewPublisherWithConfig changed the caller's configuration")
	}
	// A broker whose certificate the client does not trust is refused.
	other, err := certs.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg2, _ := SaramaConfig(Settings{TLS: true})
	cfg2.Net.TLS.Config = other.ClientTLS
	if _, err := NewPublisherWithConfig(context.Background(), c.ListenAddrs(), "changevents", cfg2); err == nil {
		t.Error("connected to a broker with an untrusted certificate")
	}
}

func TestFramesCountsWhateverThePieces(t *testing.T) {
	var stream []byte
	for _, size := range []int{0, 1, 5, 300, 70000} {
		stream = append(stream, byte(size>>24), byte(size>>16), byte(size>>8), byte(size))
		stream = append(stream, make([]byte, size)...)
	}
	for _, piece := range []int{1, 3, 4, 7, 1000, len(stream)} {
		var f frames
		for i := 0; i < len(stream); i += piece {
			f.feed(stream[i:min(i+piece, len(stream))])
		}
		if f.complete != 5 {
			t.Errorf("fed in pieces of %d: %d frames, want 5", piece, f.complete)
		}
	}
	var f frames
	f.feed(stream[:len(stream)-1])
	if f.complete != 4 {
		t.Errorf("a frame one byte short counted: %d, want 4", f.complete)
	}
}
