package apply

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// benchDoc is a small, typical document of about 200 bytes.
func benchDoc(i int) bson.D {
	return bson.D{
		{Key: "name", Value: fmt.Sprintf("customer-%06d", i)},
		{Key: "n", Value: int32(i)},
		{Key: "balance", Value: float64(i) * 1.5},
		{Key: "created", Value: primitive.NewDateTimeFromTime(time.Unix(int64(i), 0))},
		{Key: "tags", Value: bson.A{"a", "b", "c"}},
		{Key: "address", Value: bson.D{{Key: "city", Value: "Seattle"}, {Key: "zip", Value: "98101"}}},
	}
}

func insertBatch(b *testing.B, n int) (events.KafkaEvent, []changeevent.Event) {
	evs := make([]changeevent.Event, n)
	for i := range evs {
		evs[i] = evt(b, changeevent.Insert, fooNS, int32(i), benchDoc(i))
	}
	return batchOf(b, evs...), evs
}

// deliveries numbers the batches the benchmarks deliver, across runs: the embedded DR (and its
// applied frontiers) outlives one benchmark function, so that `-count N` runs it again on the same
// server, and a restarted count would be a redelivery there.
var deliveries atomic.Int64

func nextDelivery() int { return int(deliveries.Add(1)) }

// later returns batch as the event source mapping would deliver it n batches later: the same
// records at offsets n*len further on. Every iteration of a benchmark is thus a new batch, not a
// redelivery (which apply recognises and does not apply again).
func later(batch events.KafkaEvent, n int) events.KafkaEvent {
	out := events.KafkaEvent{Records: map[string][]events.KafkaRecord{}}
	for k, recs := range batch.Records {
		moved := append([]events.KafkaRecord(nil), recs...)
		for i := range moved {
			moved[i].Offset += int64(n * len(recs))
		}
		out.Records[k] = moved
	}
	return out
}

