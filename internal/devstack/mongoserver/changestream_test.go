package mongoserver

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// event is the subset of a change event the tests compare.
type event struct {
	ID            bson.Raw            `bson:"_id"`
	OperationType string              `bson:"operationType"`
	ClusterTime   primitive.Timestamp `bson:"clusterTime"`
	NS            struct {
		DB   string `bson:"db"`
		Coll string `bson:"coll"`
	} `bson:"ns"`
	To struct {
		DB   string `bson:"db"`
		Coll string `bson:"coll"`
	} `bson:"to"`
	DocumentKey       bson.M   `bson:"documentKey"`
	FullDocument      bson.Raw `bson:"fullDocument"`
	UpdateDescription *struct {
		UpdatedFields   bson.M   `bson:"updatedFields"`
		RemovedFields   []string `bson:"removedFields"`
		TruncatedArrays []bson.M `bson:"truncatedArrays"`
	} `bson:"updateDescription"`
}

// next reads one event or fails the test.
func next(t *testing.T, cs *mongo.ChangeStream) event {
	t.Helper()
	if !cs.Next(ctx(t)) {
		t.Fatalf("change stream ended: %v", cs.Err())
	}
	var ev event
	if err := cs.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// label renders an event as "op ns _id" for compact comparisons.
func (ev event) label() string {
	id := ""
	if ev.DocumentKey != nil {
		id = fmt.Sprint(ev.DocumentKey["_id"])
	}
	return fmt.Sprintf("%s %s.%s %s", ev.OperationType, ev.NS.DB, ev.NS.Coll, id)
}

func watchColl(t *testing.T, coll *mongo.Collection, opts ...*options.ChangeStreamOptions) *mongo.ChangeStream {
	t.Helper()
	cs, err := coll.Watch(ctx(t), mongo.Pipeline{}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close(ctx(t)) })
	return cs
}

func insertIDs(t *testing.T, coll *mongo.Collection, ids ...int) {
	t.Helper()
	for _, id := range ids {
		if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: id}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestResumeExactlyAfterToken saves each event's token, reopens the stream
// from it and checks the rest arrive with no gap and no repeat.
func TestResumeExactlyAfterToken(t *testing.T) {
	s := startServer(t, Options{NoopInterval: 10 * time.Millisecond})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll)
	insertIDs(t, coll, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	var tokens []bson.Raw
	for i := 0; i < 10; i++ {
		ev := next(t, cs)
		if got := ev.DocumentKey["_id"]; got != int32(i) {
			t.Fatalf("event %d has _id %v", i, got)
		}
		tokens = append(tokens, cs.ResumeToken())
	}
	time.Sleep(50 * time.Millisecond) // let no-op entries pile up between
	for i, tok := range tokens {
		for _, startAfter := range []bool{false, true} {
			o := options.ChangeStream().SetResumeAfter(tok)
			if startAfter {
				o = options.ChangeStream().SetStartAfter(tok)
			}
			rs := watchColl(t, coll, o)
			for want := i + 1; want < 10; want++ {
				if got := next(t, rs).DocumentKey["_id"]; got != int32(want) {
					t.Fatalf("resume after %d (startAfter=%v): got %v, want %d", i, startAfter, got, want)
				}
			}
			_ = rs.Close(ctx(t))
		}
	}
}

// TestPostBatchResumeTokenAdvances: an idle stream's token moves forward
// through no-op entries and through other namespaces' writes, and resuming
// from it yields exactly the later events.
func TestPostBatchResumeTokenAdvances(t *testing.T) {
	s := startServer(t, Options{NoopInterval: 20 * time.Millisecond})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	other := cl.Database("d").Collection("other")
	cs := watchColl(t, coll, options.ChangeStream().SetMaxAwaitTime(50*time.Millisecond))
	if cs.TryNext(ctx(t)) {
		t.Fatal("unexpected event")
	}
	first := cs.ResumeToken()
	insertIDs(t, other, 1, 2, 3)
	time.Sleep(60 * time.Millisecond)
	if cs.TryNext(ctx(t)) {
		t.Fatalf("event of another collection leaked: %v", cs.Current)
	}
	second := cs.ResumeToken()
	if string(first.Lookup("_data").StringValue()) >= second.Lookup("_data").StringValue() {
		t.Fatalf("post-batch resume token did not advance: %v then %v", first, second)
	}
	insertIDs(t, coll, 42)
	rs := watchColl(t, coll, options.ChangeStream().SetResumeAfter(second))
	if got := next(t, rs).DocumentKey["_id"]; got != int32(42) {
		t.Fatalf("got %v", got)
	}
}

// TestInvalidateAndStartAfter: dropping a watched collection emits drop then
// invalidate and closes the stream; resumeAfter the invalidate token is
// refused, startAfter it continues with the recreated collection.
func TestInvalidateAndStartAfter(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll)
	insertIDs(t, coll, 1)
	if err := coll.Drop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	insertIDs(t, coll, 2)
	if got := next(t, cs).label(); got != "insert d.c 1" {
		t.Fatal(got)
	}
	dropTok := cs.ResumeToken()
	if got := next(t, cs).OperationType; got != "drop" {
		t.Fatal(got)
	}
	if got := next(t, cs).OperationType; got != "invalidate" {
		t.Fatal(got)
	}
	invTok := cs.ResumeToken()
	if cs.Next(ctx(t)) {
		t.Fatalf("stream continued after invalidate: %v", cs.Current)
	}

	// Resuming after the event before the drop replays drop + invalidate.
	rs := watchColl(t, coll, options.ChangeStream().SetResumeAfter(dropTok))
	if got := next(t, rs).OperationType; got != "drop" {
		t.Fatal(got)
	}
	if got := next(t, rs).OperationType; got != "invalidate" {
		t.Fatal(got)
	}

	_, err := coll.Watch(ctx(t), mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(invTok))
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(codeInvalidResumeToken) {
		t.Fatalf("resumeAfter invalidate: got %v", err)
	}
	sa := watchColl(t, coll, options.ChangeStream().SetStartAfter(invTok))
	if got := next(t, sa).label(); got != "insert d.c 2" {
		t.Fatal(got)
	}
}

