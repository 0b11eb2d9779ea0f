package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// newCluster starts an embedded server for the test and returns a client of it.
func newCluster(t testing.TB) *mongo.Client { return mongotest.Client(t) }

// fakeCheckpoint records what bootstrap hands to capture.
type fakeCheckpoint struct {
	mu    sync.Mutex
	calls []StartPosition
	who   string
	sc    scope.Scope
}

func (f *fakeCheckpoint) SetStart(_ context.Context, sc scope.Scope, start StartPosition, who string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, start)
	f.sc, f.who = sc, who
	return nil
}

// doc builds a document with one field of several BSON types, so byte-equality checks types.
func doc(id any, i int) bson.D {
	dec, _ := primitive.ParseDecimal128(fmt.Sprintf("%d.25", i))
	return bson.D{
		{Key: "_id", Value: id},
		{Key: "i32", Value: int32(i)},
		{Key: "i64", Value: int64(i)},
		{Key: "f", Value: float64(i) / 3},
		{Key: "dec", Value: dec},
		{Key: "at", Value: primitive.NewDateTimeFromTime(time.Unix(int64(1_600_000_000+i), 0))},
		{Key: "bin", Value: primitive.Binary{Subtype: 4, Data: bytes.Repeat([]byte{byte(i)}, 16)}},
		{Key: "nested", Value: bson.D{{Key: "a", Value: bson.A{int32(i), "x", nil}}}},
		{Key: "pad", Value: strings.Repeat("p", 100)},
	}
}

