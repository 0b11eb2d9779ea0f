package conformance

// Reads: find with filter / sort / skip / limit / projection, cursors across batches
// (getMore) and their early release (killCursors), counts and aggregation.

import (
	"errors"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// seedNumbers inserts {_id: i, n: i, g: i % 3, s: "s<i>"} for i in [0, count).
func seedNumbers(t *testing.T, coll *mongo.Collection, count int) {
	t.Helper()
	docs := make([]any, count)
	for i := range docs {
		docs[i] = doc("_id", int32(i), "n", int32(i), "g", int32(i%3), "s", "s"+string(rune('a'+i%26)))
	}
	_, err := coll.InsertMany(testContext(t), docs)
	requireNoError(t, err, "seed")
}

// TestFind: query operators, sort, skip, limit and projection
// (manual: reference/command/find; reference/operator/query; tutorial/project-fields).
func TestFind(t *testing.T) {
	client := newClient(t)
	coll := testDB(t, client).Collection("c")
	seedNumbers(t, coll, 10)

	cases := []struct {
		name    string
		filter  bson.D
		opts    *options.FindOptions
		wantIDs []int32
	}{
		{"empty filter, sort by n", bson.D{}, options.Find().SetSort(doc("n", 1)), []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"$gte", doc("n", doc("$gte", 7)), options.Find().SetSort(doc("n", 1)), []int32{7, 8, 9}},
		{"$in", doc("n", doc("$in", bson.A{2, 4, 11})), options.Find().SetSort(doc("n", 1)), []int32{2, 4}},
		{"$or", doc("$or", bson.A{doc("n", 1), doc("n", doc("$gt", 8))}), options.Find().SetSort(doc("n", 1)), []int32{1, 9}},
		{"$ne and $lt", doc("n", doc("$ne", 1, "$lt", 4)), options.Find().SetSort(doc("n", 1)), []int32{0, 2, 3}},
		{"equality on another field", doc("g", 0), options.Find().SetSort(doc("n", 1)), []int32{0, 3, 6, 9}},
		{"$exists false", doc("missing", doc("$exists", false), "n", doc("$lt", 2)), options.Find().SetSort(doc("n", 1)), []int32{0, 1}},
		{"sort descending with limit", bson.D{}, options.Find().SetSort(doc("n", -1)).SetLimit(3), []int32{9, 8, 7}},
		{"skip and limit", bson.D{}, options.Find().SetSort(doc("n", 1)).SetSkip(2).SetLimit(3), []int32{2, 3, 4}},
		{"skip past the end", bson.D{}, options.Find().SetSort(doc("n", 1)).SetSkip(20), nil},
		{"compound sort", doc("n", doc("$lt", 6)), options.Find().SetSort(doc("g", 1, "n", -1)), []int32{3, 0, 4, 1, 5, 2}},
		{"no match", doc("n", 100), nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			opts := tc.opts
			if opts == nil {
				opts = options.Find()
			}
			cur, err := coll.Find(ctx, tc.filter, opts)
			requireNoError(t, err, "find")
			var docs []bson.Raw
			requireNoError(t, cur.All(ctx, &docs), "read cursor")
			requireStrings(t, ids(docs), intIDs(tc.wantIDs...), "_ids in order")
		})
	}

	projections := []struct {
		name       string
		projection bson.D
		want       bson.D
	}{
		{"inclusion keeps _id", doc("n", 1), doc("_id", int32(4), "n", int32(4))},
		{"inclusion without _id", doc("_id", 0, "s", 1), doc("s", "se")},
		{"exclusion", doc("s", 0, "g", 0), doc("_id", int32(4), "n", int32(4))},
	}
	for _, tc := range projections {
		t.Run("projection "+tc.name, func(t *testing.T) {
			ctx := testContext(t)
			var got bson.Raw
			err := coll.FindOne(ctx, doc("_id", 4), options.FindOne().SetProjection(tc.projection)).Decode(&got)
			requireNoError(t, err, "findOne with projection")
			requireDoc(t, got, tc.want, false, "projected document")
		})
	}

	t.Run("findOne without a match", func(t *testing.T) {
		err := coll.FindOne(testContext(t), doc("n", 100)).Err()
		if !errors.Is(err, mongo.ErrNoDocuments) {
			t.Errorf("err = %v, want ErrNoDocuments", err)
		}
	})
}