// TestRenameInvalidates: a rename emits rename (with to) then invalidate.
func TestRenameInvalidates(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	insertIDs(t, coll, 1)
	cs := watchColl(t, coll)
	err := cl.Database("admin").RunCommand(ctx(t), bson.D{{Key: "renameCollection", Value: "d.c"}, {Key: "to", Value: "d.c2"}}).Err()
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, cs)
	if ev.OperationType != "rename" || ev.To.Coll != "c2" || ev.To.DB != "d" {
		t.Fatalf("got %+v", ev)
	}
	if got := next(t, cs).OperationType; got != "invalidate" {
		t.Fatal(got)
	}
}

// TestHistoryLost: a resume point older than the retained history fails with
// 286 on MongoDB and 136 in DocumentDB mode, for tokens and timestamps.
func TestHistoryLost(t *testing.T) {
	for _, tc := range []struct {
		name       string
		documentDB bool
		code       int32
	}{
		{"mongodb", false, codeChangeStreamHistoryLost},
		{"documentdb", true, codeCappedPositionLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Options{DocumentDB: tc.documentDB, OplogMaxEntries: 5, NoopInterval: -1})
			cl := connect(t, s)
			enableStreams(t, cl, "", "")
			coll := cl.Database("d").Collection("c")
			cs := watchColl(t, coll)
			insertIDs(t, coll, 1)
			next(t, cs)
			tok := cs.ResumeToken()
			opTime := time.Now()
			insertIDs(t, coll, 2, 3, 4, 5, 6, 7, 8)
			for _, o := range []*options.ChangeStreamOptions{
				options.ChangeStream().SetResumeAfter(tok),
				options.ChangeStream().SetStartAfter(tok),
				options.ChangeStream().SetStartAtOperationTime(&primitive.Timestamp{T: uint32(opTime.Unix()) - 5}),
			} {
				cs, err := coll.Watch(ctx(t), mongo.Pipeline{}, o)
				if err == nil {
					// The error may surface on the first getMore instead.
					cs.Next(ctx(t))
					err = cs.Err()
				}
				var se mongo.ServerError
				if !errors.As(err, &se) || !se.HasErrorCode(int(tc.code)) {
					t.Fatalf("want code %d, got %v", tc.code, err)
				}
			}
			// An open stream that falls behind the cap fails the same way.
			lagging := watchColl(t, coll, options.ChangeStream().SetBatchSize(1))
			insertIDs(t, coll, 10, 11, 12, 13, 14, 15, 16, 17)
			lagging.Next(ctx(t))
			var se mongo.ServerError
			if !errors.As(lagging.Err(), &se) || !se.HasErrorCode(int(tc.code)) {
				t.Fatalf("lagging stream: want code %d, got %v", tc.code, lagging.Err())
			}
		})
	}
}

