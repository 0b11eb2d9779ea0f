package conformance

// Change streams (manual: changeStreams, reference/change-events, reference/method/
// db.collection.watch; driver Change Streams spec).

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// TestChangeStreamDocumentEvents: insert, update, replace and delete each produce one event
// with the documented fields: operationType, ns, documentKey, clusterTime, a resume token
// _id; fullDocument for insert and replace (the new document) but not, by default, for
// update and delete (manual: reference/change-events/{insert,update,replace,delete}).
func TestChangeStreamDocumentEvents(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	coll := db.Collection("c")
	cs := openStream(t, coll)

	inserted := doc("_id", 1, "a", 1, "b", doc("c", 1), "d", "gone soon")
	_, err := coll.InsertOne(ctx, inserted)
	requireNoError(t, err, "insert")
	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("a", 2)))
	requireNoError(t, err, "update")
	_, err = coll.ReplaceOne(ctx, doc("_id", 1), doc("z", "replaced"))
	requireNoError(t, err, "replace")
	_, err = coll.DeleteOne(ctx, doc("_id", 1))
	requireNoError(t, err, "delete")

	evs := nextEvents(t, cs, 4)
	requireStrings(t, summaries(evs), []string{"insert c " + intKey(1), "update c " + intKey(1), "replace c " + intKey(1), "delete c " + intKey(1)}, "events")

	for _, ev := range evs {
		if ev.NS != (namespace{db.Name(), "c"}) {
			t.Errorf("%s: ns = %s, want %s.c", ev.Op, ev.NS, db.Name())
		}
		requireDoc(t, ev.DocumentKey, doc("_id", 1), false, ev.Op+" documentKey")
		if ev.ClusterTime.T == 0 {
			t.Errorf("%s: clusterTime is zero", ev.Op)
		}
	}
	requireDoc(t, evs[0].FullDocument.Document(), inserted, true, "insert fullDocument")
	requireDoc(t, evs[2].FullDocument.Document(), doc("_id", 1, "z", "replaced"), true, "replace fullDocument")
	for _, i := range []int{1, 3} {
		if !evs[i].FullDocument.IsZero() {
			t.Errorf("%s event carries fullDocument %s; want none without fullDocument: updateLookup", evs[i].Op, evs[i].FullDocument)
		}
	}
	if !evs[1].HasUpdDesc {
		t.Errorf("update event without updateDescription: %s", evs[1].Raw)
	}
	requireNoEvent(t, cs)
}

// TestChangeStreamUpdateDescription: updatedFields holds the new value of each changed field
// (not the operator that produced it), keyed by dotted path; removedFields lists unset paths
// (manual: reference/change-events/update, "updateDescription").
func TestChangeStreamUpdateDescription(t *testing.T) {
	cases := []struct {
		name        string
		start       bson.D
		update      bson.D
		wantUpdated bson.D
		wantRemoved []string
	}{
		{"$set a new and an existing field", doc("_id", 1, "a", 1), doc("$set", doc("a", 2, "b", "x")), doc("a", 2, "b", "x"), nil},
		{"$set a dotted path", doc("_id", 1, "m", doc("x", 1, "y", 1)), doc("$set", doc("m.x", 5)), doc("m.x", 5), nil},
		{"$set an array element", doc("_id", 1, "arr", bson.A{1, 2, 3}), doc("$set", doc("arr.1", 9)), doc("arr.1", 9), nil},
		{"$unset a field", doc("_id", 1, "a", 1, "b", 2), doc("$unset", doc("b", "")), doc(), []string{"b"}},
		{"$unset a dotted path", doc("_id", 1, "m", doc("x", 1, "y", 2)), doc("$unset", doc("m.y", "")), doc(), []string{"m.y"}},
		{"$inc reports the new value", doc("_id", 1, "n", int32(1)), doc("$inc", doc("n", int32(5))), doc("n", int32(6)), nil},
		{"$set and $unset together", doc("_id", 1, "a", 1, "b", 2, "c", 3), doc("$set", doc("a", "A"), "$unset", doc("b", "", "c", "")), doc("a", "A"), []string{"b", "c"}},
	}
	client := newClient(t)
	db := testDB(t, client)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			coll := db.Collection("c" + string(rune('a'+i)))
			_, err := coll.InsertOne(ctx, tc.start)
			requireNoError(t, err, "seed")
			cs := openStream(t, coll)
			_, err = coll.UpdateOne(ctx, doc("_id", 1), tc.update)
			requireNoError(t, err, "update")

			ev := nextEvent(t, cs)
			if ev.Op != "update" {
				t.Fatalf("event %s, want update", ev.summary())
			}
			if ev.Updated == nil {
				t.Fatalf("updateDescription.updatedFields missing: %s", ev.Raw)
			}
			requireDoc(t, ev.Updated, tc.wantUpdated, false, "updatedFields")
			requireStrings(t, sortedStrings(ev.Removed), tc.wantRemoved, "removedFields")
		})
	}
}