// TestFindAcrossBatches: with batchSize the server returns at most that many documents per
// batch and the driver fetches the rest with getMore, until the cursor id is 0
// (manual: reference/command/find "batchSize", reference/command/getMore).
func TestFindAcrossBatches(t *testing.T) {
	ctx := testContext(t)
	var log commandLog
	client := newClient(t, options.Client().SetMonitor(log.monitor()))
	coll := testDB(t, client).Collection("c")
	seedNumbers(t, coll, 25)
	log.Reset()

	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetSort(doc("n", 1)).SetBatchSize(10))
	requireNoError(t, err, "find")
	var got []int32
	for cur.Next(ctx) {
		got = append(got, cur.Current.Lookup("n").Int32())
	}
	requireNoError(t, cur.Err(), "iterate")
	if len(got) != 25 {
		t.Fatalf("read %d documents, want 25", len(got))
	}
	for i, n := range got {
		if n != int32(i) {
			t.Fatalf("document %d has n = %d: not in sort order across batches", i, n)
		}
	}
	if cur.ID() != 0 {
		t.Errorf("exhausted cursor id = %d, want 0", cur.ID())
	}

	finds := log.Succeeded("find")
	if len(finds) != 1 {
		t.Fatalf("saw %d find replies, want 1", len(finds))
	}
	first, _ := finds[0].Lookup("cursor", "firstBatch").Array().Values()
	if len(first) > 10 {
		t.Errorf("firstBatch holds %d documents, want at most batchSize 10", len(first))
	}
	getMores := log.Succeeded("getMore")
	if len(getMores) < 2 {
		t.Errorf("saw %d getMore replies, want at least 2 for 25 documents in batches of 10", len(getMores))
	}
	total := len(first)
	for _, r := range getMores {
		next, _ := r.Lookup("cursor", "nextBatch").Array().Values()
		if len(next) > 10 {
			t.Errorf("a nextBatch holds %d documents, want at most 10", len(next))
		}
		total += len(next)
	}
	if total != 25 {
		t.Errorf("batches held %d documents in all, want 25", total)
	}
}

// TestCursorClose: closing a cursor that is not exhausted sends killCursors, the server
// reports the id in cursorsKilled, and a later getMore on that id fails with
// CursorNotFound (43) (manual: reference/command/killCursors; reference/error-codes).
func TestCursorClose(t *testing.T) {
	ctx := testContext(t)
	var log commandLog
	client := newClient(t, options.Client().SetMonitor(log.monitor()))
	db := testDB(t, client)
	coll := db.Collection("c")
	seedNumbers(t, coll, 10)

	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(2))
	requireNoError(t, err, "find")
	if !cur.Next(ctx) {
		t.Fatalf("no first document: %v", cur.Err())
	}
	id := cur.ID()
	if id == 0 {
		t.Fatalf("cursor id is 0 after the first of 10 documents with batchSize 2")
	}
	requireNoError(t, cur.Close(ctx), "close")

	replies := log.Succeeded("killCursors")
	if len(replies) != 1 {
		t.Fatalf("saw %d successful killCursors, want 1", len(replies))
	}
	killed, _ := replies[0].Lookup("cursorsKilled").Array().Values()
	if len(killed) != 1 || killed[0].Int64() != id {
		t.Errorf("cursorsKilled = %s, want [%d]", replies[0].Lookup("cursorsKilled"), id)
	}

	err = db.RunCommand(ctx, doc("getMore", id, "collection", "c")).Err()
	requireCode(t, err, "getMore on a killed cursor", 43)
}

// TestCount: countDocuments counts matches (honouring skip and limit),
// estimatedDocumentCount counts the collection, and both are 0 for a missing collection
// (CRUD spec, "Count API Details"; manual: reference/command/count).
func TestCount(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	coll := db.Collection("c")
	seedNumbers(t, coll, 10)

	cases := []struct {
		name   string
		filter bson.D
		opts   *options.CountOptions
		want   int64
	}{
		{"all", bson.D{}, nil, 10},
		{"filtered", doc("g", 1), nil, 3},
		{"with limit", bson.D{}, options.Count().SetLimit(4), 4},
		{"with skip", doc("g", 0), options.Count().SetSkip(1), 3},
		{"no match", doc("n", 99), nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if opts == nil {
				opts = options.Count()
			}
			n, err := coll.CountDocuments(ctx, tc.filter, opts)
			requireNoError(t, err, "countDocuments")
			if n != tc.want {
				t.Errorf("countDocuments = %d, want %d", n, tc.want)
			}
		})
	}

	n, err := coll.EstimatedDocumentCount(ctx)
	requireNoError(t, err, "estimatedDocumentCount")
	if n != 10 {
		t.Errorf("estimatedDocumentCount = %d, want 10", n)
	}

	missing := db.Collection("missing")
	if n, err := missing.CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
		t.Errorf("countDocuments on a missing collection = %d, %v; want 0, nil", n, err)
	}
	if n, err := missing.EstimatedDocumentCount(ctx); err != nil || n != 0 {
		t.Errorf("estimatedDocumentCount on a missing collection = %d, %v; want 0, nil", n, err)
	}
}

