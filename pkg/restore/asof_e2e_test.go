package restore_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/faults"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
)

// model is the workload's own record of the collection: each live document as the workload
// wrote it, computed without reading the primary.
type model map[int32]bson.D

// set applies {$set: {k: v}} as MongoDB does to a top-level field: in place, or appended.
func set(d bson.D, k string, v any) bson.D {
	for i := range d {
		if d[i].Key == k {
			d[i].Value = v
			return d
		}
	}
	return append(d, bson.E{Key: k, Value: v})
}

func get(d bson.D, k string) any {
	for _, e := range d {
		if e.Key == k {
			return e.Value
		}
	}
	return nil
}

func unset(d bson.D, k string) bson.D {
	return slices.DeleteFunc(d, func(e bson.E) bool { return e.Key == k })
}

// snapshot is the model as the bytes each document has in the primary.
func (m model) snapshot(t *testing.T) map[int32][]byte {
	out := map[int32][]byte{}
	for id, d := range m {
		b, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = b
	}
	return out
}

// workload runs n ordinary writes (inserts, $set and $unset updates, replaces, deletes) on foo
// and the model; new documents get ids from *next.
func workload(ctx context.Context, t *testing.T, rng *rand.Rand, foo *mongo.Collection, m model, next *int32, n int) {
	t.Helper()
	for range n {
		ids := slices.Sorted(maps.Keys(m))
		if len(ids) < 200 || rng.IntN(6) == 0 {
			id := *next
			*next++
			cat := []string{"a", "b"}[rng.IntN(2)]
			d := bson.D{{Key: "_id", Value: id}, {Key: "cat", Value: cat}, {Key: "price", Value: int32(1 + rng.IntN(100))},
				{Key: "tags", Value: bson.A{"t" + string(rune('0'+rng.IntN(9)))}}, {Key: "sub", Value: bson.D{{Key: "k", Value: rng.Float64()}}},
				// types whose Extended JSON form must come back to the same bytes
				{Key: "at", Value: primitive.NewDateTimeFromTime(time.UnixMilli(rng.Int64N(1 << 40)))}, {Key: "oid", Value: primitive.NewObjectID()},
				{Key: "dec", Value: must2(primitive.ParseDecimal128("12.3400"))}, {Key: "bin", Value: primitive.Binary{Subtype: 4, Data: []byte("0123456789abcdef")}},
				{Key: "neg0", Value: math.Copysign(0, -1)}, {Key: "big", Value: int64(1) << 60}, {Key: "nil", Value: nil}}
			must(t, ignore(foo.InsertOne(ctx, d)))
			m[id] = d
			continue
		}
		id := ids[rng.IntN(len(ids))]
		filter := bson.D{{Key: "_id", Value: id}}
		switch k := rng.IntN(10); {
		case k < 4:
			v := int32(1 + rng.IntN(1000))
			must(t, ignore(foo.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{{Key: "price", Value: v}}}})))
			m[id] = set(m[id], "price", v)
		case k < 6:
			f, v := "n"+string(rune('0'+rng.IntN(3))), int64(rng.IntN(9))
			must(t, ignore(foo.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: bson.D{{Key: f, Value: v}}}})))
			m[id] = set(m[id], f, v)
		case k < 7:
			must(t, ignore(foo.UpdateOne(ctx, filter, bson.D{{Key: "$unset", Value: bson.D{{Key: "tags", Value: ""}}}})))
			m[id] = unset(m[id], "tags")
		case k < 8:
			d := bson.D{{Key: "_id", Value: id}, {Key: "cat", Value: get(m[id], "cat")}, {Key: "price", Value: int32(rng.IntN(50))}, {Key: "r", Value: true}}
			must(t, ignore(foo.ReplaceOne(ctx, filter, d)))
			m[id] = d
		default:
			must(t, ignore(foo.DeleteOne(ctx, filter)))
			delete(m, id)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ignore[T any](_ T, err error) error { return err }

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// primaryState reads a collection as _id -> document bytes.
func primaryState(ctx context.Context, t *testing.T, c *mongo.Collection) map[int32][]byte {
	t.Helper()
	cur, err := c.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32][]byte{}
	for cur.Next(ctx) {
		out[cur.Current.Lookup("_id").Int32()] = bytes.Clone(cur.Current)
	}
	must(t, cur.Err())
	return out
}