// TestChangeStreamResume: a stream resumed from a saved token yields exactly the events
// after that token — none lost, none repeated — including events written while no stream
// was open. The token may be the stream's ResumeToken() or the event's _id, and may be
// passed as resumeAfter or (4.2+) startAfter (manual: changeStreams, "Resume a Change
// Stream"; driver Change Streams spec, "getResumeToken").
func TestChangeStreamResume(t *testing.T) {
	cases := []struct {
		name       string
		startAfter bool
		eventID    bool // resume from the event's _id rather than ResumeToken()
	}{
		{name: "resumeAfter ResumeToken()"},
		{name: "resumeAfter event _id", eventID: true},
		{name: "startAfter ResumeToken()", startAfter: true},
		{name: "startAfter event _id", startAfter: true, eventID: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			uri := serverURI(t)
			if tc.startAfter {
				uri = serverFor(t, 8, "startAfter")
			}
			ctx := testContext(t)
			coll := testDB(t, connect(t, uri)).Collection("c")

			cs := openStream(t, coll)
			for i := int32(1); i <= 6; i++ {
				_, err := coll.InsertOne(ctx, doc("_id", i))
				requireNoError(t, err, "insert")
			}
			evs := nextEvents(t, cs, 3)
			requireStrings(t, summaries(evs), []string{"insert c " + intKey(1), "insert c " + intKey(2), "insert c " + intKey(3)}, "first events")
			token := cs.ResumeToken()
			if tc.eventID {
				token = evs[2].Token
			}
			if token == nil {
				t.Fatalf("no resume token after three events")
			}
			requireNoError(t, cs.Close(ctx), "close the first stream")

			for i := int32(7); i <= 8; i++ {
				_, err := coll.InsertOne(ctx, doc("_id", i))
				requireNoError(t, err, "insert while no stream is open")
			}

			opts := options.ChangeStream().SetResumeAfter(token)
			if tc.startAfter {
				opts = options.ChangeStream().SetStartAfter(token)
			}
			resumed := openStream(t, coll, opts)
			var want []string
			for i := int32(4); i <= 8; i++ {
				want = append(want, "insert c "+intKey(i))
			}
			requireStrings(t, summaries(nextEvents(t, resumed, 5)), want, "events after the token")
			requireNoEvent(t, resumed)
		})
	}
}

// TestChangeStreamStartAfterInvalidate: dropping a watched collection yields drop then
// invalidate, after which the server closes the cursor; resumeAfter the invalidate token is
// refused with InvalidResumeToken (260), while startAfter it opens a new stream that sees
// what happens next (manual: changeStreams, "startAfter for Change Streams";
// reference/change-events/invalidate).
func TestChangeStreamStartAfterInvalidate(t *testing.T) {
	uri := serverFor(t, 8, "startAfter")
	ctx := testContext(t)
	coll := testDB(t, connect(t, uri)).Collection("c")

	cs := openStream(t, coll)
	_, err := coll.InsertOne(ctx, doc("_id", 1))
	requireNoError(t, err, "insert")
	requireNoError(t, coll.Drop(ctx), "drop")
	evs := nextEvents(t, cs, 3)
	requireStrings(t, summaries(evs)[:2], []string{"insert c " + intKey(1), "drop c"}, "events before invalidate")
	if evs[2].Op != "invalidate" {
		t.Fatalf("third event = %s, want invalidate", evs[2].summary())
	}
	requireClosedByServer(t, cs)
	invalidate := evs[2].Token

	_, err = coll.InsertOne(ctx, doc("_id", 2))
	requireNoError(t, err, "insert into the re-created collection")

	err = openStreamErr(t, coll, options.ChangeStream().SetResumeAfter(invalidate))
	requireCode(t, err, "resumeAfter an invalidate token", 260)

	after := openStream(t, coll, options.ChangeStream().SetStartAfter(invalidate))
	ev := nextEvent(t, after)
	if ev.summary() != "insert c "+intKey(2) {
		t.Fatalf("first event after the invalidate = %s, want the insert of 2", ev.summary())
	}
	requireNoEvent(t, after)
}

