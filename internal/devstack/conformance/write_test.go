package conformance

// Writes: insert (ordered / unordered), update operators, replacement, upsert, multi-update,
// delete, findAndModify, bulk writes and the 16 MiB document limit.

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/mongo/driver"
)

func doc(kv ...any) bson.D {
	d := bson.D{}
	for i := 0; i < len(kv); i += 2 {
		d = append(d, bson.E{Key: kv[i].(string), Value: kv[i+1]})
	}
	return d
}

// TestInsertMany: an ordered insert stops at the first duplicate key and reports it with the
// index of the failing document and code 11000; an unordered insert reports every failure
// and inserts the rest; a successful InsertMany returns the _id of every document, generating
// ObjectIds for documents without one (manual: reference/command/insert, "Behavior";
// CRUD spec, InsertManyResult).
func TestInsertMany(t *testing.T) {
	cases := []struct {
		name          string
		ordered       bool
		insert        []int32
		wantErrIndex  []int
		wantStoredIDs []int32
	}{
		{"ordered stops at the first duplicate", true, []int32{1, 2, 3}, []int{1}, []int32{1, 2}},
		{"unordered continues past duplicates", false, []int32{1, 2, 3, 2, 4}, []int{1, 3}, []int32{1, 2, 3, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			coll := testDB(t, newClient(t)).Collection("c")
			_, err := coll.InsertOne(ctx, doc("_id", int32(2), "pre", true))
			requireNoError(t, err, "seed")

			var docs []any
			for _, id := range tc.insert {
				docs = append(docs, doc("_id", id))
			}
			_, err = coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(tc.ordered))
			var bwe mongo.BulkWriteException
			if !errors.As(err, &bwe) {
				t.Fatalf("InsertMany error = %v, want a BulkWriteException", err)
			}
			var gotIdx []int
			for _, we := range bwe.WriteErrors {
				gotIdx = append(gotIdx, we.Index)
				if we.Code != 11000 {
					t.Errorf("write error at index %d has code %d, want 11000", we.Index, we.Code)
				}
			}
			requireStrings(t, intsToStrings(gotIdx), intsToStrings(tc.wantErrIndex), "indexes of the write errors")
			requireStrings(t, ids(findAll(t, ctx, coll, bson.D{})), intIDs(tc.wantStoredIDs...), "stored _ids")
		})
	}

	t.Run("result lists every _id", func(t *testing.T) {
		ctx := testContext(t)
		coll := testDB(t, newClient(t)).Collection("c")
		res, err := coll.InsertMany(ctx, []any{doc("_id", "given", "n", 1), doc("n", 2), doc("n", 3)})
		requireNoError(t, err, "InsertMany")
		if len(res.InsertedIDs) != 3 || res.InsertedIDs[0] != "given" {
			t.Fatalf("InsertedIDs = %v, want 3 ids starting with \"given\"", res.InsertedIDs)
		}
		for i, id := range res.InsertedIDs[1:] {
			oid, ok := id.(primitive.ObjectID)
			if !ok {
				t.Fatalf("InsertedIDs[%d] = %v, want a generated ObjectId", i+1, id)
			}
			var got bson.Raw
			requireNoError(t, coll.FindOne(ctx, doc("_id", oid)).Decode(&got), "find by generated _id")
			if n := got.Lookup("n").Int32(); n != int32(i+2) {
				t.Errorf("document %v has n = %d, want %d", oid, n, i+2)
			}
		}
	})
}

func intsToStrings(in []int) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = strconv.Itoa(v)
	}
	return out
}

