package changeevent

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

func mustRaw(t testing.TB, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// richDoc holds one field of every BSON type the product must carry unchanged.
func richDoc(t testing.TB) bson.Raw {
	dec, _ := primitive.ParseDecimal128("1234.5678")
	return mustRaw(t, bson.D{
		{Key: "_id", Value: primitive.NewObjectID()},
		{Key: "i32", Value: int32(7)},
		{Key: "i64", Value: int64(7)},
		{Key: "f64", Value: 7.0},
		{Key: "dec", Value: dec},
		{Key: "date", Value: primitive.NewDateTimeFromTime(time.Date(2022, 7, 19, 20, 20, 22, 0, time.UTC))},
		{Key: "ts", Value: primitive.Timestamp{T: 1658233222, I: 3}},
		{Key: "bin", Value: primitive.Binary{Subtype: 4, Data: bytes.Repeat([]byte{1}, 16)}},
		{Key: "re", Value: primitive.Regex{Pattern: "^a", Options: "i"}},
		{Key: "nested", Value: bson.D{{Key: "a", Value: bson.A{int32(1), "x", bson.D{{Key: "b", Value: nil}}}}}},
		{Key: "unicode", Value: "数据库 ✓"},
		{Key: "empty", Value: ""},
	})
}

func TestFromChangeStreamKeepsBSONBytes(t *testing.T) {
	full := richDoc(t)
	id := full.Lookup("_id")
	token := mustRaw(t, bson.D{{Key: "_data", Value: "8262D70F2E000000012B"}})
	ts := primitive.Timestamp{T: 1658233222, I: 1}

	tests := []struct {
		name  string
		event bson.D
		check func(t *testing.T, e Event)
	}{
		{
			name: "insert",
			event: bson.D{{Key: "_id", Value: token}, {Key: "operationType", Value: "insert"}, {Key: "clusterTime", Value: ts},
				{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
				{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}}, {Key: "fullDocument", Value: full}},
			check: func(t *testing.T, e Event) {
				if !bytes.Equal(e.FullDocument, full) {
					t.Errorf("fullDocument bytes changed")
				}
			},
		},
		{
			name: "update with deleted document under updateLookup",
			event: bson.D{{Key: "_id", Value: token}, {Key: "operationType", Value: "update"}, {Key: "clusterTime", Value: ts},
				{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
				{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}}, {Key: "fullDocument", Value: nil},
				{Key: "updateDescription", Value: bson.D{
					{Key: "updatedFields", Value: bson.D{{Key: "a.b", Value: int32(2)}}},
					{Key: "removedFields", Value: bson.A{"c"}},
					{Key: "truncatedArrays", Value: bson.A{bson.D{{Key: "field", Value: "arr"}, {Key: "newSize", Value: int32(1)}}}},
				}}},
			check: func(t *testing.T, e Event) {
				if e.FullDocument != nil {
					t.Errorf("null fullDocument should decode as nil, got %v", e.FullDocument)
				}
				ud := e.UpdateDescription
				if ud == nil || ud.UpdatedFields.Lookup("a.b").Type != bson.TypeInt32 || len(ud.RemovedFields) != 1 || ud.RemovedFields[0] != "c" {
					t.Errorf("updateDescription not kept: %+v", ud)
				}
				if len(ud.TruncatedArrays) != 1 || ud.TruncatedArrays[0] != (TruncatedArray{"arr", 1}) {
					t.Errorf("truncatedArrays not kept: %+v", ud.TruncatedArrays)
				}
			},
		},
		{
			name: "rename",
			event: bson.D{{Key: "_id", Value: token}, {Key: "operationType", Value: "rename"}, {Key: "clusterTime", Value: ts},
				{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
				{Key: "to", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo2"}}}},
			check: func(t *testing.T, e Event) {
				if e.To == nil || e.To.String() != "bar.foo2" {
					t.Errorf("rename target lost: %+v", e.To)
				}
			},
		},
		{
			name: "dropDatabase",
			event: bson.D{{Key: "_id", Value: token}, {Key: "operationType", Value: "dropDatabase"}, {Key: "clusterTime", Value: ts},
				{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}}}},
			check: func(t *testing.T, e Event) {
				if e.NS.String() != "bar" {
					t.Errorf("ns = %q", e.NS)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := FromChangeStream(mustRaw(t, tt.event))
			if err != nil {
				t.Fatal(err)
			}
			if e.ClusterTime != ts || !bytes.Equal(e.ResumeToken, token) {
				t.Errorf("cluster time or resume token lost: %v %v", e.ClusterTime, e.ResumeToken)
			}
			msg, err := Marshal(&e)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Unmarshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := Marshal(&back); !bytes.Equal(again, msg) {
				t.Errorf("round trip changed the message")
			}
			tt.check(t, back)
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	token := bson.D{{Key: "_data", Value: "00"}}
	ns := bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}
	key := bson.D{{Key: "_id", Value: int32(1)}}
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"not bson", []byte("{\"op\":\"insert\"}"), "not a BSON document"},
		{"future version", mustRaw(t, bson.D{{Key: "v", Value: int32(2)}, {Key: "op", Value: "insert"}, {Key: "ns", Value: ns}, {Key: "resumeToken", Value: token}}), "unknown message format version 2"},
		{"unknown op", mustRaw(t, bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "shardCollection"}, {Key: "ns", Value: ns}, {Key: "resumeToken", Value: token}}), "unknown operation type"},
		{"no collection", mustRaw(t, bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "delete"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}}}, {Key: "resumeToken", Value: token}, {Key: "documentKey", Value: key}}), "no namespace collection"},
		{"no document key", mustRaw(t, bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "delete"}, {Key: "ns", Value: ns}, {Key: "resumeToken", Value: token}}), "no documentKey"},
		{"insert without document", mustRaw(t, bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "insert"}, {Key: "ns", Value: ns}, {Key: "resumeToken", Value: token}, {Key: "documentKey", Value: key}}), "no fullDocument"},
		{"no resume token", mustRaw(t, bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "delete"}, {Key: "ns", Value: ns}, {Key: "documentKey", Value: key}}), "no resume token"},
		{"rename without target", mustRaw(t, bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "rename"}, {Key: "ns", Value: ns}, {Key: "resumeToken", Value: token}}), "no target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Unmarshal(tt.msg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func mustDec(t testing.TB, s string) primitive.Decimal128 {
	d, err := primitive.ParseDecimal128(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestKey(t *testing.T) {
	oid, _ := primitive.ObjectIDFromHex("62d70f2e9416e4a253875177")
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"objectid", Event{Operation: Insert, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: oid}})}, `bar|{"$oid":"62d70f2e9416e4a253875177"}`},
		{"int32", Event{Operation: Delete, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: int32(1)}})}, `bar|n:1`},
		{"int64 equal to the int32", Event{Operation: Delete, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: int64(1)}})}, `bar|n:1`},
		{"double equal to the int32", Event{Operation: Delete, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: 1.0}})}, `bar|n:1`},
		{"decimal equal to the int32", Event{Operation: Delete, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: mustDec(t, "1.000")}})}, `bar|n:1`},
		{"fractional double", Event{Operation: Delete, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: 2.5}})}, `bar|n:2.5`},
		{"string is not a number", Event{Operation: Delete, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: "1"}})}, `bar|"1"`},
		{"composite", Event{Operation: Update, NS: Namespace{"bar", "foo"}, DocumentKey: mustRaw(t, bson.D{{Key: "_id", Value: bson.D{{Key: "a", Value: "x"}}}})}, `bar|{"a":"x"}`},
		{"drop", Event{Operation: Drop, NS: Namespace{"bar", "foo"}}, `bar.foo`},
		{"dropDatabase", Event{Operation: DropDatabase, NS: Namespace{DB: "bar"}}, `bar`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Key(&tt.e)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Key = %s, want %s", got, tt.want)
			}
		})
	}
}

