package e2e

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
)

// TestCollectionEventsAreRecoverable drops, renames over and drops the database of watched
// collections, recreating them with the same _ids in between, on a three-partition topic with the
// apply retries of the embedded mapping. Then it checks the archive's promise for collection
// events: every drop, rename and dropDatabase of the primary's own history has exactly one line,
// and every version any of them removed is restored by `restore-collection` (restore.Collection)
// into a fresh primary, byte for byte, from the side collection its line names; a recreated
// collection never overwrote a preserved one.
func TestCollectionEventsAreRecoverable(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end suite")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{S3SlowDownRate: 0.02, S3SlowDownSeed: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	env := map[string]string{"WATCH_DB": "ddl", "IDLE_TIMEOUT": "150ms", "MAX_AWAIT": "50ms", "DEADLINE_MARGIN": "1s", "LEASE_TTL": "2s"}
	p, err := localrun.New(ctx, localrun.Options{
		Getenv:         localrun.Getenv(env, st.Env(), nil),
		ManualCapture:  true,
		BatchSize:      7,
		BatchingWindow: 20 * time.Millisecond,
		RetryBackoff:   5 * time.Millisecond,
		Logger:         slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CaptureOnce(ctx, capture.Overrides{}); err != nil { // pins the start
		t.Fatal(err)
	}
	// The primary's own history of the database, read independently of capture.
	history, err := p.Primary().Database("ddl").Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer history.Close(ctx)
	p.Start(ctx)

	db := p.Primary().Database("ddl")
	doc := func(id int, v string) bson.D { return bson.D{{Key: "_id", Value: int32(id)}, {Key: "v", Value: v}} }
	insert := func(coll string, docs ...bson.D) {
		t.Helper()
		for _, d := range docs {
			if _, err := db.Collection(coll).InsertOne(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Versions as the primary stored them, read back (what DR and restore must reproduce).
	stored := func(coll string) []bson.Raw {
		t.Helper()
		return sortedDocs(ctx, t, db.Collection(coll))
	}

	insert("a", doc(0, "a0"), doc(1, "a1"), doc(2, "a2"), doc(3, "a3"))
	insert("b", doc(0, "b0"), doc(1, "b1"))
	insert("c", doc(0, "c0"))
	_, err = db.Collection("a").UpdateOne(ctx, bson.D{{Key: "_id", Value: int32(1)}}, bson.D{{Key: "$set", Value: bson.D{{Key: "w", Value: int64(1)}}}})
	must(err)
	_, err = db.Collection("a").DeleteOne(ctx, bson.D{{Key: "_id", Value: int32(3)}})
	must(err)
	aFirst := stored("a") // a0, a1 (updated), a2; a3 was deleted: archived, DR keeps it
	a3 := bson.Raw(mustMarshal(t, doc(3, "a3")))
	aFirst = sortRaw(append(aFirst, a3))
	bFirst, cFirst := stored("b"), stored("c")

	must(db.Collection("a").Drop(ctx))
	insert("a", doc(0, "a recreated"), doc(5, "a5"))
	aSecond := stored("a")
	must(p.Primary().Database("admin").RunCommand(ctx, bson.D{{Key: "renameCollection", Value: "ddl.b"}, {Key: "to", Value: "ddl.b2"}}).Err())
	insert("b", doc(0, "b recreated"))
	bSecond := stored("b")
	must(db.Drop(ctx))
	insert("c", doc(0, "c after dropDatabase"))
	cLive := stored("c")

	syncCtx, cancelSync := context.WithTimeout(ctx, 60*time.Second)
	defer cancelSync()
	if err := p.Sync(syncCtx); err != nil {
		t.Fatal(err)
	}

	// The primary's collection events, by eventId.
	want := map[string]changeevent.OperationType{}
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	for history.Next(hctx) {
		op := changeevent.OperationType(history.Current.Lookup("operationType").StringValue())
		if op == "invalidate" {
			break
		}
		if op == changeevent.Drop || op == changeevent.Rename || op == changeevent.DropDatabase {
			ev := changeevent.Event{ResumeToken: slices.Clone(history.Current.Lookup("_id").Document())}
			want[ev.EventID()] = op
		}
		if op == changeevent.DropDatabase {
			break
		}
	}
	if len(want) < 3 {
		t.Fatalf("the primary's history has %d collection events (%v), want at least the drop, rename and dropDatabase", len(want), want)
	}

	// Exactly one line per collection event, and one for the delete.
	layout := archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}
	reader := restore.ArchiveReader{Store: p.Archive(), Layout: layout}
	perEvent := map[string]int{}
	deletes := 0
	must(reader.Records(ctx, "ddl", "", time.Time{}, time.Time{}, func(r archive.Record) error {
		perEvent[r.EventID]++
		if r.Operation == string(changeevent.Delete) {
			deletes++
			before, err := r.BeforeDocument()
			if err != nil || !slices.Equal(before, a3) {
				t.Errorf("the delete's before is %v (%v), want %v", before, err, a3)
			}
			return nil
		}
		if _, ok := want[r.EventID]; !ok {
			t.Errorf("archived %s %s is not in the primary's history", r.Operation, r.EventID)
		}
		if r.PreservedAs == nil {
			t.Errorf("%s line %s names no side collection", r.Operation, r.EventID)
		}
		return nil
	}))
	for ev, op := range want {
		if perEvent[ev] != 1 {
			t.Errorf("%s %s has %d archive lines, want 1", op, ev, perEvent[ev])
		}
	}
	if deletes != 1 || len(perEvent) != len(want)+1 {
		t.Errorf("the archive holds %d events (%d deletes), want %d collection events and 1 delete", len(perEvent), deletes, len(want))
	}

	// Every version is restored, byte for byte, into a fresh primary, from the side collection
	// of the event that removed it.
	// A dropDatabase comes after a drop of each of its collections (MongoDB and DocumentDB
	// emit them), so each collection's versions are in the side collection of its own drop.
	var events []archive.Record // collection events, in cluster-time order
	must(reader.Records(ctx, "ddl", "", time.Time{}, time.Time{}, func(r archive.Record) error {
		if r.Operation != string(changeevent.Delete) {
			events = append(events, r)
		}
		return nil
	}))
	slices.SortFunc(events, func(a, b archive.Record) int {
		ta, _ := a.ClusterTimestamp()
		tb, _ := b.ClusterTimestamp()
		return ta.Compare(tb)
	})
	eventOf := func(op changeevent.OperationType, coll string, nth int) string {
		t.Helper()
		for _, r := range events {
			if r.Operation == string(op) && (coll == "" || r.Coll == coll) {
				if nth == 0 {
					return r.EventID
				}
				nth--
			}
		}
		t.Fatalf("no %s line for %q", op, coll)
		return ""
	}
	_, fresh := mongotest.Start(t, mongoserver.Options{})
	cases := []struct {
		name, coll, event, into string
		want                    []bson.Raw
	}{
		{"a as its drop removed it (with its intercepted delete)", "a", eventOf(changeevent.Drop, "a", 0), "a_first", aFirst},
		{"a recreated, as the dropDatabase's drop of a removed it", "a", eventOf(changeevent.Drop, "a", 1), "a_second", aSecond},
		{"b renamed to b2, then dropped", "b2", eventOf(changeevent.Drop, "b2", 0), "b2", bFirst},
		{"b recreated after the rename, then dropped", "b", eventOf(changeevent.Drop, "b", 0), "b_second", bSecond},
		{"c, by the latest event that preserved it", "c", "", "c_first", cFirst},
		{"the rename displaced no b2 (none existed)", "b2", eventOf(changeevent.Rename, "b", 0), "b2_displaced", nil},
	}
	for _, tc := range cases {
		rep, err := restore.Collection(ctx, restore.CollectionOptions{Primary: fresh, DR: p.DR(), Archive: reader,
			DB: "ddl", Coll: tc.coll, EventID: tc.event, Into: tc.into, Apply: true})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := sortedDocs(ctx, t, fresh.Database("ddl").Collection(tc.into))
		if rep.Restored != len(tc.want) || !equalRaw(got, tc.want) {
			t.Errorf("%s: restored %d from %s:\n got  %v\n want %v", tc.name, rep.Restored, rep.Source, exts(got), exts(tc.want))
		}
	}
	// DR's live collections hold what the primary holds now.
	if got := sortedDocs(ctx, t, p.DR().Database("ddl").Collection("c")); !equalRaw(got, cLive) {
		t.Errorf("DR ddl.c = %v, want %v", exts(got), exts(cLive))
	}
	for _, coll := range []string{"a", "b", "b2"} {
		if n, err := p.DR().Database("ddl").Collection(coll).CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
			t.Errorf("DR ddl.%s holds %d documents (%v) after dropDatabase, want 0 (moved aside)", coll, n, err)
		}
	}
	t.Logf("collection events: %d in the primary's history, each archived once; %d restores byte for byte", len(want), len(cases))
}

func sortedDocs(ctx context.Context, t *testing.T, c *mongo.Collection) []bson.Raw {
	t.Helper()
	cur, err := c.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	var out []bson.Raw
	for cur.Next(ctx) {
		out = append(out, slices.Clone(cur.Current))
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sortRaw(docs []bson.Raw) []bson.Raw {
	slices.SortFunc(docs, func(a, b bson.Raw) int { return int(a.Lookup("_id").Int32() - b.Lookup("_id").Int32()) })
	return docs
}

func equalRaw(a, b []bson.Raw) bool {
	return slices.EqualFunc(a, b, func(x, y bson.Raw) bool { return slices.Equal(x, y) })
}

func exts(docs []bson.Raw) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = ext(d)
	}
	return out
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