// TestUpdateOperators: each update operator applied to one document gives the document the
// manual describes (manual: reference/operator/update/*). Field order is compared only where
// the manual promises it: $set on an existing field updates it in place.
func TestUpdateOperators(t *testing.T) {
	cases := []struct {
		name         string
		start        bson.D
		filter       bson.D // added to {_id: 1}; used by the positional operator
		update       bson.D
		arrayFilters []any
		want         bson.D
		ordered      bool
		wantModified int64
	}{
		{
			name:   "$set a new field",
			start:  doc("_id", 1, "a", 1),
			update: doc("$set", doc("b", "x")),
			want:   doc("_id", 1, "a", 1, "b", "x"), wantModified: 1,
		},
		{
			name:   "$set an existing field keeps its position",
			start:  doc("_id", 1, "a", 1, "b", 2, "c", 3),
			update: doc("$set", doc("b", "two")),
			want:   doc("_id", 1, "a", 1, "b", "two", "c", 3), ordered: true, wantModified: 1,
		},
		{
			name:   "$set a dotted path into an embedded document",
			start:  doc("_id", 1, "m", doc("x", 1)),
			update: doc("$set", doc("m.y", 2)),
			want:   doc("_id", 1, "m", doc("x", 1, "y", 2)), wantModified: 1,
		},
		{
			name:   "$set a dotted path creates the missing embedded documents",
			start:  doc("_id", 1),
			update: doc("$set", doc("p.q.r", "deep")),
			want:   doc("_id", 1, "p", doc("q", doc("r", "deep"))), wantModified: 1,
		},
		{
			name:   "$set an array element by index",
			start:  doc("_id", 1, "arr", bson.A{"a", "b", "c"}),
			update: doc("$set", doc("arr.1", "B")),
			want:   doc("_id", 1, "arr", bson.A{"a", "B", "c"}), wantModified: 1,
		},
		{
			name:   "$unset removes a field",
			start:  doc("_id", 1, "a", 1, "b", 2),
			update: doc("$unset", doc("a", "")),
			want:   doc("_id", 1, "b", 2), wantModified: 1,
		},
		{
			name:   "$unset a dotted path",
			start:  doc("_id", 1, "m", doc("x", 1, "y", 2)),
			update: doc("$unset", doc("m.x", "")),
			want:   doc("_id", 1, "m", doc("y", 2)), wantModified: 1,
		},
		{
			name:   "$unset a missing field changes nothing",
			start:  doc("_id", 1, "a", 1),
			update: doc("$unset", doc("zzz", "")),
			want:   doc("_id", 1, "a", 1), wantModified: 0,
		},
		{
			name:   "$inc an int32 by an int32 stays int32",
			start:  doc("_id", 1, "n", int32(5)),
			update: doc("$inc", doc("n", int32(-2))),
			want:   doc("_id", 1, "n", int32(3)), wantModified: 1,
		},
		{
			name:   "$inc an int32 by an int64 gives an int64",
			start:  doc("_id", 1, "n", int32(5)),
			update: doc("$inc", doc("n", int64(1))),
			want:   doc("_id", 1, "n", int64(6)), wantModified: 1,
		},
		{
			name:   "$inc an int32 by a double gives a double",
			start:  doc("_id", 1, "n", int32(5)),
			update: doc("$inc", doc("n", 0.5)),
			want:   doc("_id", 1, "n", 5.5), wantModified: 1,
		},
		{
			name:   "$inc a missing field sets it to the increment",
			start:  doc("_id", 1),
			update: doc("$inc", doc("n", int32(7))),
			want:   doc("_id", 1, "n", int32(7)), wantModified: 1,
		},
		{
			name:   "$push appends",
			start:  doc("_id", 1, "arr", bson.A{1, 2}),
			update: doc("$push", doc("arr", 3)),
			want:   doc("_id", 1, "arr", bson.A{1, 2, 3}), wantModified: 1,
		},
		{
			name:   "$push to a missing field creates the array",
			start:  doc("_id", 1),
			update: doc("$push", doc("arr", "first")),
			want:   doc("_id", 1, "arr", bson.A{"first"}), wantModified: 1,
		},
		{
			name:   "$push $each with a negative $slice keeps the last elements",
			start:  doc("_id", 1, "arr", bson.A{1, 2, 3}),
			update: doc("$push", doc("arr", doc("$each", bson.A{4, 5}, "$slice", -3))),
			want:   doc("_id", 1, "arr", bson.A{3, 4, 5}), wantModified: 1,
		},
		{
			name:   "$push $each with a positive $slice keeps the first elements",
			start:  doc("_id", 1, "arr", bson.A{1, 2, 3}),
			update: doc("$push", doc("arr", doc("$each", bson.A{4, 5}, "$slice", 2))),
			want:   doc("_id", 1, "arr", bson.A{1, 2}), wantModified: 1,
		},
		{
			name:   "$push $each at $position 0 prepends in order",
			start:  doc("_id", 1, "arr", bson.A{1, 2}),
			update: doc("$push", doc("arr", doc("$each", bson.A{8, 9}, "$position", 0))),
			want:   doc("_id", 1, "arr", bson.A{8, 9, 1, 2}), wantModified: 1,
		},
		{
			name:   "$push $each at a middle $position",
			start:  doc("_id", 1, "arr", bson.A{1, 2, 3}),
			update: doc("$push", doc("arr", doc("$each", bson.A{"x"}, "$position", 1))),
			want:   doc("_id", 1, "arr", bson.A{1, "x", 2, 3}), wantModified: 1,
		},
		{
			name:   "positional $ updates the first matching element",
			start:  doc("_id", 1, "arr", bson.A{1, 2, 3, 2}),
			filter: doc("arr", 2),
			update: doc("$set", doc("arr.$", 20)),
			want:   doc("_id", 1, "arr", bson.A{1, 20, 3, 2}), wantModified: 1,
		},
		{
			name:   "positional $ into an array of documents",
			start:  doc("_id", 1, "items", bson.A{doc("k", "a", "v", 1), doc("k", "b", "v", 2)}),
			filter: doc("items.k", "b"),
			update: doc("$set", doc("items.$.v", 99)),
			want:   doc("_id", 1, "items", bson.A{doc("k", "a", "v", 1), doc("k", "b", "v", 99)}), wantModified: 1,
		},
		{
			name:   "all positional $[] updates every element",
			start:  doc("_id", 1, "arr", bson.A{1, 2, 3}),
			update: doc("$inc", doc("arr.$[]", 10)),
			want:   doc("_id", 1, "arr", bson.A{11, 12, 13}), wantModified: 1,
		},
		{
			name:         "filtered positional $[e] with arrayFilters",
			start:        doc("_id", 1, "arr", bson.A{1, 5, 2, 8}),
			update:       doc("$set", doc("arr.$[e]", 0)),
			arrayFilters: []any{doc("e", doc("$gt", 2))},
			want:         doc("_id", 1, "arr", bson.A{1, 0, 2, 0}), wantModified: 1,
		},
		{
			name:         "arrayFilters on fields of embedded documents",
			start:        doc("_id", 1, "items", bson.A{doc("k", "a", "v", 1), doc("k", "b", "v", 2), doc("k", "a", "v", 3)}),
			update:       doc("$set", doc("items.$[it].v", -1)),
			arrayFilters: []any{doc("it.k", "a")},
			want:         doc("_id", 1, "items", bson.A{doc("k", "a", "v", -1), doc("k", "b", "v", 2), doc("k", "a", "v", -1)}), wantModified: 1,
		},
		{
			name:   "several operators in one update",
			start:  doc("_id", 1, "a", 1, "b", 2, "n", 10),
			update: doc("$set", doc("a", "A"), "$unset", doc("b", ""), "$inc", doc("n", 1)),
			want:   doc("_id", 1, "a", "A", "n", 11), wantModified: 1,
		},
		{
			name:   "$set to the current value changes nothing",
			start:  doc("_id", 1, "a", 1),
			update: doc("$set", doc("a", 1)),
			want:   doc("_id", 1, "a", 1), wantModified: 0,
		},
	}

	client := newClient(t)
	db := testDB(t, client)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			coll := db.Collection("c" + strconv.Itoa(i))
			_, err := coll.InsertOne(ctx, tc.start)
			requireNoError(t, err, "seed")

			filter := append(doc("_id", 1), tc.filter...)
			opts := options.Update()
			if tc.arrayFilters != nil {
				opts.SetArrayFilters(options.ArrayFilters{Filters: tc.arrayFilters})
			}
			res, err := coll.UpdateOne(ctx, filter, tc.update, opts)
			requireNoError(t, err, "update")
			if res.MatchedCount != 1 || res.ModifiedCount != tc.wantModified {
				t.Errorf("matched %d, modified %d; want 1 and %d", res.MatchedCount, res.ModifiedCount, tc.wantModified)
			}
			var got bson.Raw
			requireNoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got), "read back")
			requireDoc(t, got, tc.want, tc.ordered, "document after update")
		})
	}
}

