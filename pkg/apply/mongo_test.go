package apply

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// startMongo starts an embedded server for the test and returns a client of it.
func startMongo(tb testing.TB) *mongo.Client { return mongotest.Client(tb) }

func findRaw(t testing.TB, c *mongo.Client, ns changeevent.Namespace, id any) bson.Raw {
	t.Helper()
	res := c.Database(ns.DB).Collection(ns.Coll).FindOne(context.Background(), bson.D{{Key: "_id", Value: id}})
	if res.Err() == mongo.ErrNoDocuments {
		return nil
	}
	doc, err := res.Raw()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func extJSON(t testing.TB, doc bson.Raw) string {
	if doc == nil {
		return "null"
	}
	js, err := bson.MarshalExtJSON(doc, false, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

// TestMongoWriterUpdateRule applies each kind of change through the handler to a real-protocol
// server and checks the document that results, twice (a redelivery converges).
func TestMongoWriterUpdateRule(t *testing.T) {
	client := startMongo(t)
	start := bson.D{{Key: "a", Value: bson.D{{Key: "b", Value: 1}}}, {Key: "c", Value: "x"}, {Key: "arr", Value: bson.A{1, 2, 3}}}
	tests := []struct {
		name        string
		ev          changeevent.Event
		want        string
		wantMissing int
	}{
		{"insert over an existing document replaces it", evt(t, changeevent.Insert, fooNS, 1, bson.D{{Key: "n", Value: 1}}),
			`{"_id":1,"n":1}`, 0},
		{"replace", evt(t, changeevent.Replace, fooNS, 1, bson.D{{Key: "r", Value: true}}),
			`{"_id":1,"r":true}`, 0},
		{"update sets, unsets and truncates", update(t, fooNS, 1, bson.D{{Key: "a.b", Value: 2}, {Key: "d", Value: "new"}}, []string{"c"},
			[]changeevent.TruncatedArray{{Field: "arr", NewSize: 1}}),
			`{"_id":1,"a":{"b":2},"arr":[1],"d":"new"}`, 0},
		{"truncation and a set inside the same array", update(t, fooNS, 1, bson.D{{Key: "arr.1", Value: 9}}, nil,
			[]changeevent.TruncatedArray{{Field: "arr", NewSize: 2}}),
			`{"_id":1,"a":{"b":1},"c":"x","arr":[1,9]}`, 0},
		{"update of a missing document inserts nothing and is counted", update(t, fooNS, 2, bson.D{{Key: "x", Value: 1}}, nil, nil),
			`null`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			coll := client.Database("bar").Collection("foo")
			if err := coll.Drop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := client.Database(DefaultStateDB).Drop(context.Background()); err != nil {
				t.Fatal(err) // a fresh frontier: each case's batch is new to DR
			}
			if _, err := coll.InsertOne(context.Background(), append(bson.D{{Key: "_id", Value: 1}}, start...)); err != nil {
				t.Fatal(err)
			}
			h, err := New(NewMongoWriter(client), newFakeArchive(), Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // a redelivery converges to the same document
				sum, err := h.Handle(context.Background(), batchOf(t, tt.ev))
				if err != nil {
					t.Fatal(err)
				}
				if sum.MissingDocumentUpdates != tt.wantMissing {
					t.Errorf("missing = %d, want %d", sum.MissingDocumentUpdates, tt.wantMissing)
				}
				id, _ := tt.ev.ID()
				// A server that stored {$each: [], $slice: n} as a value instead of applying it
				// (as the embedded server once did) fails here: the check is on the whole document.
				if got := extJSON(t, findRaw(t, client, fooNS, id)); got != tt.want {
					t.Errorf("document\n got %s\nwant %s", got, tt.want)
				}
			}
		})
	}
}

func TestMongoWriterCommandsAndReads(t *testing.T) {
	ctx := context.Background()
	client := startMongo(t)
	w := NewMongoWriter(client)
	ns := changeevent.Namespace{DB: "bar_dr", Coll: "foo"}
	oid := primitive.NewObjectID()
	writes := []Write{
		{Kind: ReplaceOne, ID: idOf(t, oid), Doc: raw(t, bson.D{{Key: "_id", Value: oid}})},
		{Kind: ReplaceOne, ID: idOf(t, int64(5)), Doc: raw(t, bson.D{{Key: "_id", Value: int64(5)}})},
		{Kind: ReplaceOne, ID: idOf(t, "s"), Doc: raw(t, bson.D{{Key: "_id", Value: "s"}})},
		{Kind: DeleteOne, ID: idOf(t, "s")},
		{Kind: InsertOne, ID: idOf(t, "t"), Doc: raw(t, bson.D{{Key: "_id", Value: "t"}})},
	}
	res, err := w.BulkWrite(ctx, ns, writes)
	if err != nil || res.Upserted != 3 || res.Deleted != 1 || res.Inserted != 1 {
		t.Fatalf("bulk: %+v, %v", res, err)
	}
	_, err = w.BulkWrite(ctx, ns, []Write{{Kind: DeleteOne, ID: idOf(t, "x")}, {Kind: InsertOne, ID: idOf(t, "t"), Doc: raw(t, bson.D{{Key: "_id", Value: "t"}})}})
	var we *WriteError
	if !errors.As(err, &we) || we.Index != 1 || we.Code != 11000 {
		t.Errorf("a refused write: %v, want a *WriteError at index 1 with code 11000", err)
	}
	found, err := w.FindByIDs(ctx, ns, []bson.RawValue{idOf(t, oid), idOf(t, int32(5)), idOf(t, "s"), idOf(t, "absent")})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[KeyOf(idOf(t, oid))] == nil || found[KeyOf(idOf(t, int64(5)))] == nil {
		t.Errorf("found %v", found)
	}
	var scanned []IDKey
	if err := w.ScanIDs(ctx, ns, func(ids []bson.RawValue) error {
		for _, id := range ids {
			scanned = append(scanned, KeyOf(id))
		}
		return nil
	}); err != nil || len(scanned) != 3 {
		t.Errorf("scanned %v, %v", scanned, err)
	}
	if colls, err := w.Collections(ctx, "bar_dr"); err != nil || len(colls) != 1 || colls[0] != "foo" {
		t.Errorf("collections %v, %v", colls, err)
	}
	to := changeevent.Namespace{DB: "bar_dr", Coll: "foo2"}
	if err := w.Rename(ctx, ns, to); err != nil {
		t.Fatal(err)
	}
	if err := w.Rename(ctx, ns, to); err != nil {
		t.Errorf("second rename (redelivery): %v", err)
	}
	if findRaw(t, client, to, int64(5)) == nil {
		t.Error("rename lost the documents")
	}
	if _, err := w.BulkWrite(ctx, ns, writes[:1]); err != nil {
		t.Fatal(err)
	}
	if err := w.Rename(ctx, ns, to); !errors.Is(err, ErrNamespaceExists) {
		t.Errorf("rename onto an existing collection: %v, want ErrNamespaceExists", err)
	}
	if err := w.Drop(ctx, to); err != nil {
		t.Fatal(err)
	}
	if err := w.Drop(ctx, to); err != nil {
		t.Errorf("second drop: %v", err)
	}
}

// TestMongoWriterState exercises the ledger and the barrier markers on the embedded server.
func TestMongoWriterState(t *testing.T) {
	ctx := context.Background()
	client := startMongo(t)
	w := NewMongoWriter(client).WithStateDB("drstate")
	if w.StateDB() != "drstate" {
		t.Fatal(w.StateDB())
	}
	for range 2 {
		if err := w.EnsureState(ctx); err != nil {
			t.Fatalf("EnsureState (idempotent): %v", err)
		}
	}
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	entry := func(id, object string, seq int) LedgerEntry {
		return LedgerEntry{EventID: id, DB: "bar", Coll: "foo", Op: "delete", DocID: idOf(t, int64(7)), ClusterTime: primitive.Timestamp{T: 5, I: 1},
			Object: object, Seq: seq, State: StatePending, Line: []byte(`{"eventId":"` + id + `"}`), Topic: "t", Partition: 2, Offset: int64(seq), At: at}
	}
	long := entry("long", "k3", 0)
	long.Line = []byte(`{"eventId":"long","before":"` + strings.Repeat("ab", 5<<20) + `"}`) // over 8 MB: stored gzip'd
	huge := entry("huge", "k4", 0)
	huge.Line = make([]byte, 20<<20)
	_, _ = rand.Read(huge.Line) // incompressible: more than an entry holds
	if _, err := w.Claim(ctx, []LedgerEntry{huge}); err == nil || !strings.Contains(err.Error(), "more than a ledger entry holds") {
		t.Errorf("an oversized line: %v", err)
	}
	if taken, err := w.Claim(ctx, []LedgerEntry{long}); err != nil || len(taken) != 0 {
		t.Fatalf("claim a long line: %v, %v", taken, err)
	}
	if p, err := w.Pending(ctx, "t", []int64{2}); err != nil || len(p) != 1 || !bytes.Equal(p[0].Line, long.Line) {
		t.Fatalf("the long line read back: %d entries, %v", len(p), err)
	}
	if err := w.Written(ctx, []string{"long"}); err != nil {
		t.Fatal(err)
	}
	taken, err := w.Claim(ctx, []LedgerEntry{entry("a", "k1", 0), entry("b", "k1", 1)})
	if err != nil || len(taken) != 0 {
		t.Fatalf("claim: %v, %v", taken, err)
	}
	taken, err = w.Claim(ctx, []LedgerEntry{entry("b", "k2", 0), entry("c", "k2", 1), entry("a", "k2", 2)})
	if err != nil || !taken["a"] || !taken["b"] || taken["c"] {
		t.Fatalf("second claim: taken %v, %v; want a and b taken, c claimed", taken, err)
	}
	known, err := w.Archived(ctx, []string{"a", "c", "z"})
	if err != nil || !known["a"] || !known["c"] || known["z"] {
		t.Errorf("archived %v, %v", known, err)
	}
	pending, err := w.Pending(ctx, "t", []int64{1, 2})
	if err != nil || len(pending) != 3 {
		t.Fatalf("pending %v, %v", pending, err)
	}
	for _, p := range pending {
		if p.EventID == "b" && (p.Object != "k1" || p.Seq != 1 || string(p.Line) != `{"eventId":"b"}` || p.DocID.Int64() != 7 || !p.At.Equal(at)) {
			t.Errorf("entry b read back as %+v", p)
		}
	}
	if err := w.Written(ctx, []string{"a", "b"}); err != nil { // the entries of object k1
		t.Fatal(err)
	}
	if pending, _ = w.Pending(ctx, "t", []int64{2}); len(pending) != 1 || pending[0].EventID != "c" {
		t.Errorf("after k1 written, pending %v", pending)
	}
	raw, err := client.Database("drstate").Collection(LedgerCollection).FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if raw.Lookup("state").StringValue() != StateWritten || raw.Lookup("line").Type != 0 || raw.Lookup("docId").Int64() != 7 {
		t.Errorf("written entry %s", raw)
	}
	// A corrupt pending entry is an error, never skipped.
	if _, err := client.Database("drstate").Collection(LedgerCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: "bad"},
		{Key: "state", Value: StatePending}, {Key: "topic", Value: "t"}, {Key: "partition", Value: int64(2)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Pending(ctx, "t", []int64{2}); !errors.Is(err, ErrCorruptState) {
		t.Errorf("corrupt entry: %v, want ErrCorruptState", err)
	}

	if s, err := w.Barrier(ctx, "e/0"); err != nil || s != "" {
		t.Errorf("absent marker: %q, %v", s, err)
	}
	for _, state := range []string{BarrierTargetMoved, BarrierDone} {
		if err := w.SetBarrier(ctx, BarrierMarker{ID: "e/0", Op: "rename", NS: fooNS, Partitions: 3, State: state, At: at}); err != nil {
			t.Fatal(err)
		}
		if s, err := w.Barrier(ctx, "e/0"); err != nil || s != state {
			t.Errorf("marker %q, %v; want %q", s, err, state)
		}
	}
	if _, err := client.Database("drstate").Collection(BarrierCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: "e/1"}, {Key: "state", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Barrier(ctx, "e/1"); !errors.Is(err, ErrCorruptState) {
		t.Errorf("corrupt marker: %v, want ErrCorruptState", err)
	}
}

// TestBSONFidelity writes documents of every BSON type through the handler and reads back the
// very same bytes, doubles included bit for bit: NaN with a payload, negative zero, infinities.
func TestBSONFidelity(t *testing.T) {
	client := startMongo(t)
	dec, _ := primitive.ParseDecimal128("-1234.5678E-3")
	negZero, nan := math.Copysign(0, -1), math.Float64frombits(0x7ff8_0000_0000_1234)
	body := bson.D{
		{Key: "i32", Value: int32(-7)}, {Key: "i64", Value: int64(1) << 40}, {Key: "f64", Value: 7.0},
		{Key: "nan", Value: nan}, {Key: "negZero", Value: negZero}, {Key: "inf", Value: math.Inf(-1)},
		{Key: "dec", Value: dec},
		{Key: "date", Value: primitive.NewDateTimeFromTime(time.Date(1969, 7, 20, 20, 17, 0, 123e6, time.UTC))},
		{Key: "ts", Value: primitive.Timestamp{T: 1658233222, I: 3}},
		{Key: "bin0", Value: primitive.Binary{Subtype: 0, Data: []byte{0, 1, 255}}},
		{Key: "uuid", Value: primitive.Binary{Subtype: 4, Data: bytes.Repeat([]byte{7}, 16)}},
		{Key: "md5", Value: primitive.Binary{Subtype: 5, Data: bytes.Repeat([]byte{9}, 16)}},
		{Key: "user", Value: primitive.Binary{Subtype: 0x80, Data: []byte("x")}},
		{Key: "re", Value: primitive.Regex{Pattern: "^a.*b$", Options: "imsx"}},
		{Key: "oid", Value: primitive.NewObjectID()},
		{Key: "nested", Value: bson.D{{Key: "z", Value: bson.A{int32(1), "x", bson.D{{Key: "null", Value: nil}}, bson.A{}, nan}}, {Key: "a", Value: true}}},
		{Key: "unicode", Value: "数据库 ✓ \u00e9\u0301 😀"}, {Key: "empty", Value: ""}, {Key: "emptyDoc", Value: bson.D{}},
		{Key: "minKey", Value: primitive.MinKey{}}, {Key: "maxKey", Value: primitive.MaxKey{}},
		{Key: "js", Value: primitive.JavaScript("function(){}")},
	}
	ids := []any{
		primitive.NewObjectID(), "string-id", "", int32(42), int64(1) << 50, 2.5,
		bson.D{{Key: "tenant", Value: "t1"}, {Key: "n", Value: int32(1)}},
		primitive.Binary{Subtype: 4, Data: bytes.Repeat([]byte{1}, 16)},
	}
	var evs []changeevent.Event
	for _, id := range ids {
		evs = append(evs, evt(t, changeevent.Insert, fooNS, id, body))
	}
	// The special doubles really are in the bytes sent (a Go -0.0 literal is +0: check the bits).
	if b := evs[0].FullDocument.Lookup("negZero").Value; !bytes.Equal(b, []byte{0, 0, 0, 0, 0, 0, 0, 0x80}) {
		t.Fatalf("negative zero encoded as %x", b)
	}
	if b := evs[0].FullDocument.Lookup("nan").Value; !bytes.Equal(b, []byte{0x34, 0x12, 0, 0, 0, 0, 0xf8, 0x7f}) {
		t.Fatalf("NaN encoded as %x", b)
	}
	h, err := New(NewMongoWriter(client), newFakeArchive(), Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(context.Background(), batchOf(t, evs...)); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		id, _ := e.ID()
		got := findRaw(t, client, fooNS, id)
		if !bytes.Equal(got, e.FullDocument) {
			t.Errorf("_id %s: bytes differ\n got %x\nwant %x", id, []byte(got), []byte(e.FullDocument))
		}
	}
}

// TestMongoWriterHeld checks Revived and MoveHeld on the embedded server: they select the delete
// entries held in one namespace, of the given _ids (all of them for MoveHeld without ids), and
// nothing else.
func TestMongoWriterHeld(t *testing.T) {
	ctx := context.Background()
	w := NewMongoWriter(startMongo(t)).WithStateDB("heldstate")
	if err := w.EnsureState(ctx); err != nil {
		t.Fatal(err)
	}
	otherNS := changeevent.Namespace{DB: "bar", Coll: "other"}
	entry := func(id string, op changeevent.OperationType, held changeevent.Namespace, docID int64) LedgerEntry {
		return LedgerEntry{EventID: id, DB: held.DB, Coll: held.Coll, Op: string(op), DocID: idOf(t, docID), Held: held,
			ClusterTime: primitive.Timestamp{T: 5, I: 1}, Object: "k", State: StateWritten, Topic: "t", At: time.Now()}
	}
	if _, err := w.Claim(ctx, []LedgerEntry{
		entry("d7", changeevent.Delete, fooNS, 7), entry("d8", changeevent.Delete, fooNS, 8),
		entry("d9", changeevent.Delete, fooNS, 9), entry("o7", changeevent.Delete, otherNS, 7),
		entry("h7", changeevent.Update, fooNS, 7), // a history line of the same document
	}); err != nil {
		t.Fatal(err)
	}
	read := func() map[string]LedgerEntry {
		out := map[string]LedgerEntry{}
		if err := w.Ledger(ctx, func(e LedgerEntry) error { out[e.EventID] = e; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := w.Revived(ctx, fooNS, []bson.RawValue{idOf(t, int64(7)), idOf(t, int64(9))}); err != nil {
		t.Fatal(err)
	}
	got := read()
	for id, want := range map[string]bool{"d7": true, "d8": false, "d9": true, "o7": false, "h7": false} {
		if got[id].Revived != want {
			t.Errorf("after Revived(%s, [7 9]): %s revived %v, want %v", fooNS, id, got[id].Revived, want)
		}
	}
	movedNS := changeevent.Namespace{DB: "bar", Coll: "moved"}
	if err := w.MoveHeld(ctx, fooNS, movedNS, []bson.RawValue{idOf(t, int64(8))}); err != nil {
		t.Fatal(err)
	}
	if got = read(); got["d8"].Held != movedNS || got["d7"].Held != fooNS || got["o7"].Held != otherNS {
		t.Errorf("after MoveHeld of 8: d8 held in %s, d7 in %s, o7 in %s", got["d8"].Held, got["d7"].Held, got["o7"].Held)
	}
	if err := w.MoveHeld(ctx, fooNS, movedNS, nil); err != nil {
		t.Fatal(err)
	}
	if got = read(); got["d7"].Held != movedNS || got["d9"].Held != movedNS || got["o7"].Held != otherNS {
		t.Errorf("after MoveHeld of all: d7 held in %s, d9 in %s, o7 in %s", got["d7"].Held, got["d9"].Held, got["o7"].Held)
	}
}