func enableStreams(t *testing.T, cl *mongo.Client, db, coll string) {
	t.Helper()
	err := cl.Database("admin").RunCommand(ctx(t), bson.D{
		{Key: "modifyChangeStreams", Value: 1}, {Key: "database", Value: db},
		{Key: "collection", Value: coll}, {Key: "enable", Value: true},
	}).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpdateLookup: fullDocument is the document as it is when read, or null
// once it was deleted.
func TestUpdateLookup(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll, options.ChangeStream().SetFullDocument(options.UpdateLookup))
	insertIDs(t, coll, 1, 2)
	set := func(id, v int) {
		_, err := coll.UpdateByID(ctx(t), id, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: v}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	set(1, 10)
	set(1, 11)
	set(2, 20)
	if _, err := coll.DeleteOne(ctx(t), bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	next(t, cs)
	next(t, cs)
	for _, want := range []string{`{"_id": {"$numberInt":"1"},"v": {"$numberInt":"11"}}`, `{"_id": {"$numberInt":"1"},"v": {"$numberInt":"11"}}`, "null"} {
		ev := next(t, cs)
		got := "null"
		if len(ev.FullDocument) > 0 {
			got = ev.FullDocument.String()
		}
		if ev.OperationType != "update" || got != want {
			t.Fatalf("%s: fullDocument %s, want %s", ev.OperationType, got, want)
		}
	}
	if ev := next(t, cs); ev.OperationType != "delete" || len(ev.FullDocument) != 0 {
		t.Fatalf("delete event: %+v", ev)
	}
}

// TestEventShapes checks each operation's event fields.
func TestEventShapes(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll)
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: 1}, {Key: "arr", Value: bson.A{1, 2, 3}}, {Key: "gone", Value: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateByID(ctx(t), 1, bson.D{
		{Key: "$set", Value: bson.D{{Key: "a", Value: 2}, {Key: "n.x", Value: "y"}}},
		{Key: "$unset", Value: bson.D{{Key: "gone", Value: ""}}},
		{Key: "$push", Value: bson.D{{Key: "arr", Value: 4}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.ReplaceOne(ctx(t), bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "b", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx(t), bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}

	ins := next(t, cs)
	if ins.OperationType != "insert" || ins.FullDocument.Lookup("a").Int32() != 1 || ins.DocumentKey["_id"] != int32(1) {
		t.Fatalf("insert: %+v", ins)
	}
	up := next(t, cs)
	if up.OperationType != "update" || up.UpdateDescription == nil || len(up.FullDocument) != 0 {
		t.Fatalf("update: %+v", up)
	}
	ud := up.UpdateDescription
	if ud.UpdatedFields["a"] != int32(2) || ud.UpdatedFields["n.x"] != "y" || ud.UpdatedFields["arr.3"] != int32(4) {
		t.Fatalf("updatedFields: %v", ud.UpdatedFields)
	}
	if len(ud.RemovedFields) != 1 || ud.RemovedFields[0] != "gone" || ud.TruncatedArrays == nil {
		t.Fatalf("removedFields %v truncatedArrays %v", ud.RemovedFields, ud.TruncatedArrays)
	}
	rep := next(t, cs)
	if rep.OperationType != "replace" || rep.FullDocument.Lookup("b").Int32() != 1 || rep.FullDocument.Lookup("_id").Int32() != 1 {
		t.Fatalf("replace: %+v", rep)
	}
	del := next(t, cs)
	if del.OperationType != "delete" || del.DocumentKey["_id"] != int32(1) {
		t.Fatalf("delete: %+v", del)
	}
	if !(ins.ClusterTime.Compare(up.ClusterTime) < 0 && up.ClusterTime.Compare(rep.ClusterTime) < 0 && rep.ClusterTime.Compare(del.ClusterTime) < 0) {
		t.Fatal("cluster times are not strictly increasing")
	}
}

// TestScopes: a database stream sees every collection of its database, a
// collection stream only its own, a cluster stream everything, all in commit
// order; dropDatabase invalidates the database stream only.
func TestScopes(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	a := cl.Database("d").Collection("a")
	b := cl.Database("d").Collection("b")
	x := cl.Database("e").Collection("x")
	collStream := watchColl(t, a)
	dbStream, err := cl.Database("d").Watch(ctx(t), mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer dbStream.Close(ctx(t))
	clusterStream, err := cl.Watch(ctx(t), mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer clusterStream.Close(ctx(t))

	insertIDs(t, a, 1)
	insertIDs(t, b, 2)
	insertIDs(t, x, 3)
	insertIDs(t, a, 4)
	if err := cl.Database("d").Drop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	insertIDs(t, x, 5)

	expect := func(name string, cs *mongo.ChangeStream, want []string) {
		t.Helper()
		for i, w := range want {
			if got := next(t, cs).label(); got != w {
				t.Fatalf("%s event %d: got %q, want %q", name, i, got, w)
			}
		}
	}
	expect("collection", collStream, []string{"insert d.a 1", "insert d.a 4", "drop d.a ", "invalidate . "})
	expect("database", dbStream, []string{"insert d.a 1", "insert d.b 2", "insert d.a 4", "drop d.a ", "drop d.b ", "dropDatabase d. ", "invalidate . "})
	expect("cluster", clusterStream, []string{"insert d.a 1", "insert d.b 2", "insert e.x 3", "insert d.a 4", "drop d.a ", "drop d.b ", "dropDatabase d. ", "insert e.x 5"})
}

// TestCommitOrderConcurrent: concurrent writers to two collections; a
// database stream sees every write exactly once with increasing times.
func TestCommitOrderConcurrent(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	db := cl.Database("d")
	cs, err := db.Watch(ctx(t), mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx(t))
	const perWriter = 200
	errc := make(chan error, 2)
	for _, name := range []string{"a", "b"} {
		go func(coll *mongo.Collection) {
			for i := 0; i < perWriter; i++ {
				if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: i}}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}(db.Collection(name))
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	var last primitive.Timestamp
	for i := 0; i < 2*perWriter; i++ {
		ev := next(t, cs)
		if !last.IsZero() && ev.ClusterTime.Compare(last) <= 0 {
			t.Fatalf("cluster time went from %v to %v", last, ev.ClusterTime)
		}
		last = ev.ClusterTime
		if want := int32(seen[ev.NS.Coll]); ev.DocumentKey["_id"] != want {
			t.Fatalf("%s: got _id %v, want %d (per-collection order broken)", ev.NS.Coll, ev.DocumentKey["_id"], want)
		}
		seen[ev.NS.Coll]++
	}
}

// TestAwaitBlocksUntilEvent: a getMore with maxAwaitTime returns as soon as
// an event is written, and after the timeout when none is.
func TestAwaitBlocksUntilEvent(t *testing.T) {
	s := startServer(t, Options{NoopInterval: -1})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll, options.ChangeStream().SetMaxAwaitTime(2*time.Second))
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}})
	}()
	start := time.Now()
	if got := next(t, cs).label(); got != "insert d.c 1" {
		t.Fatal(got)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("event took %v to arrive", d)
	}
	short := watchColl(t, coll, options.ChangeStream().SetMaxAwaitTime(100*time.Millisecond))
	if short.TryNext(ctx(t)) { // consumes the empty first batch
		t.Fatal("unexpected event")
	}
	start = time.Now()
	if short.TryNext(ctx(t)) { // one getMore
		t.Fatal("unexpected event")
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > 1500*time.Millisecond {
		t.Fatalf("empty getMore returned after %v, want about 100ms", d)
	}
}

// TestResumeAcrossDroppedConnections: the driver resumes transparently after
// DropConnections and after an outage, with no gap and no repeat.
func TestResumeAcrossDroppedConnections(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll, options.ChangeStream().SetBatchSize(2))
	insertIDs(t, coll, 0, 1, 2, 3, 4)
	for i := 0; i < 3; i++ {
		if got := next(t, cs).DocumentKey["_id"]; got != int32(i) {
			t.Fatalf("got %v want %d", got, i)
		}
	}
	s.DropConnections()
	insertIDs(t, coll, 5)
	s.SetUnavailable(true)
	time.Sleep(50 * time.Millisecond)
	s.SetUnavailable(false)
	for i := 3; i < 6; i++ {
		if got := next(t, cs).DocumentKey["_id"]; got != int32(i) {
			t.Fatalf("after drop: got %v want %d", got, i)
		}
	}
}

// TestDocumentDBGating: in DocumentDB mode a stream needs modifyChangeStreams
// for its collection, its database or the cluster.
func TestDocumentDBGating(t *testing.T) {
	s := startServer(t, Options{DocumentDB: true})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	_, err := coll.Watch(ctx(t), mongo.Pipeline{})
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(codeCappedPositionLost) {
		t.Fatalf("want refusal, got %v", err)
	}
	enableStreams(t, cl, "d", "c")
	watchColl(t, coll)
	if _, err := cl.Database("d").Collection("other").Watch(ctx(t), mongo.Pipeline{}); err == nil {
		t.Fatal("other collection was not gated")
	}
	if _, err := cl.Database("d").Watch(ctx(t), mongo.Pipeline{}); err == nil {
		t.Fatal("database stream was not gated")
	}
	enableStreams(t, cl, "d", "")
	watchColl(t, cl.Database("d").Collection("other"))
	if _, err := cl.Watch(ctx(t), mongo.Pipeline{}); err == nil {
		t.Fatal("cluster stream was not gated")
	}
	enableStreams(t, cl, "", "")
	cs, err := cl.Watch(ctx(t), mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	_ = cs.Close(ctx(t))
}

// TestStreamPipelineStages: $match and $project after $changeStream apply
// to events; filtered events still advance the resume token.
func TestStreamPipelineStages(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	pipeline := mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"delete"}}}}}}},
		{{Key: "$project", Value: bson.D{{Key: "operationType", Value: 1}, {Key: "documentKey", Value: 1}}}},
	}
	cs, err := coll.Watch(ctx(t), pipeline)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx(t))
	insertIDs(t, coll, 1, 2)
	if _, err := coll.DeleteOne(ctx(t), bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	ev := next(t, cs)
	if ev.label() != "delete . 2" || ev.ID == nil {
		t.Fatalf("got %q (%v)", ev.label(), cs.Current)
	}
}

