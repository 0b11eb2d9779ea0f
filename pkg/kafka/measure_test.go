package kafka

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The measurements behind keeping sarama with an abort path rather than moving the producer to
// franz-go's kgo (commit message and docs/capture.md). They are not a pass/fail check; run them
// with
//
//	DOCDBDR_MEASURE=1 go test -run TestMeasureAbortPaths -v ./pkg/kafka/
//	go test -run x -bench Produce -benchtime 50000x -count 3 ./pkg/kafka/

// abortVariant publishes 1 message, turns the broker slow, publishes n more, lets a flush time
// out after 200 ms, aborts with budget, and reports what the broker saw.
type abortVariant struct {
	name string
	run  func(t *testing.T, b *slowBroker, n int, budget time.Duration) (abortTook time.Duration, abortErr error)
}

type abortOutcome struct {
	abortTook    time.Duration
	abortErr     bool
	lateRequests int // produce requests appended after the abort returned
	lateRecords  int
	sentAfter    int // produce requests that reached the broker after the abort began
	visibleRU    int // records a read_uncommitted consumer sees
	visibleRC    int // records a read_committed consumer sees
	neverSent    int // published records that never reached the broker
}

func TestMeasureAbortPaths(t *testing.T) {
	if os.Getenv("DOCDBDR_MEASURE") == "" {
		t.Skip("set DOCDBDR_MEASURE=1 to measure")
	}
	const n, delay, rounds = 300, time.Second, 3
	variants := []abortVariant{
		{"sarama + gate (this package)", measureSarama},
		{"kgo AbortBufferedRecords", measureKgo(false)},
		{"kgo transactional, abort + new epoch", measureKgo(true)},
	}
	for _, budget := range []time.Duration{3 * delay, 100 * time.Millisecond} {
		results := map[string][]abortOutcome{}
		for round := range rounds { // interleaved: every variant once per round
			for _, v := range variants {
				b := newSlowBroker(t, kfake.NumBrokers(1), kfake.SeedTopics(3, "changevents"))
				took, err := v.run(t, b, n, budget)
				abortEnd := time.Now()
				abortStart := abortEnd.Add(-took)
				time.Sleep(delay + 500*time.Millisecond)
				o := abortOutcome{abortTook: took, abortErr: err != nil}
				sent := 0
				for _, r := range b.produced() {
					sent += r.records
					if r.arrived.After(abortStart) {
						o.sentAfter++
					}
					if r.appended.After(abortEnd) {
						o.lateRequests++
						o.lateRecords += r.records
					}
				}
				o.visibleRU = countRecords(t, b.ListenAddrs(), false)
				o.visibleRC = countRecords(t, b.ListenAddrs(), true)
				o.neverSent = 1 + n - sent
				if strings.Contains(v.name, "transactional") {
					// The next producer's own committed record, produced after the abort.
					o.visibleRU--
					o.visibleRC--
					o.neverSent++
				}
				results[v.name] = append(results[v.name], o)
				t.Logf("budget %v round %d %-40s %+v (abort error: %v)", budget, round, v.name, o, err)
				b.Close()
			}
		}
		fmt.Printf("\nabort budget %v, broker delay %v, %d messages behind the held request, %d rounds:\n", budget, delay, n, rounds)
		fmt.Printf("| variant | abort took min/median/max | appended after abort returned (requests) | sent after abort began | visible read_uncommitted | visible read_committed | never sent |\n|---|---|---|---|---|---|---|\n")
		for _, v := range variants {
			rs := results[v.name]
			var took []time.Duration
			for _, r := range rs {
				took = append(took, r.abortTook)
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			fmt.Printf("| %s | %v / %v / %v | %s | %s | %s | %s | %s |\n", v.name,
				took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
				each(rs, func(o abortOutcome) int { return o.lateRequests }), each(rs, func(o abortOutcome) int { return o.sentAfter }),
				each(rs, func(o abortOutcome) int { return o.visibleRU }), each(rs, func(o abortOutcome) int { return o.visibleRC }),
				each(rs, func(o abortOutcome) int { return o.neverSent }))
		}
	}
}

func each(rs []abortOutcome, f func(abortOutcome) int) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprint(f(r)))
	}
	return strings.Join(s, ",")
}