// TestAggregate: the basic pipeline stages (manual: reference/operator/aggregation/*).
// $sum of int32 values is an int32 (manual: $sum, "Result Data Type"); $count on no input
// returns no document at all.
func TestAggregate(t *testing.T) {
	client := newClient(t)
	coll := testDB(t, client).Collection("sales")
	_, err := coll.InsertMany(testContext(t), []any{
		doc("_id", 1, "item", "apple", "qty", int32(5), "price", 1.5),
		doc("_id", 2, "item", "pear", "qty", int32(2), "price", 2.0),
		doc("_id", 3, "item", "apple", "qty", int32(7), "price", 1.5),
		doc("_id", 4, "item", "fig", "qty", int32(1), "price", 4.0),
		doc("_id", 5, "item", "pear", "qty", int32(3), "price", 2.0),
	})
	requireNoError(t, err, "seed")

	cases := []struct {
		name     string
		pipeline bson.A
		want     []bson.D
	}{
		{
			name:     "$match then $sort",
			pipeline: bson.A{doc("$match", doc("item", "apple")), doc("$sort", doc("qty", -1))},
			want: []bson.D{
				doc("_id", 3, "item", "apple", "qty", int32(7), "price", 1.5),
				doc("_id", 1, "item", "apple", "qty", int32(5), "price", 1.5),
			},
		},
		{
			name:     "$sort, $skip, $limit and $project",
			pipeline: bson.A{doc("$sort", doc("_id", 1)), doc("$skip", 1), doc("$limit", 2), doc("$project", doc("item", 1, "_id", 0))},
			want:     []bson.D{doc("item", "pear"), doc("item", "apple")},
		},
		{
			name: "$group by a field with $sum",
			pipeline: bson.A{
				doc("$group", doc("_id", "$item", "total", doc("$sum", "$qty"), "orders", doc("$sum", 1))),
				doc("$sort", doc("_id", 1)),
			},
			want: []bson.D{
				doc("_id", "apple", "total", int32(12), "orders", int32(2)),
				doc("_id", "fig", "total", int32(1), "orders", int32(1)),
				doc("_id", "pear", "total", int32(5), "orders", int32(2)),
			},
		},
		{
			name:     "$group with a null _id totals everything",
			pipeline: bson.A{doc("$group", doc("_id", nil, "qty", doc("$sum", "$qty")))},
			want:     []bson.D{doc("_id", nil, "qty", int32(18))},
		},
		{
			name:     "$count",
			pipeline: bson.A{doc("$match", doc("qty", doc("$gte", 3))), doc("$count", "n")},
			want:     []bson.D{doc("n", int32(3))},
		},
		{
			name:     "$count of nothing returns no document",
			pipeline: bson.A{doc("$match", doc("qty", 100)), doc("$count", "n")},
			want:     nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			cur, err := coll.Aggregate(ctx, tc.pipeline)
			requireNoError(t, err, "aggregate")
			var got []bson.Raw
			requireNoError(t, cur.All(ctx, &got), "read cursor")
			if len(got) != len(tc.want) {
				t.Fatalf("got %d documents %v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				requireDoc(t, got[i], tc.want[i], false, "result "+string(rune('0'+i)))
			}
		})
	}

	t.Run("across batches", func(t *testing.T) {
		ctx := testContext(t)
		cur, err := coll.Aggregate(ctx, bson.A{doc("$sort", doc("_id", 1))}, options.Aggregate().SetBatchSize(2))
		requireNoError(t, err, "aggregate")
		var got []bson.Raw
		requireNoError(t, cur.All(ctx, &got), "read cursor")
		requireStrings(t, ids(got), intIDs(1, 2, 3, 4, 5), "all documents across batches of 2")
	})
}