// TestChangeStreamStartAtOperationTime: startAtOperationTime yields the changes that
// occurred at or after the given cluster time (manual: reference/method/db.collection.watch,
// "startAtOperationTime", new in 4.0).
func TestChangeStreamStartAtOperationTime(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	cs := openStream(t, coll)
	for i := int32(1); i <= 3; i++ {
		_, err := coll.InsertOne(ctx, doc("_id", i))
		requireNoError(t, err, "insert")
	}
	evs := nextEvents(t, cs, 3)
	if !timestampLess(evs[0].ClusterTime, evs[1].ClusterTime) {
		t.Fatalf("separate inserts share or reverse cluster times: %v then %v", evs[0].ClusterTime, evs[1].ClusterTime)
	}

	at := evs[1].ClusterTime
	replay := openStream(t, coll, options.ChangeStream().SetStartAtOperationTime(&at))
	requireStrings(t, summaries(nextEvents(t, replay, 2)), []string{"insert c " + intKey(2), "insert c " + intKey(3)}, "events at or after the second insert")
	requireNoEvent(t, replay)
}

// TestChangeStreamHistoryLost: resuming from a token whose oplog entry is gone fails with
// ChangeStreamHistoryLost (286) instead of silently skipping changes (manual:
// reference/error-codes; changeStreams "Resume a Change Stream": the oplog must still hold
// the resume point). The embedded server is given a tiny oplog to make that happen.
func TestChangeStreamHistoryLost(t *testing.T) {
	uri := dedicatedServer(t, mongoserver.Options{OplogMaxEntries: 10}, "an oplog capped at 10 entries")
	requireHistoryLost(t, connect(t, uri), nil, 286)
}

// requireHistoryLost saves a token, writes far more entries than the oplog keeps, and
// checks that resuming from the token fails with wantCode. enable, when set, prepares the
// collection for change streams first (DocumentDB).
func requireHistoryLost(t *testing.T, client *mongo.Client, enable func(db, coll string), wantCode int) {
	t.Helper()
	ctx := testContext(t)
	coll := testDB(t, client).Collection("c")
	if enable != nil {
		enable(coll.Database().Name(), coll.Name())
	}
	cs := openStream(t, coll)
	_, err := coll.InsertOne(ctx, doc("_id", 0))
	requireNoError(t, err, "insert")
	token := nextEvent(t, cs).Token
	requireNoError(t, cs.Close(ctx), "close")

	for i := int32(1); i <= 50; i++ {
		_, err := coll.InsertOne(ctx, doc("_id", i))
		requireNoError(t, err, "insert")
	}
	err = openStreamErr(t, coll, options.ChangeStream().SetResumeAfter(token))
	requireCode(t, err, "resume from a token older than the retained history", wantCode)
}

// TestChangeStreamUpdateLookup: with fullDocument: updateLookup an update event carries the
// most current majority-committed version of the document at lookup time — which may
// include later changes — and null once the document has been deleted (manual:
// changeStreams, "Lookup Full Document for Update Operations").
func TestChangeStreamUpdateLookup(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	cs := openStream(t, coll, options.ChangeStream().SetFullDocument(options.UpdateLookup))

	_, err := coll.InsertOne(ctx, doc("_id", 1, "x", 0))
	requireNoError(t, err, "insert")
	for _, x := range []int{1, 2} {
		_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("x", x)))
		requireNoError(t, err, "update")
	}
	// Nothing was read until both updates were committed, so both lookups see x: 2.
	evs := nextEvents(t, cs, 3)
	requireStrings(t, summaries(evs), []string{"insert c " + intKey(1), "update c " + intKey(1), "update c " + intKey(1)}, "events")
	for i, ev := range evs[1:] {
		if ev.FullDocument.Type != bson.TypeEmbeddedDocument {
			t.Fatalf("update %d: fullDocument = %s, want the looked-up document", i+1, ev.FullDocument)
		}
		requireDoc(t, ev.FullDocument.Document(), doc("_id", 1, "x", 2), true, "looked-up document")
		requireDoc(t, ev.Updated, doc("x", i+1), false, "updatedFields still describe the update itself")
	}

	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("x", 3)))
	requireNoError(t, err, "update")
	_, err = coll.DeleteOne(ctx, doc("_id", 1))
	requireNoError(t, err, "delete")
	evs = nextEvents(t, cs, 2)
	requireStrings(t, summaries(evs), []string{"update c " + intKey(1), "delete c " + intKey(1)}, "events")
	if !isNull(evs[0].FullDocument) {
		t.Errorf("update looked up after the delete: fullDocument = %s (type %s), want null", evs[0].FullDocument, evs[0].FullDocument.Type)
	}
}