func measureSarama(t *testing.T, b *slowBroker, n int, budget time.Duration) (time.Duration, error) {
	p, err := NewPublisher(context.Background(), Settings{Brokers: b.ListenAddrs(), Topic: "changevents"})
	if err != nil {
		t.Fatal(err)
	}
	batch := publishSlowly(t, b, p, time.Second, n)
	batch.End()
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	err = p.Abort(ctx)
	return time.Since(start), err
}

func measureKgo(transactional bool) func(t *testing.T, b *slowBroker, n int, budget time.Duration) (time.Duration, error) {
	return func(t *testing.T, b *slowBroker, n int, budget time.Duration) (time.Duration, error) {
		opts := []kgo.Opt{kgo.SeedBrokers(b.ListenAddrs()...), kgo.DefaultProduceTopic("changevents"),
			kgo.ProducerLinger(5 * time.Millisecond), kgo.MaxProduceRequestsInflightPerBroker(1),
			kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaHasher(fnv32a)))}
		if transactional {
			opts = append(opts, kgo.TransactionalID("docdbdr-capture-bar.foo"))
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		if transactional {
			if err := cl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k0"), Value: []byte("before")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		b.delay.Store(int64(time.Second))
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			cl.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "%d", i)}, func(*kgo.Record, error) { wg.Done() })
			if i == 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		if err := cl.Flush(fctx); err == nil {
			t.Fatal("kgo flush did not time out against the slow broker")
		}
		cancel()
		actx, cancel := context.WithTimeout(ctx, budget)
		defer cancel()
		start := time.Now()
		err = cl.AbortBufferedRecords(actx)
		if transactional {
			err = errorsJoin(err, cl.EndTransaction(actx, kgo.TryAbort))
		}
		took := time.Since(start)
		b.delay.Store(0)
		if transactional {
			// The next run's producer: the same transactional id bumps the epoch, which fences
			// every request of the old one the broker has not appended yet.
			next, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddrs()...), kgo.DefaultProduceTopic("changevents"), kgo.TransactionalID("docdbdr-capture-bar.foo"))
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := next.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := next.ProduceSync(nctx, &kgo.Record{Key: []byte("next"), Value: []byte("next run")}).FirstErr(); err != nil {
				t.Logf("next transactional producer: %v", err)
			}
			if err := next.EndTransaction(nctx, kgo.TryCommit); err != nil {
				t.Logf("next transactional producer commit: %v", err)
			}
		}
		return took, err
	}
}

func errorsJoin(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return fmt.Errorf("%w; %w", a, b)
}

func fnv32a(b []byte) uint32 {
	h := fnv.New32a()
	h.Write(b)
	return h.Sum32()
}

// countRecords counts the data records of the topic a consumer at the given isolation sees.
func countRecords(t *testing.T, addrs []string, committed bool) int {
	opts := []kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("changevents"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200 * time.Millisecond)}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(*kgo.Record) { n++ })
	}
	return n
}

// BenchmarkProduce: acknowledged throughput of 400-byte messages with 3 partitions on kfake,
// sarama (this package's Publisher: idempotent, acks=all, lz4) against kgo configured alike.
func BenchmarkProduce(b *testing.B) {
	value := make([]byte, 400)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	b.Run("sarama", func(b *testing.B) {
		c := newCluster(b)
		p, err := NewPublisher(context.Background(), Settings{Brokers: c.ListenAddrs(), Topic: "changevents", Compression: "lz4"})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close(5 * time.Second)
		ctx := context.Background()
		b.ResetTimer()
		batch := p.Begin(benchWindow)
		for i := range b.N {
			if _, err := batch.Publish(ctx, Message{Key: fmt.Appendf(nil, "bar|n:%d", i), Value: value}); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("kgo", func(b *testing.B) {
		c := newCluster(b)
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("changevents"),
			kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchCompression(kgo.Lz4Compression()),
			kgo.MaxBufferedRecords(benchWindow), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaHasher(fnv32a))))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		var failed sync.Once
		b.ResetTimer()
		for i := range b.N {
			cl.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "bar|n:%d", i), Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Do(func() { b.Error(err) })
				}
			})
		}
		if err := cl.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// benchWindow is the in-flight window both benchmark producers get (capture's default).
const benchWindow = 8192