// TestReplaceOne: a replacement document replaces every field but keeps _id, which stays
// the first field (manual: reference/method/db.collection.replaceOne; core/document,
// "Field Order").
func TestReplaceOne(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	_, err := coll.InsertOne(ctx, doc("_id", 1, "a", 1, "b", 2))
	requireNoError(t, err, "seed")

	res, err := coll.ReplaceOne(ctx, doc("_id", 1), doc("z", "new", "y", 0))
	requireNoError(t, err, "replace")
	if res.MatchedCount != 1 || res.ModifiedCount != 1 {
		t.Errorf("matched %d, modified %d; want 1 and 1", res.MatchedCount, res.ModifiedCount)
	}
	var got bson.Raw
	requireNoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got), "read back")
	requireDoc(t, got, doc("_id", 1, "z", "new", "y", 0), true, "replaced document")

	res, err = coll.ReplaceOne(ctx, doc("_id", 404), doc("z", 1))
	requireNoError(t, err, "replace with no match")
	if res.MatchedCount != 0 || res.UpsertedCount != 0 {
		t.Errorf("replace with no match: matched %d, upserted %d; want 0 and 0", res.MatchedCount, res.UpsertedCount)
	}
}

// TestUpsert: an upsert that matches nothing inserts a document built from the equality
// fields of the filter plus the update, reports UpsertedID (generated when the filter has
// no _id) and MatchedCount 0 (manual: reference/method/db.collection.updateOne, "Upsert").
func TestUpsert(t *testing.T) {
	cases := []struct {
		name    string
		filter  bson.D
		update  any
		replace bool
		wantID  any // nil: a generated ObjectId
		want    bson.D
	}{
		{
			name:   "update without _id in the filter",
			filter: doc("name", "ada"),
			update: doc("$set", doc("v", 1)),
			want:   doc("name", "ada", "v", 1),
		},
		{
			name:   "update with _id in the filter",
			filter: doc("_id", "k1", "name", "bob"),
			update: doc("$inc", doc("n", 2)),
			wantID: "k1",
			want:   doc("_id", "k1", "name", "bob", "n", 2),
		},
		{
			name:    "replacement with _id in the filter",
			filter:  doc("_id", "k2"),
			update:  doc("whole", true),
			replace: true,
			wantID:  "k2",
			want:    doc("_id", "k2", "whole", true),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			coll := testDB(t, newClient(t)).Collection("c")
			var res *mongo.UpdateResult
			var err error
			if tc.replace {
				res, err = coll.ReplaceOne(ctx, tc.filter, tc.update, options.Replace().SetUpsert(true))
			} else {
				res, err = coll.UpdateOne(ctx, tc.filter, tc.update, options.Update().SetUpsert(true))
			}
			requireNoError(t, err, "upsert")
			if res.MatchedCount != 0 || res.ModifiedCount != 0 || res.UpsertedCount != 1 {
				t.Errorf("matched %d, modified %d, upserted %d; want 0, 0, 1", res.MatchedCount, res.ModifiedCount, res.UpsertedCount)
			}
			want := tc.want
			if tc.wantID == nil {
				oid, ok := res.UpsertedID.(primitive.ObjectID)
				if !ok {
					t.Fatalf("UpsertedID = %v (%T), want a generated ObjectId", res.UpsertedID, res.UpsertedID)
				}
				want = append(doc("_id", oid), want...)
			} else if res.UpsertedID != tc.wantID {
				t.Errorf("UpsertedID = %v, want %v", res.UpsertedID, tc.wantID)
			}
			docs := findAll(t, ctx, coll, bson.D{})
			if len(docs) != 1 {
				t.Fatalf("collection holds %d documents, want 1", len(docs))
			}
			requireDoc(t, docs[0], want, false, "upserted document")

			// Running the same upsert again now matches the document instead of inserting.
			if !tc.replace {
				res, err = coll.UpdateOne(ctx, tc.filter, tc.update, options.Update().SetUpsert(true))
				requireNoError(t, err, "second upsert")
				if res.MatchedCount != 1 || res.UpsertedCount != 0 || res.UpsertedID != nil {
					t.Errorf("second upsert: matched %d, upserted %d (id %v); want 1, 0, none", res.MatchedCount, res.UpsertedCount, res.UpsertedID)
				}
			}
		})
	}
}