// TestChangeStreamCommitOrder: a database stream returns events in the order the writes
// committed, across collections, with non-decreasing cluster times (manual: changeStreams,
// "total ordering of changes across shards" / change events ordered by clusterTime).
func TestChangeStreamCommitOrder(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	a, b := db.Collection("a"), db.Collection("b")
	cs := openStream(t, db)

	steps := []struct {
		want string
		run  func() error
	}{
		{"insert a " + intKey(1), func() error { _, err := a.InsertOne(ctx, doc("_id", 1)); return err }},
		{"insert b " + intKey(1), func() error { _, err := b.InsertOne(ctx, doc("_id", 1)); return err }},
		{"update a " + intKey(1), func() error { _, err := a.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("v", 1))); return err }},
		{"insert a " + intKey(2), func() error { _, err := a.InsertOne(ctx, doc("_id", 2)); return err }},
		{"delete b " + intKey(1), func() error { _, err := b.DeleteOne(ctx, doc("_id", 1)); return err }},
		{"replace a " + intKey(2), func() error { _, err := a.ReplaceOne(ctx, doc("_id", 2), doc("r", 1)); return err }},
		{"insert b " + intKey(2), func() error { _, err := b.InsertOne(ctx, doc("_id", 2)); return err }},
		{"delete a " + intKey(1), func() error { _, err := a.DeleteOne(ctx, doc("_id", 1)); return err }},
	}
	var want []string
	for _, s := range steps {
		requireNoError(t, s.run(), s.want)
		want = append(want, s.want)
	}
	evs := nextEvents(t, cs, len(steps))
	requireStrings(t, summaries(evs), want, "events in commit order")
	for i := 1; i < len(evs); i++ {
		if timestampLess(evs[i].ClusterTime, evs[i-1].ClusterTime) {
			t.Errorf("clusterTime goes back from %v (%s) to %v (%s)", evs[i-1].ClusterTime, evs[i-1].summary(), evs[i].ClusterTime, evs[i].summary())
		}
	}
	requireNoEvent(t, cs)
}

