package partition

import (
	"math"
	"sort"
	"testing"
	"time"

	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

func rawValue(t *testing.T, v any) bson.RawValue {
	t.Helper()
	b, err := bson.Marshal(bson.D{{Key: "v", Value: v}})
	if err != nil {
		t.Fatal(err)
	}
	return bson.Raw(b).Lookup("v")
}

// TestCompareMatchesReferenceOrder checks Compare against lungo's implementation of MongoDB's
// comparison order on every pair of a set of _id-like values of many types.
func TestCompareMatchesReferenceOrder(t *testing.T) {
	dec, _ := primitive.ParseDecimal128("2.5")
	oid1, _ := primitive.ObjectIDFromHex("62d70f2e9416e4a253875177")
	oid2, _ := primitive.ObjectIDFromHex("62d70f2e9416e4a253875178")
	values := []any{
		nil, int32(-3), int32(2), int64(2), int64(1 << 40), 2.5, dec, -0.5,
		"", "a", "ab", "b", "数据",
		bson.D{{Key: "a", Value: int32(1)}}, bson.D{{Key: "a", Value: int32(2)}}, bson.D{{Key: "b", Value: int32(0)}},
		bson.D{{Key: "a", Value: int32(1)}, {Key: "b", Value: int32(1)}},
		primitive.Binary{Subtype: 0, Data: []byte{1, 2}}, primitive.Binary{Subtype: 4, Data: []byte{1, 2}},
		primitive.Binary{Subtype: 0, Data: []byte{1}},
		oid1, oid2, false, true,
		primitive.NewDateTimeFromTime(time.Unix(-10, 0)), primitive.NewDateTimeFromTime(time.Unix(10, 0)),
		primitive.Timestamp{T: 5, I: 1}, primitive.Timestamp{T: 5, I: 2}, primitive.Timestamp{T: 6, I: 0},
	}
	sign := func(c int) int {
		switch {
		case c < 0:
			return -1
		case c > 0:
			return 1
		}
		return 0
	}
	for _, a := range values {
		for _, b := range values {
			got := sign(Compare(rawValue(t, a), rawValue(t, b)))
			want := sign(bsonkit.Compare(a, b))
			if got != want {
				t.Errorf("Compare(%v, %v) = %d, reference says %d", a, b, got, want)
			}
		}
	}
}

func TestCompareSortsNumbersAcrossTypes(t *testing.T) {
	in := []any{int64(3), 2.5, int32(1), math.NaN(), int64(-7), int32(3)}
	vals := make([]bson.RawValue, len(in))
	for i, v := range in {
		vals[i] = rawValue(t, v)
	}
	sort.SliceStable(vals, func(i, j int) bool { return Compare(vals[i], vals[j]) < 0 })
	var got []string
	for _, v := range vals {
		got = append(got, v.String())
	}
	want := []string{`{"$numberDouble":"NaN"}`, `{"$numberLong":"-7"}`, `{"$numberInt":"1"}`, `{"$numberDouble":"2.5"}`, `{"$numberLong":"3"}`, `{"$numberInt":"3"}`}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sorted = %v, want %v", got, want)
		}
	}
}