// TestUpdateMany: updateMany (multi: true) changes every match, updateOne only the first
// (manual: reference/command/update, "multi").
func TestUpdateMany(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	_, err := coll.InsertMany(ctx, []any{
		doc("_id", 1, "g", "x"), doc("_id", 2, "g", "x"), doc("_id", 3, "g", "y"), doc("_id", 4, "g", "x"),
	})
	requireNoError(t, err, "seed")

	res, err := coll.UpdateMany(ctx, doc("g", "x"), doc("$set", doc("seen", true)))
	requireNoError(t, err, "updateMany")
	if res.MatchedCount != 3 || res.ModifiedCount != 3 {
		t.Errorf("updateMany matched %d, modified %d; want 3 and 3", res.MatchedCount, res.ModifiedCount)
	}
	requireStrings(t, ids(findAll(t, ctx, coll, doc("seen", true))), intIDs(1, 2, 4), "documents updated by updateMany")

	res, err = coll.UpdateOne(ctx, doc("g", "x"), doc("$set", doc("once", true)))
	requireNoError(t, err, "updateOne")
	if res.MatchedCount != 1 || res.ModifiedCount != 1 {
		t.Errorf("updateOne matched %d, modified %d; want 1 and 1", res.MatchedCount, res.ModifiedCount)
	}
	if n, _ := coll.CountDocuments(ctx, doc("once", true)); n != 1 {
		t.Errorf("updateOne changed %d documents, want 1", n)
	}

	res, err = coll.UpdateMany(ctx, doc("g", "none"), doc("$set", doc("x", 1)))
	requireNoError(t, err, "updateMany matching nothing")
	if res.MatchedCount != 0 || res.ModifiedCount != 0 {
		t.Errorf("updateMany with no match: matched %d, modified %d; want 0 and 0", res.MatchedCount, res.ModifiedCount)
	}
}