// TestChangeStreamCollectionLifecycle: drop, rename and dropDatabase as seen by collection
// and database streams. A collection stream gets drop / rename (with "to") followed by
// invalidate, also when the whole database is dropped; a database stream gets drop and
// rename and stays open, and on dropDatabase gets drop, dropDatabase, invalidate
// (manual: reference/change-events/{drop,rename,dropDatabase,invalidate}).
func TestChangeStreamCollectionLifecycle(t *testing.T) {
	cases := []struct {
		name     string
		dbStream bool
		action   string // drop, rename, dropDatabase
		want     []string
		closes   bool
	}{
		{"collection stream, drop", false, "drop", []string{"insert src", "drop src", "invalidate"}, true},
		{"collection stream, rename", false, "rename", []string{"insert src", "rename src", "invalidate"}, true},
		{"collection stream, dropDatabase", false, "dropDatabase", []string{"insert src", "drop src", "invalidate"}, true},
		{"database stream, drop", true, "drop", []string{"insert src", "drop src"}, false},
		{"database stream, rename", true, "rename", []string{"insert src", "rename src"}, false},
		{"database stream, dropDatabase", true, "dropDatabase", []string{"insert src", "drop src", "dropDatabase", "invalidate"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			client := newClient(t)
			db := testDB(t, client)
			src := db.Collection("src")
			var cs *mongo.ChangeStream
			if tc.dbStream {
				cs = openStream(t, db)
			} else {
				cs = openStream(t, src)
			}
			_, err := src.InsertOne(ctx, doc("_id", 1))
			requireNoError(t, err, "insert")

			switch tc.action {
			case "drop":
				err = src.Drop(ctx)
			case "rename":
				err = client.Database("admin").RunCommand(ctx, doc(
					"renameCollection", db.Name()+".src", "to", db.Name()+".dst")).Err()
			case "dropDatabase":
				err = db.Drop(ctx)
			}
			requireNoError(t, err, tc.action)

			evs := nextEvents(t, cs, len(tc.want))
			var got []string
			for _, ev := range evs {
				got = append(got, strings.TrimSpace(ev.Op+" "+ev.NS.Coll))
			}
			requireStrings(t, got, tc.want, "events (operation and collection)")

			for _, ev := range evs {
				switch ev.Op {
				case "rename":
					if ev.NS != (namespace{db.Name(), "src"}) || ev.To != (namespace{db.Name(), "dst"}) {
						t.Errorf("rename: ns = %s, to = %s; want %s.src to %s.dst", ev.NS, ev.To, db.Name(), db.Name())
					}
				case "drop":
					if ev.NS != (namespace{db.Name(), "src"}) {
						t.Errorf("drop: ns = %s, want %s.src", ev.NS, db.Name())
					}
				case "dropDatabase":
					if ev.NS.DB != db.Name() {
						t.Errorf("dropDatabase: ns.db = %q, want %q", ev.NS.DB, db.Name())
					}
				}
			}

			if tc.closes {
				requireClosedByServer(t, cs)
				return
			}
			_, err = db.Collection("other").InsertOne(ctx, doc("_id", 2))
			requireNoError(t, err, "insert after the "+tc.action)
			if ev := nextEvent(t, cs); ev.summary() != "insert other "+intKey(2) {
				t.Errorf("database stream after %s: event %s, want the insert into other", tc.action, ev.summary())
			}
		})
	}
}

// TestChangeStreamScope: a collection stream sees only its collection, a database stream
// every collection of its database, a client stream every database (manual: changeStreams,
// "Watch Collection/Database/Deployment").
func TestChangeStreamScope(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	dbA, dbB := testDB(t, client), testDB(t, client)
	a1, a2, b1 := dbA.Collection("a1"), dbA.Collection("a2"), dbB.Collection("b1")

	collStream := openStream(t, a1)
	dbStream := openStream(t, dbA)
	clientStream := openStream(t, client)

	writes := []struct {
		coll *mongo.Collection
		id   int32
	}{{a1, 1}, {a2, 2}, {b1, 3}, {a1, 4}}
	for _, w := range writes {
		_, err := w.coll.InsertOne(ctx, doc("_id", w.id))
		requireNoError(t, err, "insert")
	}

	requireStrings(t, summaries(nextEvents(t, collStream, 2)),
		[]string{"insert a1 " + intKey(1), "insert a1 " + intKey(4)}, "collection stream")
	requireNoEvent(t, collStream)

	requireStrings(t, summaries(nextEvents(t, dbStream, 3)),
		[]string{"insert a1 " + intKey(1), "insert a2 " + intKey(2), "insert a1 " + intKey(4)}, "database stream")
	requireNoEvent(t, dbStream)

	// Other databases on a shared deployment may appear in the client stream; keep ours.
	var got []string
	for len(got) < 4 {
		ev := nextEvent(t, clientStream)
		if ev.NS.DB == dbA.Name() || ev.NS.DB == dbB.Name() {
			got = append(got, ev.summary())
		}
	}
	requireStrings(t, got, []string{"insert a1 " + intKey(1), "insert a2 " + intKey(2), "insert b1 " + intKey(3), "insert a1 " + intKey(4)}, "client stream")
}

// TestChangeStreamPipeline: a $match stage in the watch pipeline filters events
// (manual: changeStreams, "Modify Change Stream Output").
func TestChangeStreamPipeline(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	cs, err := coll.Watch(ctx, mongo.Pipeline{doc("$match", doc("operationType", doc("$in", bson.A{"insert", "delete"})))}, streamOpts())
	requireNoError(t, err, "watch with $match")
	t.Cleanup(func() { _ = cs.Close(ctx) })

	_, err = coll.InsertOne(ctx, doc("_id", 1))
	requireNoError(t, err, "insert")
	_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("v", 1)))
	requireNoError(t, err, "update")
	_, err = coll.DeleteOne(ctx, doc("_id", 1))
	requireNoError(t, err, "delete")
	requireStrings(t, summaries(nextEvents(t, cs, 2)), []string{"insert c " + intKey(1), "delete c " + intKey(1)}, "filtered events")
	requireNoEvent(t, cs)
}

