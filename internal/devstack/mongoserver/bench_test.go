package mongoserver

import (
	"fmt"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Benchmarks run through the real driver against a collection that already
// holds 10k or 1M documents, to show the cost per operation stays flat as
// the collection grows. Seeded servers are shared by all benchmarks of a
// run (seeding 1M documents takes a few seconds).
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/devstack/mongoserver/

var sizes = []struct {
	name string
	n    int
}{{"existing=10k", 10_000}, {"existing=1M", 1_000_000}}

var (
	seededMu sync.Mutex
	seeded   = map[int]*Server{}
)

// benchDoc is a ~100-byte document.
func benchDoc(id int) bson.D {
	return bson.D{{Key: "_id", Value: id}, {Key: "name", Value: fmt.Sprintf("user-%09d", id)},
		{Key: "n", Value: id}, {Key: "tags", Value: bson.A{"a", "b"}}, {Key: "active", Value: true}}
}

// seededServer returns a server whose d.c collection holds n documents with
// _id 0..n-1, inserted directly into the engine (through the same code path
// an insert command uses, oplog included) to keep setup fast.
func seededServer(b *testing.B, n int) *Server {
	seededMu.Lock()
	defer seededMu.Unlock()
	if s := seeded[n]; s != nil {
		return s
	}
	s := New(Options{NoopInterval: -1, OplogMaxEntries: 2_000_000})
	if err := s.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	e := s.db
	e.lock()
	coll, _ := e.createCollection("d", "c")
	for i := 0; i < n; i++ {
		raw, err := bson.Marshal(benchDoc(-i - 1)) // negative: never collides with benchmark ids
		if err != nil {
			b.Fatal(err)
		}
		id, idVal, err := idOf(bsoncore.Document(raw))
		if err != nil {
			b.Fatal(err)
		}
		if err := e.insertDoc(coll, raw, id, idVal); err != nil {
			b.Fatal(err)
		}
	}
	e.unlock()
	seeded[n] = s
	return s
}

// nextID hands out fresh _ids across benchmark iterations.
var (
	idMu   sync.Mutex
	nextID = map[int]int{}
)

func freshIDs(size, k int) int {
	idMu.Lock()
	defer idMu.Unlock()
	start := nextID[size]
	nextID[size] = start + k
	return start
}

func BenchmarkInsertOne(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			coll := connect(b, seededServer(b, sz.n)).Database("d").Collection("c")
			start := freshIDs(sz.n, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := coll.InsertOne(ctx(b), benchDoc(start+i)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
		})
	}
}

func BenchmarkInsertMany1000(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			coll := connect(b, seededServer(b, sz.n)).Database("d").Collection("c")
			start := freshIDs(sz.n, b.N*1000)
			batches := make([][]interface{}, b.N)
			for i := range batches {
				batches[i] = make([]interface{}, 1000)
				for j := range batches[i] {
					batches[i][j] = benchDoc(start + i*1000 + j)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := coll.InsertMany(ctx(b), batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "docs/s")
		})
	}
}

// BenchmarkBulkUpsert1000 is the DR apply pattern: unordered bulk writes of
// replace-upserts by _id, half hitting existing documents.
func BenchmarkBulkUpsert1000(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			coll := connect(b, seededServer(b, sz.n)).Database("d").Collection("c")
			start := freshIDs(sz.n, b.N*500)
			models := make([][]mongo.WriteModel, b.N)
			for i := range models {
				for j := 0; j < 1000; j++ {
					id := -(j*(sz.n/1000) + 1) // existing documents, spread over the key space
					if j%2 == 1 {
						id = start + i*500 + j/2 // new documents
					}
					d := benchDoc(id)
					models[i] = append(models[i], mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).SetReplacement(d).SetUpsert(true))
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := coll.BulkWrite(ctx(b), models[i], options.BulkWrite().SetOrdered(false)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkChangeStreamDrain reads b.N insert events from a resume token,
// with batches of up to 1000 events, as the capture function does.
func BenchmarkChangeStreamDrain(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			coll := connect(b, seededServer(b, sz.n)).Database("d").Collection("c")
			mark, err := coll.Watch(ctx(b), mongo.Pipeline{})
			if err != nil {
				b.Fatal(err)
			}
			mark.TryNext(ctx(b))
			token := mark.ResumeToken()
			_ = mark.Close(ctx(b))
			start := freshIDs(sz.n, b.N)
			var batch []interface{}
			for i := 0; i < b.N; i++ {
				batch = append(batch, benchDoc(start+i))
				if len(batch) == 1000 || i == b.N-1 {
					if _, err := coll.InsertMany(ctx(b), batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			b.ResetTimer()
			cs, err := coll.Watch(ctx(b), mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(token).SetBatchSize(1000))
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close(ctx(b))
			for i := 0; i < b.N; i++ {
				if !cs.Next(ctx(b)) {
					b.Fatal(cs.Err())
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// rangeFilter selects the 10 seeded documents _id -(k+10) .. -(k+1).
func rangeFilter(k int) bson.D {
	return bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: -(k + 10)}, {Key: "$lt", Value: -k}}}}
}

// BenchmarkRangeRead10 reads a 10-document _id range at a spread of places
// in the key space. "driver" is a find through the driver; "engine" is the
// same query on the engine alone (no wire, no decoding), where the seek's
// O(log n) is not hidden by the round trip; "engine-scan" forces the full
// scan every range read did before idplan.go, for comparison.
func BenchmarkRangeRead10(b *testing.B) {
	for _, sz := range sizes {
		s := seededServer(b, sz.n)
		b.Run(sz.name+"/driver", func(b *testing.B) {
			coll := connect(b, s).Database("d").Collection("c")
			for i := 0; i < b.N; i++ {
				cur, err := coll.Find(ctx(b), rangeFilter(i*7919%(sz.n-10)))
				if err != nil {
					b.Fatal(err)
				}
				var docs []bson.Raw
				if err := cur.All(ctx(b), &docs); err != nil || len(docs) != 10 {
					b.Fatalf("%d documents, %v", len(docs), err)
				}
			}
		})
		for _, mode := range []string{"engine", "engine-scan"} {
			b.Run(sz.name+"/"+mode, func(b *testing.B) {
				coll := s.db.collection("d", "c")
				for i := 0; i < b.N; i++ {
					raw, _ := bson.Marshal(rangeFilter(i * 7919 % (sz.n - 10)))
					q, err := newQuery(raw)
					if err != nil {
						b.Fatal(err)
					}
					if mode == "engine-scan" {
						q.plan = idPlan{scan: true}
					}
					n := 0
					s.db.mu.RLock()
					err = q.each(coll, nil, func(*record) bool { n++; return true })
					s.db.mu.RUnlock()
					if err != nil || n != 10 {
						b.Fatalf("%d documents, %v", n, err)
					}
				}
			})
		}
	}
}

// BenchmarkFindIn100 is the apply's before-image read: find {_id: {$in:
// [100 ids]}} through the driver, answered by 100 point lookups.
func BenchmarkFindIn100(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			coll := connect(b, seededServer(b, sz.n)).Database("d").Collection("c")
			for i := 0; i < b.N; i++ {
				ids := make(bson.A, 100)
				for j := range ids {
					ids[j] = -((i*100+j)*7919%sz.n + 1)
				}
				cur, err := coll.Find(ctx(b), bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
				if err != nil {
					b.Fatal(err)
				}
				var docs []bson.Raw
				if err := cur.All(ctx(b), &docs); err != nil || len(docs) != 100 {
					b.Fatalf("%d documents, %v", len(docs), err)
				}
			}
		})
	}
}