// TestDelete: deleteOne removes one of several matches, deleteMany all of them, and a
// delete that matches nothing reports 0 (manual: reference/command/delete, "limit").
func TestDelete(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	_, err := coll.InsertMany(ctx, []any{
		doc("_id", 1, "g", "x"), doc("_id", 2, "g", "x"), doc("_id", 3, "g", "x"), doc("_id", 4, "g", "y"),
	})
	requireNoError(t, err, "seed")

	res, err := coll.DeleteOne(ctx, doc("g", "x"))
	requireNoError(t, err, "deleteOne")
	if res.DeletedCount != 1 {
		t.Errorf("deleteOne deleted %d, want 1", res.DeletedCount)
	}
	if n, _ := coll.CountDocuments(ctx, doc("g", "x")); n != 2 {
		t.Errorf("%d documents with g=x left after deleteOne, want 2", n)
	}

	res, err = coll.DeleteMany(ctx, doc("g", "x"))
	requireNoError(t, err, "deleteMany")
	if res.DeletedCount != 2 {
		t.Errorf("deleteMany deleted %d, want 2", res.DeletedCount)
	}
	requireStrings(t, ids(findAll(t, ctx, coll, bson.D{})), intIDs(4), "documents left")

	res, err = coll.DeleteMany(ctx, doc("g", "none"))
	requireNoError(t, err, "deleteMany matching nothing")
	if res.DeletedCount != 0 {
		t.Errorf("deleteMany with no match deleted %d, want 0", res.DeletedCount)
	}
}

