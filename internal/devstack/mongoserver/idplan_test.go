package mongoserver

import (
	"fmt"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// mixedIDs are _ids of every type an _id can have, a few per type bracket,
// with numbers of all four numeric types interleaved. No NaN or infinity:
// bsonkit cannot compare those with a Decimal128 (it panics).
func mixedIDs(t testing.TB) []interface{} {
	dec, err := primitive.ParseDecimal128("2.25")
	if err != nil {
		t.Fatal(err)
	}
	oid := func(b byte) primitive.ObjectID { return primitive.ObjectID{b} }
	return []interface{}{
		nil,
		-1.0, int32(1), int64(2), dec, 2.5, int32(3), 4.5, int64(5), int32(7), 8.0, 1e300,
		"", "a", "b", "m", "z",
		bson.D{{Key: "a", Value: int32(1)}}, bson.D{{Key: "b", Value: "x"}},
		primitive.Binary{Data: []byte{1}},
		oid(1), oid(2), oid(3),
		false, true,
		primitive.DateTime(-5), primitive.DateTime(0), primitive.DateTime(10),
		primitive.Timestamp{T: 1, I: 1}, primitive.Timestamp{T: 2, I: 0},
	}
}

// mixedCollection is an engine holding d.c with one document per mixedIDs
// value, each with x = its position, so filters can combine _id with x.
func mixedCollection(t testing.TB) (*engine, *collection) {
	e := newEngine(Options{OplogMaxEntries: 1000})
	e.lock()
	defer e.unlock()
	coll, _ := e.createCollection("d", "c")
	for i, id := range mixedIDs(t) {
		raw, err := fromD(bson.D{{Key: "_id", Value: id}, {Key: "x", Value: int32(i)}})
		if err != nil {
			t.Fatal(err)
		}
		id, idVal, err := idOf(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.insertDoc(coll, raw, id, idVal); err != nil {
			t.Fatal(err)
		}
	}
	return e, coll
}

func idRange(ops ...interface{}) bson.D {
	var d bson.D
	for i := 0; i < len(ops); i += 2 {
		d = append(d, bson.E{Key: ops[i].(string), Value: ops[i+1]})
	}
	return bson.D{{Key: "_id", Value: d}}
}

// TestIDPlanMatchesScan runs each filter through its _id plan and through a
// full scan, in both directions and resuming after every document, and
// requires the same documents (or the same error). For the filters that
// should narrow, it also requires that fewer documents were read.
func TestIDPlanMatchesScan(t *testing.T) {
	e, coll := mixedCollection(t)
	minKey, maxKey := primitive.MinKey{}, primitive.MaxKey{}
	x := func(op string, v interface{}) bson.E { return bson.E{Key: "x", Value: bson.D{{Key: op, Value: v}}} }
	tests := []struct {
		name    string
		filter  bson.D
		narrows bool // the plan must read fewer documents than the collection holds
		wantN   int  // matches expected (-1: an error, as the scan gives)
	}{
		{"gte lt numbers", idRange("$gte", int32(2), "$lt", int32(5)), true, 5},
		{"gt number stops at strings", idRange("$gt", int32(4)), true, 5},
		{"lte number starts at numbers", idRange("$lte", int32(3)), true, 6},
		{"mixed numeric types", idRange("$gte", int64(2), "$lt", 4.5), true, 4},
		{"decimal bound", idRange("$gt", mixedIDs(t)[4]), true, 7},
		{"gt largest", idRange("$gt", 1e300), true, 0},
		{"gte largest", idRange("$gte", 1e300), true, 1},
		{"lt string", idRange("$lt", "m"), true, 3},
		{"gte empty string", idRange("$gte", ""), true, 5},
		{"single point", idRange("$gte", int32(3), "$lte", 3.0), true, 1},
		{"empty: gt equals lt", idRange("$gt", int32(3), "$lt", int32(3)), true, 0},
		{"empty: gte above lte", idRange("$gte", int32(5), "$lte", int32(2)), true, 0},
		{"empty: bounds in different brackets", idRange("$gt", int32(1), "$lt", "z"), true, 0},
		{"empty: no value in bracket", idRange("$gt", bson.A{int32(1)}), true, 0},
		{"regex bound", idRange("$lt", primitive.Regex{Pattern: "a"}), true, 0},
		{"null", idRange("$gte", nil), true, 1},
		{"gt null", idRange("$gt", nil), true, 0},
		{"documents", idRange("$gt", bson.D{{Key: "a", Value: int32(1)}}), true, 1},
		{"object ids", idRange("$gt", primitive.ObjectID{1}, "$lte", primitive.ObjectID{3}), true, 2},
		{"booleans", idRange("$gte", false), true, 2},
		{"dates", idRange("$gt", primitive.DateTime(-5)), true, 2},
		{"timestamps", idRange("$lt", primitive.Timestamp{T: 2}), true, 1},
		{"tightest of repeated bounds", idRange("$gt", int32(1), "$gte", int32(2), "$lt", int32(8), "$lte", int32(7)), true, 7},
		{"exclusive wins on equal bounds", idRange("$gte", int32(2), "$gt", int32(2), "$lte", int32(5)), true, 5},
		{"with another condition", append(idRange("$gt", int32(1)), x("$gt", int32(5))), true, 6},
		{"$and conjuncts", bson.D{{Key: "$and", Value: bson.A{idRange("$gte", int32(2)), idRange("$lt", int32(7))}}}, true, 6},
		{"_id twice", append(idRange("$gte", int32(2)), idRange("$lt", int32(7))...), true, 6},
		{"range and $and", append(idRange("$gte", int32(2)), bson.E{Key: "$and", Value: bson.A{idRange("$lt", int32(7))}}), true, 6},
		{"range and $ne", idRange("$gte", int32(2), "$lt", int32(7), "$ne", int32(3)), true, 5},
		{"equality", bson.D{{Key: "_id", Value: "b"}}, true, 1},
		{"equality and range", idRange("$eq", int32(3), "$gt", int32(1)), true, 1},
		{"equality outside range", idRange("$eq", int32(3), "$gt", int32(4)), true, 0},
		{"in", idRange("$in", bson.A{int32(3), "b", 3.0, int32(99), bson.A{int32(1)}, nil, primitive.Regex{Pattern: "b"}}), true, 3},
		{"in empty", idRange("$in", bson.A{}), true, 0},
		{"in and range", idRange("$in", bson.A{int32(1), int32(2), int32(5)}, "$gte", int32(2)), true, 2},
		{"in and condition", append(idRange("$in", bson.A{int32(1), int32(2), int32(5)}), x("$lt", int32(4))), true, 2},
		{"two $in, shorter used", append(idRange("$in", bson.A{int32(1), int32(2), int32(5)}), idRange("$in", bson.A{int32(2)})...), true, 1},
		{"or does not narrow", bson.D{{Key: "$or", Value: bson.A{bson.D{{Key: "_id", Value: int32(1)}}, bson.D{{Key: "_id", Value: "a"}}}}}, false, 2},
		{"not does not narrow", idRange("$not", bson.D{{Key: "$gt", Value: int32(3)}}), false, 25},
		{"literal document with $ key later", bson.D{{Key: "_id", Value: bson.D{{Key: "a", Value: int32(1)}, {Key: "$gt", Value: int32(1)}}}}, false, 0},
		{"MinKey lower bound", idRange("$gte", minKey), false, -1},
		{"MaxKey upper bound", idRange("$lt", maxKey), false, -1},
		{"MinKey with a real upper bound", idRange("$gt", minKey, "$lt", int32(-5)), false, -1},
		{"MaxKey after an unmet bound", idRange("$gt", "zz", "$lte", maxKey), false, 0}, // the matcher stops at $gt
		{"MinKey in $in", idRange("$in", bson.A{int32(1), minKey}), false, -1},
		{"MinKey equality", bson.D{{Key: "_id", Value: minKey}}, false, -1},
	}
	total := coll.docs.Len()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := fromD(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			q, err := newQuery(raw)
			if err != nil {
				t.Fatal(err)
			}
			scan := *q
			scan.plan = idPlan{scan: true}

			e.mu.RLock()
			defer e.mu.RUnlock()
			read := 0
			q.plan.candidates(coll, nil, false, func(*record) bool { read++; return true })
			if tc.narrows && read >= total {
				t.Errorf("plan read %d of %d documents, want fewer", read, total)
			}
			if !tc.narrows && !q.plan.scan && read < total {
				t.Errorf("plan read %d of %d documents; this filter must not narrow", read, total)
			}

			want, wantErr := collectIDs(&scan, coll, nil, false)
			if tc.wantN >= 0 && (wantErr != nil || len(want) != tc.wantN) {
				t.Fatalf("scan: %d documents, err %v; want %d (fix the table)", len(want), wantErr, tc.wantN)
			}
			if tc.wantN < 0 && wantErr == nil {
				t.Fatalf("scan: no error; want one (fix the table)")
			}
			for _, reverse := range []bool{false, true} {
				afters := append([]*record{nil}, allRecords(coll)...)
				for _, after := range afters {
					want, wantErr := collectIDs(&scan, coll, after, reverse)
					got, gotErr := collectIDs(q, coll, after, reverse)
					if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !slices.Equal(got, want) {
						where := "start"
						if after != nil {
							where = fmt.Sprint(after.id)
						}
						t.Fatalf("reverse=%v after %s: plan gave %v (err %v), scan %v (err %v)", reverse, where, got, gotErr, want, wantErr)
					}
				}
			}
		})
	}
}

