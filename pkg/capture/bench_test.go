package capture

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// BenchmarkDrain100k drains 100,000 inserts in one invocation and compares it with a raw drain
// of the same stream (no publishing) and with the original's approach (a new producer and a flush
// for every event, measured on a sample). Run it once:
//
//	go test -run x -bench Drain100k -benchtime 1x ./pkg/capture/
//
// The embedded server, kfake and capture share the process, so heap figures include all three.
func BenchmarkDrain100k(b *testing.B) {
	const n = 100_000
	s := newStack(b, mongoserver.Options{NoopInterval: -1}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.opts.MaxEvents = n
	s.opts.CheckpointEvery = 1000
	s.opts.IdleTimeout = 2 * time.Second
	s.mustRun("pin")
	start := s.checkpointState().ResumeToken

	docs := make([]any, 0, 1000)
	for i := 0; i < n; i++ {
		docs = append(docs, bson.D{
			{Key: "_id", Value: primitive.NewObjectID()}, {Key: "n", Value: int64(i)},
			{Key: "name", Value: fmt.Sprintf("customer-%06d", i)}, {Key: "at", Value: primitive.NewDateTimeFromTime(time.Now())},
			{Key: "tags", Value: bson.A{"a", "b", "c"}}, {Key: "balance", Value: 123.45},
		})
		if len(docs) == cap(docs) {
			s.insert("bar", "foo", docs...)
			docs = docs[:0]
		}
	}

	const rounds = 3 // alternate the variants and keep each one's best: the machine is shared
	for b.Loop() {
		var rawDur, convDur, capDur time.Duration
		var heapPeak uint64
		var sum Summary
		for round := 0; round < rounds; round++ {
			runtime.GC()
			d := rawDrain(b, s, start, n, false)
			rawDur = best(rawDur, d)
			d = rawDrain(b, s, start, n, true)
			convDur = best(convDur, d)

			if err := s.store.Reset(context.Background(), s.opts.Scope.ID(), checkpoint.ResetTo{ResumeToken: start}, "bench"); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			peak := watchHeap()
			t0 := time.Now()
			sum = s.mustRun(fmt.Sprint("bench-", round))
			d = time.Since(t0)
			heapPeak = max(heapPeak, peak())
			if sum.Events != n || sum.Acknowledged != n {
				b.Fatalf("capture: %+v", sum)
			}
			capDur = best(capDur, d)
		}

		// The original: a producer created, used and closed for every event (sampled).
		const sample = 200
		perEvent := producerPerEvent(b, s, start, sample)

		rawRate := float64(n) / rawDur.Seconds()
		convRate := float64(n) / convDur.Seconds()
		capRate := float64(n) / capDur.Seconds()
		perRate := float64(sample) / perEvent.Seconds()
		b.ReportMetric(capRate, "events/s")
		b.ReportMetric(rawRate, "raw-events/s")
		b.ReportMetric(capRate/rawRate, "ratio-to-raw")
		b.ReportMetric(capRate/convRate, "ratio-to-raw+convert")
		b.ReportMetric(perRate, "per-event-producer-events/s")
		b.ReportMetric(capRate/perRate, "speedup-vs-per-event")
		b.ReportMetric(float64(heapPeak)/(1<<20), "peak-heap-MB")
		b.Logf("best of %d: capture %v (%d checkpoints, publish wait %dms), raw %v, raw+convert %v; per-event producer %v for %d events",
			rounds, capDur, sum.Checkpoints, sum.PublishMillis, rawDur, convDur, perEvent, sample)
	}
}

func best(cur, d time.Duration) time.Duration {
	if cur == 0 || d < cur {
		return d
	}
	return cur
}

// rawDrain reads n events from start without publishing; convert also encodes each as a message
// (what capture does before publishing).
func rawDrain(b *testing.B, s *stack, start []byte, n int, convert bool) time.Duration {
	ctx := context.Background()
	t0 := time.Now()
	st, err := MongoStreams{Client: s.client, MaxAwait: 200 * time.Millisecond}.Open(ctx, s.opts.Scope, Start{ResumeAfter: start})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close(ctx)
	read := 0
	for read < n {
		if st.TryNext(ctx) {
			read++
			if convert {
				ev, err := changeevent.FromChangeStream(st.Current())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := changeevent.Marshal(&ev); err != nil {
					b.Fatal(err)
				}
				if _, err := changeevent.Key(&ev); err != nil {
					b.Fatal(err)
				}
			}
			continue
		}
		if err := st.Err(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(t0)
}

// producerPerEvent publishes the first n events the way the original did: new producer, send,
// flush and close, for each event.
func producerPerEvent(b *testing.B, s *stack, start []byte, n int) time.Duration {
	ctx := context.Background()
	st, err := MongoStreams{Client: s.client, MaxAwait: 200 * time.Millisecond}.Open(ctx, s.opts.Scope, Start{ResumeAfter: start})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close(ctx)
	cfg, err := kafka.SaramaConfig(kafka.Settings{Compression: "lz4"})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	for i := 0; i < n; {
		if !st.TryNext(ctx) {
			continue
		}
		i++
		ev, err := changeevent.FromChangeStream(st.Current())
		if err != nil {
			b.Fatal(err)
		}
		value, _ := changeevent.Marshal(&ev)
		key, _ := changeevent.Key(&ev)
		p, err := sarama.NewSyncProducer(s.kafka.ListenAddrs(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "changevents", Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(value)}); err != nil {
			b.Fatal(err)
		}
		_ = p.Close()
	}
	return time.Since(t0)
}

// watchHeap samples the live heap every 10ms until the returned function is called, which
// returns the peak.
func watchHeap() func() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var mu sync.Mutex
	var peak uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			mu.Lock()
			if v := sample[0].Value.Uint64(); v > peak {
				peak = v
			}
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-stopped
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}