// sameState reports the documents that differ between got and want (at most a few).
func sameState(t *testing.T, what string, got, want map[int32][]byte) {
	t.Helper()
	var bad []string
	for id, w := range want {
		if g, ok := got[id]; !ok {
			bad = append(bad, "missing "+bson.Raw(w).String())
		} else if !bytes.Equal(g, w) {
			bad = append(bad, "got "+bson.Raw(g).String()+" want "+bson.Raw(w).String())
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			bad = append(bad, "extra "+bson.Raw(g).String())
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		t.Errorf("%s: %d documents differ from the state at T (of %d), e.g.\n%s", what, len(bad), len(want), strings.Join(bad[:min(5, len(bad))], "\n"))
	}
}

// TestRestoreAsOfUndoesABadWrite runs the scenario on the embedded stack (primary,
// Kafka, S3, DR; capture and apply as in production, ARCHIVE_HISTORY=on): a seeded workload,
// then a bad updateMany at T1 and a deleteMany at T2, then more ordinary writes, with a capture
// crash (events published twice) and apply failures (a bulk write and an archive PUT, so batches
// are redelivered) injected after T. restore --as-of a moment before T1 must give back exactly the
// state at that moment, byte for byte, as the workload's own model computed it: dry run first
// (nothing written, counts), a filtered restore in place (only the filtered documents change), a
// full restore into a new collection, and a full restore in place.
func TestRestoreAsOfUndoesABadWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the embedded stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var saveFault, writeFault, putFault faults.Fault
	overrides := map[string]string{"WATCH_DB": "bar", "WATCH_COLLECTIONS": "foo", "IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "50ms",
		"DEADLINE_MARGIN": "1s", "ARCHIVE_HISTORY": "on"}
	p, err := localrun.New(ctx, localrun.Options{
		Getenv: localrun.Getenv(overrides, st.Env(), nil), ManualCapture: true,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), BatchingWindow: 50 * time.Millisecond,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond, BatchSize: 100,
		Hooks: localrun.Hooks{
			CaptureDeps: func(d capture.Deps) capture.Deps {
				d.Checkpoints = faults.FailingCheckpoints{Checkpoints: d.Checkpoints, SaveFault: &saveFault}
				return d
			},
			DR:      func(d apply.DR) apply.DR { return faults.FailingDR{DR: d, WriteFault: &writeFault} },
			Archive: func(a apply.Archive) apply.Archive { return faults.FailingArchive{Archive: a, PutFault: &putFault} },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	must(t, docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()))
	_, err = p.CaptureOnce(ctx, capture.Overrides{IdleTimeout: capture.Duration(10 * time.Millisecond)})
	must(t, err)
	p.Start(ctx)

	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	foo := p.Primary().Database(ns.DB).Collection(ns.Coll)
	rng := rand.New(rand.NewPCG(16, 1))
	m, next := model{}, int32(0)
	workload(ctx, t, rng, foo, m, &next, 800)
	must(t, p.Sync(ctx))

	// T: a second boundary after every write so far (cluster times are whole seconds).
	time.Sleep(1100 * time.Millisecond)
	asOf := time.Now().Truncate(time.Second)
	atT := m.snapshot(t)
	time.Sleep(time.Until(asOf.Add(time.Second))) // the bad write is in a later second

	// T1: the bad write; T2: a deleteMany; then ordinary writes, and the faults.
	must(t, ignore(foo.UpdateMany(ctx, bson.D{}, bson.D{{Key: "$set", Value: bson.D{{Key: "price", Value: int32(0)}}}})))
	for id := range m {
		m[id] = set(m[id], "price", int32(0))
	}
	must(t, ignore(foo.DeleteMany(ctx, bson.D{{Key: "cat", Value: "b"}})))
	for id, d := range m {
		if get(d, "cat") == "b" {
			delete(m, id)
		}
	}
	workload(ctx, t, rng, foo, m, &next, 150)
	saveFault.Arm(0, -1)
	if _, err := p.CaptureOnce(ctx, capture.Overrides{}); err == nil {
		t.Fatal("capture did not crash before its checkpoint")
	}
	saveFault.Disarm()
	writeFault.Arm(30, 1)
	putFault.Arm(0, 1)
	must(t, p.Sync(ctx))
	if writeFault.Fired() != 1 || putFault.Fired() != 1 {
		t.Errorf("faults fired: write %d, put %d; want 1 each", writeFault.Fired(), putFault.Fired())
	}
	now := primaryState(ctx, t, foo)
	sameState(t, "the workload's model after the bad writes", now, m.snapshot(t))
	// Each event has one line, though the crashed capture published its events twice and
	// batches were redelivered.
	lines := map[string]int{}
	layout := archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}
	for _, prefix := range []string{layout.HistoryPrefix(ns.DB, ns.Coll), layout.DeletesPrefix(ns.DB, ns.Coll)} {
		keys, err := p.Archive().List(ctx, prefix)
		must(t, err)
		for _, k := range keys {
			body, err := p.Archive().Get(ctx, k)
			must(t, err)
			ls, err := archive.DecodeObject(body)
			must(t, err)
			for _, l := range ls {
				r, err := archive.ParseLine(l)
				must(t, err)
				lines[r.EventID]++
				if !r.BeforeExact && r.Operation != "insert" {
					t.Errorf("inexact line: %s %s %s", r.Operation, r.EventID, r.BeforeNote)
				}
			}
		}
	}
	for id, n := range lines {
		if n != 1 {
			t.Errorf("event %s has %d lines", id, n)
		}
	}

	reader := restore.ArchiveReader{Store: p.Archive(), Layout: archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}}
	limits := apply.NewMongoWriter(p.DR()).WithStateDB(p.ApplyConfig().StateDB)
	opts := func(o restore.AsOfOptions) restore.AsOfOptions {
		o.Primary, o.DR, o.Archive, o.Limits, o.NS = p.Primary(), p.DR(), reader, limits, ns
		if o.AsOf.IsZero() {
			o.AsOf = asOf
		}
		o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
		return o
	}

	// Refused: before the history was switched on, and beyond the retention.
	for _, tc := range []struct {
		o    restore.AsOfOptions
		want string
	}{
		{restore.AsOfOptions{AsOf: asOf.Add(-time.Hour)}, "when the version history of bar.foo was switched on"},
		{restore.AsOfOptions{Retention: time.Millisecond}, "older than the archive's retention"},
	} {
		if _, err := restore.RunAsOf(ctx, opts(tc.o)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("restore --as-of %s (retention %s): err %v, want %q", tc.o.AsOf, tc.o.Retention, err, tc.want)
		}
	}

	// A dry run writes nothing and counts every document of both states.
	rep, err := restore.RunAsOf(ctx, opts(restore.AsOfOptions{}))
	must(t, err)
	sameState(t, "after a dry run (nothing may change)", primaryState(ctx, t, foo), now)
	removed, recreated, changed, unchanged := 0, 0, 0, 0
	for id, d := range now {
		w, ok := atT[id]
		switch {
		case !ok:
			removed++
		case !bytes.Equal(w, d):
			changed++
		default:
			unchanged++
		}
	}
	for id := range atT {
		if _, ok := now[id]; !ok {
			recreated++
		}
	}
	if rep.ChangedBack != changed || rep.Recreated != recreated || rep.Removed != removed || rep.Unchanged < unchanged ||
		rep.Unknown != 0 || rep.Inexact != 0 || !rep.DryRun {
		t.Errorf("dry run: %+v; want changed back %d, re-created %d, removed %d, unchanged >= %d", rep, changed, recreated, removed, unchanged)
	}
	if changed == 0 || recreated == 0 || removed == 0 {
		t.Fatalf("weak workload: %d changed, %d deleted, %d inserted after T", changed, recreated, removed)
	}

	// A filtered restore in place: the documents of category "a" come back to T, nothing else moves.
	rep, err = restore.RunAsOf(ctx, opts(restore.AsOfOptions{Filter: mustRaw(t, bson.D{{Key: "cat", Value: "a"}}), Apply: true}))
	must(t, err)
	want := map[int32][]byte{}
	isA := func(doc []byte) bool { return bson.Raw(doc).Lookup("cat").StringValue() == "a" }
	for id, d := range now {
		if !isA(d) {
			want[id] = d
		}
	}
	for id, d := range atT {
		if isA(d) {
			want[id] = d
		}
	}
	sameState(t, "after the filtered restore", primaryState(ctx, t, foo), want)

	// The whole collection as of T into a new collection, then in place.
	_, err = restore.RunAsOf(ctx, opts(restore.AsOfOptions{Into: "foo_at_t", Apply: true}))
	must(t, err)
	sameState(t, "restored into foo_at_t", primaryState(ctx, t, p.Primary().Database(ns.DB).Collection("foo_at_t")), atT)
	if _, err := restore.RunAsOf(ctx, opts(restore.AsOfOptions{Into: "foo_at_t", Apply: true})); err == nil ||
		!strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore into a collection that is not empty: err %v", err)
	}
	rep, err = restore.RunAsOf(ctx, opts(restore.AsOfOptions{Apply: true}))
	must(t, err)
	sameState(t, "after the full restore in place", primaryState(ctx, t, foo), atT)
	t.Logf("at T %d documents; after the bad writes %d (%d changed, %d deleted, %d inserted after T); full restore: %+v",
		len(atT), len(now), changed, recreated, removed, struct{ ChangedBack, Recreated, Removed, Unchanged int }{
			rep.ChangedBack, rep.Recreated, rep.Removed, rep.Unchanged})

	// Once the restore's own writes are applied, DR holds the state at T too, and its history says so.
	must(t, p.Sync(ctx))
	sameState(t, "DR after the restore", primaryState(ctx, t, p.DR().Database(ns.DB).Collection(ns.Coll)), func() map[int32][]byte {
		w := maps.Clone(atT)
		for id, d := range primaryState(ctx, t, p.DR().Database(ns.DB).Collection(ns.Coll)) {
			if _, ok := w[id]; !ok {
				w[id] = d // DR keeps the documents the restore deleted (deletes are intercepted)
			}
		}
		return w
	}())

	// A drop after T: the documents are in DR's side collection, which restore --as-of names.
	must(t, foo.Drop(ctx))
	must(t, p.Sync(ctx))
	if _, err := restore.RunAsOf(ctx, opts(restore.AsOfOptions{})); err == nil || !strings.Contains(err.Error(), "its documents are in DR's bar.foo.dropped.") {
		t.Errorf("restore --as-of across a drop: err %v, want the side collection named", err)
	}
}

func mustRaw(t *testing.T, v any) bson.Raw {
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
