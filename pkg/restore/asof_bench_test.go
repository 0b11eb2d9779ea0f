package restore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

type fixedLimits time.Time

func (f fixedLimits) HistorySince(context.Context, changeevent.Namespace) (time.Time, bool, error) {
	return time.Time(f), true, nil
}

// BenchmarkRestoreAsOf100k restores 100,000 documents that a bad updateMany changed after T, on
// the embedded server, from a version history of 100,000 lines (10 objects, in memory): the
// dry run, the restore in place, and as the baseline the same physical write (100 ordered bulk
// writes of 1,000 replaces of the same documents). Before each iteration the bad write is done
// again (not timed).
func BenchmarkRestoreAsOf100k(b *testing.B) {
	ctx := context.Background()
	client := newCluster(b)
	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	coll := client.Database(ns.DB).Collection(ns.Coll)
	const n = 100_000
	asOf := time.Date(2024, 5, 1, 10, 42, 0, 0, time.UTC)
	store := memStore{}
	var docs []any
	var lines [][]byte
	var good []bson.Raw
	for i := range n {
		d := must(bson.Marshal(bson.D{{Key: "_id", Value: int32(i)}, {Key: "name", Value: fmt.Sprintf("customer-%06d", i)},
			{Key: "price", Value: int32(1 + i%100)}, {Key: "tags", Value: bson.A{"a", "b"}}, {Key: "sub", Value: bson.D{{Key: "k", Value: float64(i)}}}}))
		good = append(good, d)
		docs = append(docs, bson.Raw(d))
		ev := &changeevent.Event{Version: 1, Operation: changeevent.Update, NS: ns, DocumentKey: must(bson.Marshal(bson.D{{Key: "_id", Value: int32(i)}})),
			ClusterTime: primitive.Timestamp{T: uint32(asOf.Unix()) + 1, I: uint32(i + 1)},
			ResumeToken: must(bson.Marshal(bson.D{{Key: "_data", Value: fmt.Sprint(i)}}))}
		rec := must(archive.NewRecord(ev, archive.Kafka{Offset: int64(i)}, d))
		lines = append(lines, must(rec.MarshalLine()))
		if len(lines) == n/10 {
			store[layout.HistoryObject(ns, ev.ClusterTime, fmt.Sprint(i), "c")] = must(archive.EncodeObject(lines))
			lines = nil
		}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		b.Fatal(err)
	}
	bad := func(b *testing.B) {
		b.StopTimer()
		if _, err := coll.UpdateMany(ctx, bson.D{}, bson.D{{Key: "$set", Value: bson.D{{Key: "price", Value: int32(0)}}}}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	opts := AsOfOptions{Primary: client, DR: client, Archive: ArchiveReader{Store: store, Layout: layout}, Limits: fixedLimits(asOf.Add(-time.Hour)),
		NS: ns, AsOf: asOf, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	run := func(apply bool) func(b *testing.B) {
		return func(b *testing.B) {
			o := opts
			o.Apply = apply
			for b.Loop() {
				bad(b)
				rep, err := RunAsOf(ctx, o)
				if err != nil || rep.ChangedBack != n {
					b.Fatal(rep.ChangedBack, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "docs/s")
		}
	}
	b.Run("dryRun", run(false))
	b.Run("inPlace", run(true))
	b.Run("rawReplaces", func(b *testing.B) {
		for b.Loop() {
			bad(b)
			for start := 0; start < n; start += 1000 {
				var models []mongo.WriteModel
				for _, d := range good[start:min(start+1000, n)] {
					models = append(models, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: d.Lookup("_id")}}).SetReplacement(d))
				}
				if _, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	})
}