// TestChangeStreamIdle: on an idle stream TryNext returns false without error after at most
// about maxAwaitTimeMS, and ResumeToken() is still set — from the post-batch resume token
// (4.0.7+) — so a consumer can checkpoint without events; resuming from that token repeats
// nothing already read (driver Change Streams spec, "TryNext" and "postBatchResumeToken";
// manual: reference/command/getMore "maxTimeMS" for awaitData cursors).
func TestChangeStreamIdle(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	coll := testDB(t, client).Collection("c")
	cs := openStream(t, coll)

	start := time.Now()
	if cs.TryNext(ctx) {
		t.Fatalf("event on a new stream over an untouched collection: %s", cs.Current)
	}
	if elapsed := time.Since(start); elapsed > 10*awaitTime+2*time.Second {
		t.Errorf("idle TryNext took %s with maxAwaitTime %s", elapsed, awaitTime)
	}
	requireNoError(t, cs.Err(), "idle TryNext")
	if cs.ResumeToken() == nil {
		t.Errorf("ResumeToken() is nil on an idle stream; want the post-batch resume token")
	}

	_, err := coll.InsertOne(ctx, doc("_id", 1))
	requireNoError(t, err, "insert")
	if ev := nextEvent(t, cs); ev.summary() != "insert c "+intKey(1) {
		t.Fatalf("event %s, want the insert", ev.summary())
	}
	for i := 0; i < 3; i++ {
		if cs.TryNext(ctx) {
			t.Fatalf("unexpected event: %s", cs.Current)
		}
	}
	requireNoError(t, cs.Err(), "idle TryNext after an event")
	checkpoint := cs.ResumeToken()
	if checkpoint == nil {
		t.Fatalf("ResumeToken() is nil after an event and idle getMores")
	}
	requireNoError(t, cs.Close(ctx), "close")

	_, err = coll.InsertOne(ctx, doc("_id", 2))
	requireNoError(t, err, "insert")
	resumed := openStream(t, coll, options.ChangeStream().SetResumeAfter(checkpoint))
	if ev := nextEvent(t, resumed); ev.summary() != "insert c "+intKey(2) {
		t.Fatalf("first event after resuming from the idle checkpoint = %s, want the insert of 2", ev.summary())
	}
	requireNoEvent(t, resumed)
}

// TestChangeStreamResumeAtBatchBoundaries: over many events read in small batches, the
// token ResumeToken() gives after any event — inside a batch (the event's _id) or at the end
// of one (the post-batch resume token) — resumes at exactly the next event (driver Change
// Streams spec, "getResumeToken"; manual: changeStreams, "Resume a Change Stream").
func TestChangeStreamResumeAtBatchBoundaries(t *testing.T) {
	const total, batch = 60, 7
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	cs := openStream(t, coll, options.ChangeStream().SetBatchSize(batch))

	docs := make([]any, total)
	for i := range docs {
		docs[i] = doc("_id", int32(i))
	}
	_, err := coll.InsertMany(ctx, docs)
	requireNoError(t, err, "insert")

	tokens := make([]bson.Raw, total)
	for i := range tokens {
		ev := nextEvent(t, cs)
		if ev.summary() != "insert c "+intKey(int32(i)) {
			t.Fatalf("event %d = %s, want the insert of %d", i, ev.summary(), i)
		}
		tokens[i] = append(bson.Raw(nil), cs.ResumeToken()...)
	}
	requireNoError(t, cs.Close(ctx), "close")

	for _, after := range []int{0, batch - 1, batch, 2*batch - 1, 30, total - 2, total - 1} {
		t.Run("after event "+strconv.Itoa(after), func(t *testing.T) {
			resumed := openStream(t, coll, options.ChangeStream().SetResumeAfter(tokens[after]).SetBatchSize(batch))
			var want []string
			for i := after + 1; i < total; i++ {
				want = append(want, "insert c "+intKey(int32(i)))
			}
			requireStrings(t, summaries(nextEvents(t, resumed, len(want))), want, "events after the token")
			requireNoEvent(t, resumed)
		})
	}
}