// TestStartAtOperationTime: a stream started at an event's cluster time
// begins with that event.
func TestStartAtOperationTime(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll)
	insertIDs(t, coll, 1, 2, 3)
	next(t, cs)
	second := next(t, cs).ClusterTime
	rs := watchColl(t, coll, options.ChangeStream().SetStartAtOperationTime(&second))
	for _, want := range []string{"insert d.c 2", "insert d.c 3"} {
		if got := next(t, rs).label(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestHello checks the handshake fields drivers rely on.
func TestHello(t *testing.T) {
	s := startServer(t, Options{WireVersion: 13, ReplicaSetName: "dr", Username: "u", Password: "p"})
	cl := connect(t, s)
	var hello bson.M
	err := cl.Database("admin").RunCommand(ctx(t), bson.D{{Key: "hello", Value: 1}, {Key: "saslSupportedMechs", Value: "admin.u"}}).Decode(&hello)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"isWritablePrimary": true, "secondary": false, "setName": "dr", "primary": s.Addr(), "me": s.Addr(),
		"maxWireVersion": int32(13), "minWireVersion": int32(0), "logicalSessionTimeoutMinutes": int32(30),
		"maxBsonObjectSize": int32(16777216), "maxMessageSizeBytes": int32(48000000), "maxWriteBatchSize": int32(100000),
	}
	for k, v := range want {
		if hello[k] != v {
			t.Errorf("%s = %v, want %v", k, hello[k], v)
		}
	}
	if mechs, _ := hello["saslSupportedMechs"].(bson.A); len(mechs) != 1 || mechs[0] != "SCRAM-SHA-256" {
		t.Errorf("saslSupportedMechs = %v", hello["saslSupportedMechs"])
	}
	if hosts, _ := hello["hosts"].(bson.A); len(hosts) != 1 || hosts[0] != s.Addr() {
		t.Errorf("hosts = %v", hello["hosts"])
	}
	if _, ok := hello["topologyVersion"].(bson.M); !ok {
		t.Errorf("topologyVersion missing")
	}
}