// seed inserts n documents whose _id comes from idOf.
func seed(t testing.TB, c *mongo.Collection, n int, idOf func(i int) any) {
	t.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var docs []any
		for i := start; i < min(n, start+1000); i++ {
			docs = append(docs, doc(idOf(i), i))
		}
		if _, err := c.InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot returns every document of c as raw bytes by canonical _id.
func snapshot(t testing.TB, c *mongo.Collection) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	cur, err := c.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	out := map[string][]byte{}
	for cur.Next(ctx) {
		id, _ := changeevent.IDJSON(cur.Current.Lookup("_id"))
		out[string(id)] = bytes.Clone(cur.Current)
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// assertSame fails unless DR holds exactly the primary's documents, byte for byte.
func assertSame(t *testing.T, primary, dr *mongo.Collection) {
	t.Helper()
	p, d := snapshot(t, primary), snapshot(t, dr)
	var problems []string
	for id, pb := range p {
		db, ok := d[id]
		switch {
		case !ok:
			problems = append(problems, "missing in DR: "+id)
		case !bytes.Equal(pb, db):
			problems = append(problems, "different: "+id)
		}
	}
	for id := range d {
		if _, ok := p[id]; !ok {
			problems = append(problems, "extra in DR: "+id)
		}
	}
	if len(problems) > 0 {
		t.Fatalf("%d documents differ (primary %d, DR %d), e.g. %v", len(problems), len(p), len(d), problems[:min(5, len(problems))])
	}
}

func TestBootstrapCopiesScopeWithTypesIntact(t *testing.T) {
	oid := func(i int) any {
		var id primitive.ObjectID
		id[0], id[10], id[11] = 0x62, byte(i>>8), byte(i)
		return id
	}
	tests := []struct {
		name    string
		sc      scope.Scope
		colls   map[string]func(i int) any // collections created in db "bar", with their _id kind
		n       int
		workers int
		ranges  int
		copied  []string // collections expected on DR
	}{
		{name: "ObjectId ids, 4 workers, 8 ranges", sc: scope.Scope{DB: "bar", Collections: []string{"foo"}},
			colls: map[string]func(int) any{"foo": oid, "exa": oid}, n: 3000, workers: 4, ranges: 8, copied: []string{"foo"}},
		{name: "int64 ids, one worker", sc: scope.Scope{DB: "bar", Collections: []string{"foo"}},
			colls: map[string]func(int) any{"foo": func(i int) any { return int64(i * 7) }}, n: 2000, workers: 1, ranges: 4, copied: []string{"foo"}},
		{name: "string ids", sc: scope.Scope{DB: "bar", Collections: []string{"foo"}},
			colls: map[string]func(int) any{"foo": func(i int) any { return fmt.Sprintf("k-%06d", i) }}, n: 2000, workers: 3, ranges: 6, copied: []string{"foo"}},
		{name: "mixed id types fall back to one range", sc: scope.Scope{DB: "bar", Collections: []string{"foo"}},
			colls: map[string]func(int) any{"foo": func(i int) any {
				if i%2 == 0 {
					return int32(i)
				}
				return fmt.Sprint(i)
			}}, n: 2000, workers: 4, ranges: 8, copied: []string{"foo"}},
		{name: "whole database", sc: scope.Scope{DB: "bar"},
			colls: map[string]func(int) any{"foo": oid, "exa": func(i int) any { return int32(i) }}, n: 1000, workers: 2, ranges: 3, copied: []string{"exa", "foo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			primary, dr := newCluster(t), newCluster(t)
			for name, idOf := range tt.colls {
				seed(t, primary.Database("bar").Collection(name), tt.n, idOf)
			}
			cp := &fakeCheckpoint{}
			var out bytes.Buffer
			res, err := Run(ctx, Options{Primary: primary, DR: dr, Scope: tt.sc, Workers: tt.workers, Ranges: tt.ranges,
				BatchDocs: 250, Checkpoint: cp, Who: "tester", Progress: &out, ProgressEvery: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.copied {
				assertSame(t, primary.Database("bar").Collection(c), dr.Database("bar").Collection(c))
			}
			drColls, _ := dr.Database("bar").ListCollectionNames(ctx, bson.D{})
			if len(drColls) != len(tt.copied) {
				t.Errorf("DR collections = %v, want %v", drColls, tt.copied)
			}
			if want := int64(tt.n * len(tt.copied)); res.Docs != want {
				t.Errorf("Result.Docs = %d, want %d", res.Docs, want)
			}
			if len(cp.calls) != 1 || cp.calls[0].IsZero() || cp.who != "tester" || cp.sc.ID() != tt.sc.ID() {
				t.Errorf("checkpoint calls = %+v who=%q sc=%v", cp.calls, cp.who, cp.sc)
			}
			if !res.CheckpointSet || res.Start.IsZero() {
				t.Errorf("result = %+v", res)
			}
			if !strings.Contains(out.String(), fmt.Sprintf("bootstrap %s: %s", tt.sc.ID(), groupDigits(res.Docs))) {
				t.Errorf("final progress line missing: %q", out.String())
			}

			// A second run leaves the finished scope alone.
			again, err := Run(ctx, Options{Primary: primary, DR: dr, Scope: tt.sc, Checkpoint: cp})
			if err != nil || !again.AlreadyDone || again.Docs != 0 || len(cp.calls) != 1 {
				t.Errorf("second run: %+v, %v, checkpoint calls %d", again, err, len(cp.calls))
			}
		})
	}
}

// TestBootstrapInterruptedResumes cancels a copy midway and runs it again: the second run
// resumes from the recorded ranges and the start position of the first, and DR ends equal to the
// primary with every document counted exactly once.
func TestBootstrapInterruptedResumes(t *testing.T) {
	ctx := context.Background()
	primary, dr := newCluster(t), newCluster(t)
	src, dst := primary.Database("bar").Collection("foo"), dr.Database("bar").Collection("foo")
	const n = 20000
	seed(t, src, n, func(i int) any { return int64(i) })
	sc := scope.Scope{DB: "bar", Collections: []string{"foo"}}
	opts := Options{Primary: primary, DR: dr, Scope: sc, Workers: 2, Ranges: 6, BatchDocs: 200, Checkpoint: &fakeCheckpoint{}}

	cctx, cancel := context.WithCancel(ctx)
	go func() { // interrupt once a quarter is copied
		for cctx.Err() == nil {
			if c, _ := dst.EstimatedDocumentCount(ctx); c >= n/4 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	first, err := Run(cctx, opts)
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: err = %v, result %+v", err, first)
	}
	if first.Docs == 0 || first.Docs >= n {
		t.Fatalf("interrupted run copied %d of %d documents; the test needs a partial copy", first.Docs, n)
	}

	cp := &fakeCheckpoint{}
	opts.Checkpoint = cp
	second, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Resumed || !second.Start.ClusterTime.Equal(first.Start.ClusterTime) || !bytes.Equal(second.Start.ResumeToken, first.Start.ResumeToken) {
		t.Errorf("second run did not resume the first: %+v vs %+v", second, first)
	}
	if second.Docs >= n {
		t.Errorf("second run copied %d documents: it started over instead of resuming", second.Docs)
	}
	if got := second.Collections[0].Docs; got != n {
		t.Errorf("documents recorded over both runs = %d, want exactly %d", got, n)
	}
	if len(cp.calls) != 1 || !cp.calls[0].ClusterTime.Equal(first.Start.ClusterTime) {
		t.Errorf("checkpoint got %+v, want the first run's start %+v", cp.calls, first.Start)
	}
	assertSame(t, src, dst)
	t.Logf("first run %d docs, second run %d docs", first.Docs, second.Docs)
}

// TestBootstrapWhileWritesContinue copies a collection while writers insert, update, replace and
// delete in it, then replays the change stream from the recorded start position into DR as apply
// does (deletes intercepted). DR must then hold every primary document unchanged, plus exactly
// the documents deleted in the primary.
func TestBootstrapWhileWritesContinue(t *testing.T) {
	ctx := context.Background()
	primary, dr := newCluster(t), newCluster(t)
	src, dst := primary.Database("bar").Collection("foo"), dr.Database("bar").Collection("foo")
	const n = 10000
	seed(t, src, n, func(i int) any { return int64(i) })

	// Writers run until the bootstrap is done.
	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	var deletedMu sync.Mutex
	deleted := map[int64]bool{}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			next := int64(n + w*1_000_000)
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := rng.Int64N(n)
				var err error
				switch rng.IntN(5) {
				case 0:
					_, err = src.InsertOne(ctx, doc(next, int(next)))
					next++
				case 1:
					_, err = src.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}},
						bson.D{{Key: "$set", Value: bson.D{{Key: "i32", Value: int64(rng.IntN(100))}}}, {Key: "$unset", Value: bson.D{{Key: "pad", Value: ""}}}})
				case 2:
					_, err = src.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "_id", Value: id}, {Key: "replaced", Value: int32(w)}})
				case 3:
					var r *mongo.DeleteResult
					r, err = src.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
					if err == nil && r.DeletedCount == 1 {
						deletedMu.Lock()
						deleted[id] = true
						deletedMu.Unlock()
					}
				case 4:
					_, err = src.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "i64", Value: int64(1)}}}})
				}
				if err != nil {
					t.Error(err)
					return
				}
				writes.Add(1)
			}
		}()
	}

	time.Sleep(20 * time.Millisecond) // some writes before the start position too
	cp := &fakeCheckpoint{}
	before := writes.Load()
	res, err := Run(ctx, Options{Primary: primary, DR: dr, Scope: scope.Scope{DB: "bar", Collections: []string{"foo"}},
		Workers: 2, Ranges: 4, BatchDocs: 100, Checkpoint: cp})
	during := writes.Load() - before
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if during == 0 {
		t.Fatal("no write happened during the copy; the test proves nothing")
	}

	// A marker write tells the replay where the writes end.
	if _, err := primary.Database("bar").Collection("marker").InsertOne(ctx, bson.D{{Key: "_id", Value: "end"}}); err != nil {
		t.Fatal(err)
	}
	replayed := replay(t, primary, dr, cp.calls[0])

	// Deleted documents stay in DR (intercepted); compare the rest exactly.
	p, d := snapshot(t, src), snapshot(t, dst)
	for id, pb := range p {
		if !bytes.Equal(pb, d[id]) {
			t.Fatalf("document %s differs after replay:\nprimary %v\nDR      %v", id, bson.Raw(pb), bson.Raw(d[id]))
		}
	}
	extra := 0
	for id := range d {
		if _, ok := p[id]; !ok {
			var v struct {
				ID int64 `bson:"_id"`
			}
			_ = bson.Unmarshal(d[id], &v)
			if !deleted[v.ID] {
				t.Errorf("DR has %s, which the primary never deleted", id)
			}
			extra++
		}
	}
	t.Logf("copied %d docs; %d writes during the copy; %d events replayed; %d intercepted deletes kept in DR",
		res.Docs, during, replayed, extra)
}