// TestFindAndModify: findOneAndUpdate returns the pre-image by default and the post-image
// with returnDocument After; with upsert it inserts and returns the new document; sort picks
// which match is modified; without a match (and no upsert) there is no document;
// findOneAndDelete returns and removes the document (manual: reference/command/findAndModify).
func TestFindAndModify(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	_, err := coll.InsertMany(ctx, []any{doc("_id", 1, "n", 1), doc("_id", 2, "n", 2), doc("_id", 3, "n", 3)})
	requireNoError(t, err, "seed")

	var got bson.Raw
	err = coll.FindOneAndUpdate(ctx, doc("_id", 1), doc("$inc", doc("n", 10))).Decode(&got)
	requireNoError(t, err, "findOneAndUpdate (default: before)")
	requireDoc(t, got, doc("_id", 1, "n", 1), true, "pre-image")

	err = coll.FindOneAndUpdate(ctx, doc("_id", 1), doc("$inc", doc("n", 10)),
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&got)
	requireNoError(t, err, "findOneAndUpdate returnDocument After")
	requireDoc(t, got, doc("_id", 1, "n", 21), true, "post-image")

	err = coll.FindOneAndUpdate(ctx, doc("n", doc("$lt", 10)), doc("$set", doc("top", true)),
		options.FindOneAndUpdate().SetSort(doc("n", -1)).SetReturnDocument(options.After)).Decode(&got)
	requireNoError(t, err, "findOneAndUpdate with sort")
	requireDoc(t, got, doc("_id", 3, "n", 3, "top", true), true, "the highest n below 10")

	err = coll.FindOneAndUpdate(ctx, doc("_id", 7), doc("$set", doc("n", 7))).Err()
	if !errors.Is(err, mongo.ErrNoDocuments) {
		t.Errorf("findOneAndUpdate without a match: err = %v, want ErrNoDocuments", err)
	}
	if n, _ := coll.CountDocuments(ctx, doc("_id", 7)); n != 0 {
		t.Errorf("findOneAndUpdate without upsert inserted a document")
	}

	err = coll.FindOneAndUpdate(ctx, doc("_id", 7), doc("$set", doc("n", 7)),
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&got)
	requireNoError(t, err, "findOneAndUpdate upsert")
	requireDoc(t, got, doc("_id", 7, "n", 7), true, "upserted post-image")

	err = coll.FindOneAndReplace(ctx, doc("_id", 2), doc("replaced", true),
		options.FindOneAndReplace().SetReturnDocument(options.After)).Decode(&got)
	requireNoError(t, err, "findOneAndReplace")
	requireDoc(t, got, doc("_id", 2, "replaced", true), true, "replacement post-image")

	err = coll.FindOneAndDelete(ctx, doc("_id", 3)).Decode(&got)
	requireNoError(t, err, "findOneAndDelete")
	requireDoc(t, got, doc("_id", 3, "n", 3, "top", true), true, "deleted document")
	requireStrings(t, ids(findAll(t, ctx, coll, bson.D{})), intIDs(1, 2, 7), "documents after findOneAndDelete")

	err = coll.FindOneAndDelete(ctx, doc("_id", 3)).Err()
	if !errors.Is(err, mongo.ErrNoDocuments) {
		t.Errorf("findOneAndDelete without a match: err = %v, want ErrNoDocuments", err)
	}
}

// TestBulkWrite: an ordered bulk write stops at the first error; an unordered one reports
// every failing operation by its index in the request and applies the rest; the result
// counts each kind of write (manual: reference/method/db.collection.bulkWrite, "Ordered vs
// Unordered"; CRUD spec, BulkWriteResult).
func TestBulkWrite(t *testing.T) {
	models := func() []mongo.WriteModel {
		return []mongo.WriteModel{
			mongo.NewInsertOneModel().SetDocument(doc("_id", "c")),                                            // 0
			mongo.NewInsertOneModel().SetDocument(doc("_id", "a")),                                            // 1: duplicate
			mongo.NewUpdateOneModel().SetFilter(doc("_id", "b")).SetUpdate(doc("$set", doc("v", 2))),          // 2
			mongo.NewDeleteOneModel().SetFilter(doc("_id", "a")),                                              // 3
			mongo.NewInsertOneModel().SetDocument(doc("_id", "b")),                                            // 4: duplicate
			mongo.NewReplaceOneModel().SetFilter(doc("_id", "d")).SetReplacement(doc("v", 4)).SetUpsert(true), // 5
		}
	}
	cases := []struct {
		name       string
		ordered    bool
		wantErrIdx []int
		wantDocs   []bson.D
		want       mongo.BulkWriteResult
	}{
		{
			name: "ordered", ordered: true,
			wantErrIdx: []int{1},
			wantDocs:   []bson.D{doc("_id", "a", "v", 1), doc("_id", "b", "v", 1), doc("_id", "c")},
			want:       mongo.BulkWriteResult{InsertedCount: 1},
		},
		{
			name: "unordered", ordered: false,
			wantErrIdx: []int{1, 4},
			wantDocs:   []bson.D{doc("_id", "b", "v", 2), doc("_id", "c"), doc("_id", "d", "v", 4)},
			want:       mongo.BulkWriteResult{InsertedCount: 1, MatchedCount: 1, ModifiedCount: 1, DeletedCount: 1, UpsertedCount: 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			coll := testDB(t, newClient(t)).Collection("c")
			_, err := coll.InsertMany(ctx, []any{doc("_id", "a", "v", 1), doc("_id", "b", "v", 1)})
			requireNoError(t, err, "seed")

			res, err := coll.BulkWrite(ctx, models(), options.BulkWrite().SetOrdered(tc.ordered))
			var bwe mongo.BulkWriteException
			if !errors.As(err, &bwe) {
				t.Fatalf("bulkWrite error = %v, want a BulkWriteException", err)
			}
			var gotIdx []int
			for _, we := range bwe.WriteErrors {
				gotIdx = append(gotIdx, we.Index)
				if we.Code != 11000 {
					t.Errorf("write error at index %d: code %d, want 11000", we.Index, we.Code)
				}
			}
			requireStrings(t, intsToStrings(gotIdx), intsToStrings(tc.wantErrIdx), "indexes of the write errors")

			if res == nil {
				t.Fatalf("bulkWrite returned no result alongside its BulkWriteException")
			}
			if res.InsertedCount != tc.want.InsertedCount || res.MatchedCount != tc.want.MatchedCount ||
				res.ModifiedCount != tc.want.ModifiedCount || res.DeletedCount != tc.want.DeletedCount ||
				res.UpsertedCount != tc.want.UpsertedCount {
				t.Errorf("result = %+v, want counts %+v", *res, tc.want)
			}
			if tc.want.UpsertedCount == 1 && res.UpsertedIDs[5] != "d" {
				t.Errorf("UpsertedIDs = %v, want {5: d}", res.UpsertedIDs)
			}

			docs := findAll(t, ctx, coll, bson.D{})
			if len(docs) != len(tc.wantDocs) {
				t.Fatalf("collection holds %v, want %v", ids(docs), tc.wantDocs)
			}
			for i := range docs {
				requireDoc(t, docs[i], tc.wantDocs[i], false, "document "+strconv.Itoa(i))
			}
		})
	}
}