// collectIDs lists the documents q.walk yields, as _id strings.
func collectIDs(q *query, c *collection, after *record, reverse bool) ([]string, error) {
	var ids []string
	err := q.walk(c, after, reverse, func(r *record) bool {
		ids = append(ids, fmt.Sprintf("%T(%v)", r.id, r.id))
		return true
	})
	return ids, err
}

func allRecords(c *collection) []*record {
	var out []*record
	c.docs.Scan(func(r *record) bool { out = append(out, r); return true })
	return out
}

// TestIDRangeThroughDriver checks the commands that use the plan: find with
// _id sorts (descending paged over getMore), count, update and delete.
func TestIDRangeThroughDriver(t *testing.T) {
	s := startServer(t, Options{NoopInterval: -1})
	coll := connect(t, s).Database("d").Collection("c")
	var docs []interface{}
	for i := int32(0); i < 20; i++ {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "even", Value: i%2 == 0}})
	}
	docs = append(docs, bson.D{{Key: "_id", Value: "5"}}, bson.D{{Key: "_id", Value: primitive.NewObjectID()}})
	if _, err := coll.InsertMany(ctx(t), docs); err != nil {
		t.Fatal(err)
	}
	rng := idRange("$gte", int32(5), "$lt", 12.0)
	ids := func(filter bson.D, opts *options.FindOptions) []int32 {
		t.Helper()
		cur, err := coll.Find(ctx(t), filter, opts)
		if err != nil {
			t.Fatal(err)
		}
		var out []struct {
			ID int32 `bson:"_id"`
		}
		if err := cur.All(ctx(t), &out); err != nil {
			t.Fatal(err)
		}
		var got []int32
		for _, d := range out {
			got = append(got, d.ID)
		}
		return got
	}
	tests := []struct {
		name   string
		filter bson.D
		opts   *options.FindOptions
		want   []int32
	}{
		{"ascending", rng, options.Find().SetBatchSize(2), []int32{5, 6, 7, 8, 9, 10, 11}},
		{"descending", rng, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetBatchSize(2), []int32{11, 10, 9, 8, 7, 6, 5}},
		{"descending skip limit", rng, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetSkip(1).SetLimit(3), []int32{10, 9, 8}},
		{"with condition", append(rng, bson.E{Key: "even", Value: true}), options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}), []int32{10, 8, 6}},
		{"in, descending", idRange("$in", bson.A{int32(3), int64(17), 1.0, int32(99)}), options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}), []int32{17, 3, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ids(tc.filter, tc.opts); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if n, err := coll.CountDocuments(ctx(t), rng); err != nil || n != 7 {
		t.Errorf("count = %d, %v; want 7", n, err)
	}
	res, err := coll.DeleteMany(ctx(t), idRange("$gt", int32(15)))
	if err != nil || res.DeletedCount != 4 {
		t.Errorf("delete $gt 15 = %v, %v; want 4 deleted", res, err)
	}
	up, err := coll.UpdateMany(ctx(t), idRange("$lte", int32(2)), bson.D{{Key: "$set", Value: bson.D{{Key: "low", Value: true}}}})
	if err != nil || up.ModifiedCount != 3 {
		t.Errorf("update $lte 2 = %v, %v; want 3 modified", up, err)
	}
	var first bson.Raw
	if err := coll.FindOneAndDelete(ctx(t), rng, options.FindOneAndDelete().SetSort(bson.D{{Key: "_id", Value: -1}})).Decode(&first); err != nil {
		t.Fatal(err)
	}
	if id := bsoncore.Document(first).Lookup("_id"); id.Int32() != 11 {
		t.Errorf("findAndModify with _id -1 took %s, want 11", id)
	}
}