// replay reads the primary's change stream from start and applies it to DR as pkg/apply does:
// insert/replace upsert the full document, update applies $set/$unset, delete is intercepted. It
// stops at the insert into bar.marker.
func replay(t *testing.T, primary, dr *mongo.Client, start StartPosition) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := options.ChangeStream()
	if !start.ClusterTime.IsZero() {
		opts.SetStartAtOperationTime(&start.ClusterTime)
	} else {
		opts.SetResumeAfter(start.ResumeToken)
	}
	cs, err := primary.Database("bar").Watch(ctx, mongo.Pipeline{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	count := 0
	for cs.Next(ctx) {
		ev, err := changeevent.FromChangeStream(cs.Current)
		if err != nil {
			t.Fatal(err)
		}
		if ev.NS.Coll == "marker" {
			return count
		}
		count++
		coll := dr.Database(ev.NS.DB).Collection(ev.NS.Coll)
		id, _ := ev.ID()
		filter := bson.D{{Key: "_id", Value: id}}
		switch ev.Operation {
		case changeevent.Insert, changeevent.Replace:
			_, err = coll.ReplaceOne(ctx, filter, ev.FullDocument, options.Replace().SetUpsert(true))
		case changeevent.Update:
			upd := bson.D{}
			if len(ev.UpdateDescription.UpdatedFields) > 0 {
				upd = append(upd, bson.E{Key: "$set", Value: ev.UpdateDescription.UpdatedFields})
			}
			if rm := ev.UpdateDescription.RemovedFields; len(rm) > 0 {
				unset := bson.D{}
				for _, f := range rm {
					unset = append(unset, bson.E{Key: f, Value: ""})
				}
				upd = append(upd, bson.E{Key: "$unset", Value: unset})
			}
			if len(upd) > 0 {
				_, err = coll.UpdateOne(ctx, filter, upd)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("change stream ended before the marker: %v", cs.Err())
	return count
}