// BenchmarkApply10k applies 10,000 inserts to the embedded server three ways: through the
// handler, as a raw driver bulk write of the same documents (the ceiling), and one write per
// record (the original write-up's insert_one loop). Every iteration upserts the same documents,
// delivered as a new batch.
func BenchmarkApply10k(b *testing.B) {
	client := startMongo(b)
	batch, evs := insertBatch(b, 10_000)
	coll := client.Database(fooNS.DB).Collection(fooNS.Coll)
	ctx := context.Background()

	b.Run("handler", func(b *testing.B) {
		h, err := New(NewMongoWriter(client), newFakeArchive(), Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			n := nextDelivery()
			if sum, err := h.Handle(ctx, later(batch, n)); err != nil || sum.Applied != len(evs) {
				b.Fatal(sum, err)
			}
		}
		b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("rawBulkWrite", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for start := 0; start < len(evs); start += DefaultMaxBulkOps {
				var models []mongo.WriteModel
				for _, e := range evs[start:min(start+DefaultMaxBulkOps, len(evs))] {
					id, _ := e.ID()
					models = append(models, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).
						SetReplacement(e.FullDocument).SetUpsert(true))
				}
				if _, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("onePerRecord", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, e := range evs {
				id, _ := e.ID()
				if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, e.FullDocument, options.Replace().SetUpsert(true)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

// countingS3 counts the requests that reach S3.
type countingS3 struct {
	archive.S3API
	puts, gets atomic.Int64
	bytes      atomic.Int64 // bodies PUT
}

func (c *countingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.puts.Add(1)
	if in.ContentLength != nil {
		c.bytes.Add(*in.ContentLength)
	}
	return c.S3API.PutObject(ctx, in, opts...)
}

func (c *countingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c.gets.Add(1)
	return c.S3API.GetObject(ctx, in, opts...)
}

// BenchmarkDeletes10k intercepts 10,000 deletes spread over 5 collections and 4 partitions, with
// before-images read from the embedded server and objects written to gofakes3: one PUT per
// namespace per partition (20), where the original write-up made one PUT per delete.
func BenchmarkDeletes10k(b *testing.B) {
	ctx := context.Background()
	client := startMongo(b)
	var counter *countingS3
	store := startS3(b, func(api archive.S3API) archive.S3API { counter = &countingS3{S3API: api}; return counter })
	batch := events.KafkaEvent{Records: map[string][]events.KafkaRecord{}}
	for i := range 10_000 {
		ns := changeevent.Namespace{DB: "bar", Coll: fmt.Sprintf("c%d", i%5)}
		part := int64(i % 4)
		if _, err := client.Database(ns.DB).Collection(ns.Coll).InsertOne(ctx, append(bson.D{{Key: "_id", Value: int32(i)}}, benchDoc(i)...)); err != nil {
			b.Fatal(err)
		}
		key := fmt.Sprintf("changevents-%d", part)
		batch.Records[key] = append(batch.Records[key], record(b, "changevents", part, int64(len(batch.Records[key])), evt(b, changeevent.Delete, ns, int32(i), nil)))
	}
	h, err := New(NewMongoWriter(client), store, Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	counter.puts.Store(0)
	counter.gets.Store(0)
	for b.Loop() {
		b.StopTimer()
		n := nextDelivery()
		next := withNewTokens(b, later(batch, n), n) // new delete events of the same documents
		b.StartTimer()
		sum, err := h.Handle(ctx, next)
		if err != nil || sum.Archived != 10_000 {
			b.Fatalf("%+v, %v", sum, err)
		}
	}
	b.ReportMetric(float64(counter.puts.Load())/float64(b.N), "PUTs/op")
	b.ReportMetric(float64(counter.gets.Load())/float64(b.N), "GETs/op")
}

// withNewTokens gives every record of batch a resume token of its own for round n: other events
// (another delete of the same document after it was re-inserted), not copies of the first ones.
func withNewTokens(b *testing.B, batch events.KafkaEvent, n int) events.KafkaEvent {
	for _, recs := range batch.Records {
		for i := range recs {
			v, err := base64.StdEncoding.DecodeString(recs[i].Value)
			if err != nil {
				b.Fatal(err)
			}
			e, err := changeevent.Unmarshal(v)
			if err != nil {
				b.Fatal(err)
			}
			e.ResumeToken = raw(b, bson.D{{Key: "_data", Value: fmt.Sprintf("%d-%d-%d", n, recs[i].Partition, recs[i].Offset)}})
			recs[i].Value = base64.StdEncoding.EncodeToString(must(changeevent.Marshal(&e)))
		}
	}
	return batch
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// BenchmarkUpdates10k applies 10,000 updates (a $set of one field, each event carrying its
// looked-up document, as capture's updateLookup gives) of existing documents: through the
// handler, and as a raw driver bulk write of the same deltas (the ceiling of the DR writes
// alone). Each iteration is a new batch of new events.
func BenchmarkUpdates10k(b *testing.B) {
	client := startMongo(b)
	ctx := context.Background()
	coll := client.Database(fooNS.DB).Collection(fooNS.Coll)
	const n = 10_000
	var docs []any
	for i := range n {
		docs = append(docs, append(bson.D{{Key: "_id", Value: int32(i)}}, benchDoc(i)...))
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		b.Fatal(err)
	}
	round := func(r int) events.KafkaEvent {
		evs := make([]changeevent.Event, n)
		for i := range evs {
			evs[i] = update(b, fooNS, int32(i), bson.D{{Key: "n", Value: int32(r)}}, nil, nil)
			full := append(bson.D{{Key: "_id", Value: int32(i)}}, benchDoc(i)...)
			full[2].Value = int32(r)
			evs[i].FullDocument = raw(b, full)
			evs[i].ResumeToken = raw(b, bson.D{{Key: "_data", Value: fmt.Sprintf("u%d-%d", r, i)}})
		}
		return later(batchOf(b, evs...), r)
	}
	b.Run("handler", func(b *testing.B) {
		h, err := New(NewMongoWriter(client), newFakeArchive(), Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			batch := round(nextDelivery())
			b.StartTimer()
			if _, err := h.Handle(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("rawBulkWrite", func(b *testing.B) {
		b.ReportAllocs()
		r := 0
		for b.Loop() {
			r++
			for start := 0; start < n; start += DefaultMaxBulkOps {
				var models []mongo.WriteModel
				for i := start; i < min(start+DefaultMaxBulkOps, n); i++ {
					models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: int32(i)}}).
						SetUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: int32(r)}}}}))
				}
				if _, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

// nullDR accepts every write and finds nothing: it isolates apply's own memory and CPU.
type nullDR struct{}

func (nullDR) BulkWrite(_ context.Context, _ changeevent.Namespace, w []Write) (BulkResult, error) {
	return BulkResult{Upserted: int64(len(w))}, nil
}
func (nullDR) FindByIDs(context.Context, changeevent.Namespace, []bson.RawValue) (map[IDKey]bson.Raw, error) {
	return nil, nil
}
func (nullDR) ScanIDs(context.Context, changeevent.Namespace, func([]bson.RawValue) error) error {
	return nil
}
func (nullDR) Collections(context.Context, string) ([]string, error)                      { return nil, nil }
func (nullDR) Drop(context.Context, changeevent.Namespace) error                          { return nil }
func (nullDR) Rename(context.Context, changeevent.Namespace, changeevent.Namespace) error { return nil }
func (nullDR) StateDB() string                                                            { return DefaultStateDB }
func (nullDR) EnsureState(context.Context) error                                          { return nil }
func (nullDR) Archived(context.Context, []string) (map[string]bool, error)                { return nil, nil }
func (nullDR) Claim(context.Context, []LedgerEntry) (map[string]bool, error)              { return nil, nil }
func (nullDR) Written(context.Context, []string) error                                    { return nil }
func (nullDR) Fence(context.Context) (*Fence, error)                                      { return nil, nil }
func (nullDR) Revived(context.Context, changeevent.Namespace, []bson.RawValue) error      { return nil }
func (nullDR) MoveHeld(context.Context, changeevent.Namespace, changeevent.Namespace, []bson.RawValue) error {
	return nil
}
func (nullDR) Pending(context.Context, string, []int64) ([]LedgerEntry, error)       { return nil, nil }
func (nullDR) Frontiers(context.Context, string, []int64) ([]Frontier, error)        { return nil, nil }
func (nullDR) SetFrontiers(context.Context, []Frontier) error                        { return nil }
func (nullDR) Barrier(context.Context, string) (string, error)                       { return "", nil }
func (nullDR) SetBarrier(context.Context, BarrierMarker) error                       { return nil }
func (nullDR) MarkHistory(context.Context, []changeevent.Namespace, time.Time) error { return nil }
func (nullDR) ClearHistory(context.Context) error                                    { return nil }

// BenchmarkMemory6MB handles a batch at the Lambda payload limit (about 6 MB of base64 record
// values: 6,000 inserts of ~630-byte documents) and reports allocation per batch and the peak
// live heap above what the batch itself occupies.
func BenchmarkMemory6MB(b *testing.B) {
	evs := make([]changeevent.Event, 6000)
	for i := range evs {
		evs[i] = evt(b, changeevent.Insert, fooNS, int32(i), append(benchDoc(i), bson.E{Key: "pad", Value: strings.Repeat("x", 420)}))
	}
	batch := batchOf(b, evs...)
	total := 0
	for _, r := range batch.Records["changevents-0"] {
		total += len(r.Value)
	}
	h, err := New(nullDR{}, newFakeArchive(), Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
	if err != nil {
		b.Fatal(err)
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	var peak uint64
	b.ReportAllocs()
	for b.Loop() {
		runtime.GC()
		base := heap()
		stop := make(chan struct{})
		done := make(chan uint64)
		go func() {
			var max uint64
			for {
				if v := heap(); v > max {
					max = v
				}
				select {
				case <-stop:
					done <- max
					return
				case <-time.After(200 * time.Microsecond):
				}
			}
		}()
		if _, err := h.Handle(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		close(stop)
		if m := <-done; m > base && m-base > peak {
			peak = m - base
		}
	}
	b.ReportMetric(float64(total)/1e6, "batchMB")
	b.ReportMetric(float64(peak)/1e6, "peakHeapMB")
}