// The two benchmarks below are the measurement behind the choice of BSON over canonical
// Extended JSON for the message value (docs/message-format.md).
func sampleEvent(b *testing.B) Event {
	full := richDoc(b)
	return Event{Version: FormatVersion, Operation: Insert, NS: Namespace{"bar", "foo"},
		DocumentKey: mustRaw(b, bson.D{{Key: "_id", Value: full.Lookup("_id")}}), FullDocument: full,
		ClusterTime: primitive.Timestamp{T: 1658233222, I: 1}, ResumeToken: mustRaw(b, bson.D{{Key: "_data", Value: "8262D70F2E000000012B"}})}
}

func BenchmarkFormat(b *testing.B) {
	e := sampleEvent(b)
	b.Run("bson/encode+decode", func(b *testing.B) {
		msg, _ := Marshal(&e)
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			m, err := Marshal(&e)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Unmarshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("extjson/encode+decode", func(b *testing.B) {
		msg, _ := bson.MarshalExtJSON(&e, true, false)
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			m, err := bson.MarshalExtJSON(&e, true, false)
			if err != nil {
				b.Fatal(err)
			}
			var back Event
			if err := bson.UnmarshalExtJSON(m, true, &back); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUnmarshal measures what apply does per record to read a message value: validate it
// and decode it.
func BenchmarkUnmarshal(b *testing.B) {
	e := sampleEvent(b)
	msg, err := Marshal(&e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConvert measures what capture does per event: convert the driver's raw event and
// encode the message value.
func BenchmarkConvert(b *testing.B) {
	full := richDoc(b)
	raw := mustRaw(b, bson.D{{Key: "_id", Value: bson.D{{Key: "_data", Value: "8262D70F2E000000012B"}}},
		{Key: "operationType", Value: "update"}, {Key: "clusterTime", Value: primitive.Timestamp{T: 1658233222, I: 1}},
		{Key: "wallTime", Value: primitive.NewDateTimeFromTime(time.Unix(1658233222, 0))},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: full.Lookup("_id")}}}, {Key: "fullDocument", Value: full},
		{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "i32", Value: int32(8)}}}, {Key: "removedFields", Value: bson.A{"x"}}}}})
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		e, err := FromChangeStream(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Marshal(&e); err != nil {
			b.Fatal(err)
		}
		if _, err := Key(&e); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFromChangeStreamRejects(t *testing.T) {
	ns := bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"not bson", []byte{5, 0, 0, 0, 1}, "decode change stream event"},
		{"no resume token", mustRaw(t, bson.D{{Key: "operationType", Value: "insert"}, {Key: "ns", Value: ns}}), "no resume token"},
		{"resume token not a document", mustRaw(t, bson.D{{Key: "_id", Value: "x"}}), "not a document"},
		{"operationType not a string", mustRaw(t, bson.D{{Key: "_id", Value: bson.D{}}, {Key: "operationType", Value: int32(1)}}), "operationType is not a string"},
		{"clusterTime not a timestamp", mustRaw(t, bson.D{{Key: "_id", Value: bson.D{}}, {Key: "clusterTime", Value: int64(1)}}), "clusterTime is not a timestamp"},
		{"removedFields not strings", mustRaw(t, bson.D{{Key: "_id", Value: bson.D{}}, {Key: "updateDescription", Value: bson.D{{Key: "removedFields", Value: bson.A{int32(1)}}}}}), "non-string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromChangeStream(tt.raw)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestUnmarshalRawAndReflective: a message as Marshal writes it takes the raw decoder; anything
// else (another type, an unknown or repeated field) the reflective one; both decode the same.
func TestUnmarshalRawAndReflective(t *testing.T) {
	token := bson.D{{Key: "_data", Value: "00"}}
	ns := bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}
	key := bson.D{{Key: "_id", Value: int32(1)}}
	base := func(rest ...bson.E) bson.D {
		return append(bson.D{{Key: "v", Value: int32(1)}, {Key: "op", Value: "delete"}, {Key: "ns", Value: ns},
			{Key: "documentKey", Value: key}, {Key: "resumeToken", Value: token}}, rest...)
	}
	tests := []struct {
		name string
		msg  bson.D
		raw  bool // decodeMessage takes it
	}{
		{"as marshalled", base(bson.E{Key: "clusterTime", Value: primitive.Timestamp{T: 5, I: 1}}), true},
		{"nulls", base(bson.E{Key: "fullDocument", Value: nil}, bson.E{Key: "to", Value: nil}, bson.E{Key: "wallTime", Value: nil}), true},
		{"update", append(base(), bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "a", Value: "x"}}},
			{Key: "removedFields", Value: bson.A{}}, {Key: "truncatedArrays", Value: bson.A{bson.D{{Key: "field", Value: "arr"}, {Key: "newSize", Value: int32(2)}}}}}}), true},
		{"claim check", base(bson.E{Key: "claimCheck", Value: bson.D{{Key: "bucket", Value: "b"}, {Key: "key", Value: "k"}, {Key: "size", Value: int64(9)}, {Key: "sha256", Value: "00"}}}), true},
		{"version as int64", append(bson.D{{Key: "v", Value: int64(1)}}, base()[1:]...), false},
		{"claim size as int32", base(bson.E{Key: "claimCheck", Value: bson.D{{Key: "bucket", Value: "b"}, {Key: "size", Value: int32(9)}}}), false},
		{"unknown field", base(bson.E{Key: "extra", Value: true}), false},
		{"unknown namespace field", append(base()[:2], bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}, {Key: "x", Value: 1}}}, bson.E{Key: "documentKey", Value: key}, bson.E{Key: "resumeToken", Value: token}), false},
		{"repeated field", base(bson.E{Key: "op", Value: "delete"}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustRaw(t, tt.msg)
			if _, ok := decodeMessage(b); ok != tt.raw {
				t.Fatalf("decodeMessage took it: %v, want %v", ok, tt.raw)
			}
			agreesWithReflection(t, b)
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := unmarshalReflect(b)
			if err != nil {
				t.Fatal(err)
			}
			ref.normalize()
			if !reflect.DeepEqual(got, ref) {
				t.Errorf("Unmarshal = %+v\nwant       %+v", got, ref)
			}
		})
	}
}

// TestInternedString: the interned string is the value's own, for any string (and any other type
// is refused as StringValueOK refuses it), the first time and the next.
func TestInternedString(t *testing.T) {
	for _, v := range []any{"insert", "", "数据库", strings.Repeat("x", maxNameLen), strings.Repeat("y", maxNameLen+1), int32(7), nil} {
		raw := mustRaw(t, bson.D{{Key: "s", Value: v}})
		val := bsoncore.Document(raw).Lookup("s")
		want, wantOK := val.StringValueOK()
		for range 2 {
			got, ok := internedString(val)
			if got != want || ok != wantOK {
				t.Errorf("internedString(%v) = %q, %v; want %q, %v", v, got, ok, want, wantOK)
			}
		}
	}
}
