package conformance

// BSON fidelity: what is written comes back byte for byte, numbers compare by value across
// types, and sort follows the documented cross-type order.

import (
	"bytes"
	"math"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func mustDecimal(t *testing.T, s string) primitive.Decimal128 {
	t.Helper()
	d, err := primitive.ParseDecimal128(s)
	if err != nil {
		t.Fatalf("parse decimal %q: %v", s, err)
	}
	return d
}

// TestBSONRoundTrip: a document holding every non-deprecated BSON type is stored as given
// and read back byte-identical, field order included (BSON spec; manual: reference/bson-types,
// core/document "Field Order": MongoDB preserves field order, _id first).
func TestBSONRoundTrip(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("types")

	values := bson.D{
		{Key: "_id", Value: primitive.NewObjectID()},
		{Key: "int32", Value: int32(-2147483648)},
		{Key: "int32max", Value: int32(math.MaxInt32)},
		{Key: "int64", Value: int64(math.MaxInt64)},
		{Key: "int64small", Value: int64(1)}, // an int64 that would fit an int32 stays an int64
		{Key: "double", Value: 3.141592653589793},
		{Key: "doubleWhole", Value: 2.0}, // a whole double stays a double
		{Key: "negZero", Value: math.Copysign(0, -1)},
		{Key: "inf", Value: math.Inf(1)},
		{Key: "negInf", Value: math.Inf(-1)},
		{Key: "decimal", Value: mustDecimal(t, "1234.5678E-10")},
		{Key: "decimalNeg", Value: mustDecimal(t, "-0.000001")},
		{Key: "decimalBig", Value: mustDecimal(t, "9.999999999999999999999999999999999E+6144")},
		{Key: "decimalNaN", Value: mustDecimal(t, "NaN")},
		{Key: "emptyString", Value: ""},
		{Key: "unicode", Value: "héllo wörld — 世界 🚀"},
		{Key: "nulInString", Value: "a\x00b"},
		{Key: "true", Value: true},
		{Key: "false", Value: false},
		{Key: "null", Value: nil},
		{Key: "date", Value: primitive.NewDateTimeFromTime(time.Date(2024, 2, 29, 12, 34, 56, 789e6, time.UTC))},
		{Key: "datePre1970", Value: primitive.DateTime(-86400000 * 365)},
		{Key: "timestamp", Value: primitive.Timestamp{T: 1700000000, I: 7}},
		{Key: "binGeneric", Value: primitive.Binary{Subtype: 0x00, Data: []byte{0, 1, 2, 255}}},
		{Key: "binEmpty", Value: primitive.Binary{Subtype: 0x00, Data: []byte{}}},
		{Key: "binFunction", Value: primitive.Binary{Subtype: 0x01, Data: []byte("f")}},
		{Key: "binOld", Value: primitive.Binary{Subtype: 0x02, Data: []byte("old binary")}},
		{Key: "uuidOld", Value: primitive.Binary{Subtype: 0x03, Data: bytes.Repeat([]byte{0xab}, 16)}},
		{Key: "uuid", Value: primitive.Binary{Subtype: 0x04, Data: bytes.Repeat([]byte{0x12}, 16)}},
		{Key: "md5", Value: primitive.Binary{Subtype: 0x05, Data: bytes.Repeat([]byte{0x5a}, 16)}},
		{Key: "userDefined", Value: primitive.Binary{Subtype: 0x80, Data: []byte("custom")}},
		{Key: "regex", Value: primitive.Regex{Pattern: `^a.*b$`, Options: "i"}},
		{Key: "regexOpts", Value: primitive.Regex{Pattern: `x\d+`, Options: "imsx"}},
		{Key: "javascript", Value: primitive.JavaScript("function() { return 1; }")},
		{Key: "minKey", Value: primitive.MinKey{}},
		{Key: "maxKey", Value: primitive.MaxKey{}},
		{Key: "emptyDoc", Value: bson.D{}},
		{Key: "emptyArray", Value: bson.A{}},
		{Key: "nested", Value: bson.D{
			{Key: "z", Value: 1}, {Key: "a", Value: bson.D{{Key: "deeper", Value: bson.A{int64(1), "two", bson.D{{Key: "three", Value: 3.0}}}}}},
		}},
		{Key: "mixedArray", Value: bson.A{int32(1), int64(2), 3.5, "four", nil, bson.A{bson.A{}}, primitive.Binary{Data: []byte{9}}}},
		{Key: "ключ", Value: "unicode key"},
		{Key: "zzz_last", Value: "order is kept, not sorted"},
	}
	want := toRaw(t, values)

	_, err := coll.InsertOne(ctx, want)
	requireNoError(t, err, "insert")
	var got bson.Raw
	requireNoError(t, coll.FindOne(ctx, bson.D{{Key: "_id", Value: values[0].Value}}).Decode(&got), "read back")
	if !bytes.Equal(got, want) {
		t.Errorf("read back bytes differ from what was written\n got: %s\nwant: %s\nfirst difference: %s",
			got, want, diffDocs(got, want, true))
	}

	// The same bytes come back through a query on each field (the stored values compare equal
	// to themselves), and through aggregate.
	cur, err := coll.Aggregate(ctx, bson.A{bson.D{{Key: "$match", Value: bson.D{{Key: "_id", Value: values[0].Value}}}}})
	requireNoError(t, err, "aggregate")
	var viaAgg []bson.Raw
	requireNoError(t, cur.All(ctx, &viaAgg), "read aggregate")
	if len(viaAgg) != 1 || !bytes.Equal(viaAgg[0], want) {
		t.Errorf("aggregate returned %d documents that differ from what was written", len(viaAgg))
	}
	for _, e := range values[1:] {
		switch e.Value.(type) {
		case primitive.Regex, primitive.MinKey, primitive.MaxKey, primitive.JavaScript:
			continue // a regex in a filter is a pattern match; the others are not equality-friendly
		}
		if f, ok := e.Value.(primitive.Decimal128); ok && f.String() == "NaN" {
			continue // NaN equals NaN in MongoDB queries, but that is beyond round-tripping
		}
		n, err := coll.CountDocuments(ctx, bson.D{{Key: e.Key, Value: e.Value}})
		requireNoError(t, err, "count by "+e.Key)
		if n != 1 {
			t.Errorf("equality query on %s = %v matched %d documents, want 1", e.Key, e.Value, n)
		}
	}
}

// TestNumericComparison: numbers of different BSON types compare by value in queries, and
// the stored type is unchanged (manual: reference/bson-type-comparison-order, "Numeric
// Types").
func TestNumericComparison(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	_, err := coll.InsertMany(ctx, []any{
		doc("_id", 1, "v", int32(5)),
		doc("_id", 2, "v", int64(5)),
		doc("_id", 3, "v", 5.0),
		doc("_id", 4, "v", mustDecimal(t, "5")),
		doc("_id", 5, "v", 5.5),
	})
	requireNoError(t, err, "seed")

	for _, probe := range []any{int32(5), int64(5), 5.0, mustDecimal(t, "5.00")} {
		got := findAll(t, ctx, coll, doc("v", probe))
		requireStrings(t, ids(got), intIDs(1, 2, 3, 4), "documents equal to 5 of any numeric type")
	}
	got := findAll(t, ctx, coll, doc("v", doc("$gt", int32(5))))
	requireStrings(t, ids(got), intIDs(5), "documents greater than 5")

	var stored bson.Raw
	requireNoError(t, coll.FindOne(ctx, doc("_id", 2)).Decode(&stored), "read back")
	if _, ok := stored.Lookup("v").Int64OK(); !ok {
		t.Errorf("v = %s, want the int64 that was stored", stored.Lookup("v"))
	}
}

// TestCrossTypeSort: sorting a field holding different types follows the documented
// comparison order MinKey < null < numbers < strings < objects < arrays < binary <
// ObjectId < booleans < dates < timestamps < regular expressions < MaxKey
// (manual: reference/bson-type-comparison-order). Arrays are left out: an ascending sort
// compares an array by its smallest element.
func TestCrossTypeSort(t *testing.T) {
	ctx := testContext(t)
	coll := testDB(t, newClient(t)).Collection("c")
	oid := primitive.NewObjectID()
	ordered := []any{
		primitive.MinKey{},
		nil,
		int32(-1),
		2.5,
		int64(3),
		"a string",
		"b string",
		doc("x", 1),
		primitive.Binary{Data: []byte{1}},
		oid,
		false,
		true,
		primitive.NewDateTimeFromTime(time.Unix(0, 0)),
		primitive.Timestamp{T: 1, I: 1},
		primitive.Regex{Pattern: "a", Options: ""},
		primitive.MaxKey{},
	}
	// Insert in a scrambled order; _id is the position in the expected order.
	for _, i := range []int{7, 3, 15, 0, 11, 5, 9, 1, 13, 2, 14, 6, 10, 4, 12, 8} {
		_, err := coll.InsertOne(ctx, doc("_id", int32(i), "v", ordered[i]))
		requireNoError(t, err, "insert")
	}

	want := make([]int32, len(ordered))
	for i := range want {
		want[i] = int32(i)
	}
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetSort(doc("v", 1)))
	requireNoError(t, err, "find sorted ascending")
	var got []bson.Raw
	requireNoError(t, cur.All(ctx, &got), "read cursor")
	requireStrings(t, ids(got), intIDs(want...), "ascending cross-type order")

	cur, err = coll.Find(ctx, bson.D{}, options.Find().SetSort(doc("v", -1)))
	requireNoError(t, err, "find sorted descending")
	requireNoError(t, cur.All(ctx, &got), "read cursor")
	for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
		want[i], want[j] = want[j], want[i]
	}
	requireStrings(t, ids(got), intIDs(want...), "descending cross-type order")
}