// TestDocumentTooLarge: a document over 16 MiB (maxBsonObjectSize) is refused. Through the
// driver's insert helpers the driver refuses it itself, before sending, with
// driver.ErrDocumentTooLarge, because the document exceeds the maxBsonObjectSize the server
// advertised (x/mongo/driver/batches.go). Sent as a raw insert command, the server refuses
// it: mongod returns a write error "object to insert too large" with code 2 (BadValue);
// 10334 (BSONObjectTooLarge) is the code MongoDB names for the same limit, so either is
// accepted (manual: reference/limits, "BSON Document Size").
func TestDocumentTooLarge(t *testing.T) {
	const limit = 16 * 1024 * 1024
	big := func(extra int) bson.Raw {
		// {_id: 1, s: <string>} is 4+1+4+4(_id)+1+2+4+len+1(s)+1 bytes = len + 22.
		return toRaw(t, doc("_id", 1, "s", strings.Repeat("x", limit-22+extra)))
	}
	if n := len(big(0)); n != limit {
		t.Fatalf("test setup: document is %d bytes, want exactly %d", n, limit)
	}

	t.Run("driver InsertOne", func(t *testing.T) {
		ctx := testContext(t)
		coll := testDB(t, newClient(t)).Collection("c")
		_, err := coll.InsertOne(ctx, big(1))
		if !errors.Is(err, driver.ErrDocumentTooLarge) {
			requireCode(t, err, "insert of a 16 MiB + 1 byte document", 10334)
		}
		if n, _ := coll.CountDocuments(ctx, bson.D{}); n != 0 {
			t.Errorf("the oversized document was stored")
		}
	})

	t.Run("raw insert command", func(t *testing.T) {
		ctx := testContext(t)
		db := testDB(t, newClient(t))
		err := db.RunCommand(ctx, doc("insert", "c", "documents", bson.A{big(1)})).Err()
		requireCode(t, err, "raw insert of a 16 MiB + 1 byte document", 2, 10334)
		if n, _ := db.Collection("c").CountDocuments(ctx, bson.D{}); n != 0 {
			t.Errorf("the oversized document was stored")
		}
	})

	t.Run("exactly 16 MiB is accepted", func(t *testing.T) {
		ctx := testContext(t)
		coll := testDB(t, newClient(t)).Collection("c")
		_, err := coll.InsertOne(ctx, big(0))
		requireNoError(t, err, "insert of a document of exactly maxBsonObjectSize bytes")
		var got bson.Raw
		requireNoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got), "read back")
		if len(got) != limit {
			t.Errorf("read back %d bytes, want %d", len(got), limit)
		}
	})
}
