package changeevent

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// The fuzz targets of the message format. Their seed corpora are under testdata/fuzz/ (and
// repeated by f.Add); `go test` runs the seeds, `go test -fuzz FuzzUnmarshal` explores.

// fuzzSeeds are change events as the primary's change stream delivers them: every operation
// type, rich BSON, odd _ids, a claim-check stub.
func fuzzSeeds() []bson.D {
	token := bson.D{{Key: "_data", Value: "8262D70F2E000000012B022C0100296E5A1004"}}
	ts := primitive.Timestamp{T: 1658233222, I: 1}
	ns := bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}
	dec, _ := primitive.ParseDecimal128("1234.5678")
	full := bson.D{
		{Key: "_id", Value: primitive.ObjectID{1, 2, 3}},
		{Key: "i32", Value: int32(7)}, {Key: "i64", Value: int64(7)}, {Key: "f64", Value: 7.5},
		{Key: "dec", Value: dec},
		{Key: "date", Value: primitive.NewDateTimeFromTime(time.Date(2022, 7, 19, 20, 20, 22, 0, time.UTC))},
		{Key: "bin", Value: primitive.Binary{Subtype: 4, Data: bytes.Repeat([]byte{1}, 16)}},
		{Key: "nested", Value: bson.D{{Key: "a", Value: bson.A{int32(1), "x", bson.D{{Key: "b", Value: nil}}}}}},
		{Key: "unicode", Value: "数据库 ✓"},
	}
	key := func(id any) bson.D { return bson.D{{Key: "_id", Value: id}} }
	base := func(op string, rest ...bson.E) bson.D {
		return append(bson.D{{Key: "_id", Value: token}, {Key: "operationType", Value: op}, {Key: "clusterTime", Value: ts},
			{Key: "wallTime", Value: primitive.NewDateTimeFromTime(time.Unix(1658233222, 0))}, {Key: "ns", Value: ns}}, rest...)
	}
	return []bson.D{
		base("insert", bson.E{Key: "documentKey", Value: key(full[0].Value)}, bson.E{Key: "fullDocument", Value: full}),
		base("update", bson.E{Key: "documentKey", Value: key(int32(1))},
			bson.E{Key: "updateDescription", Value: bson.D{
				{Key: "updatedFields", Value: bson.D{{Key: "a.b", Value: int64(2)}, {Key: "arr.3", Value: "x"}}},
				{Key: "removedFields", Value: bson.A{"gone"}},
				{Key: "truncatedArrays", Value: bson.A{bson.D{{Key: "field", Value: "arr"}, {Key: "newSize", Value: int32(2)}}}},
			}},
			bson.E{Key: "fullDocument", Value: nil}),
		base("replace", bson.E{Key: "documentKey", Value: key(dec)}, bson.E{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: dec}, {Key: "v", Value: true}}}),
		base("delete", bson.E{Key: "documentKey", Value: key(bson.D{{Key: "a", Value: int32(1)}, {Key: "b", Value: "c"}})}),
		base("drop"),
		base("rename", bson.E{Key: "to", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo2"}}}),
		{{Key: "_id", Value: token}, {Key: "operationType", Value: "dropDatabase"}, {Key: "clusterTime", Value: ts}, {Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}}}},
		base("invalidate"),
	}
}

// messageSeeds are published messages: the seeds converted, plus a claim-check stub.
func messageSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, d := range fuzzSeeds() {
		raw, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := FromChangeStream(raw)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
		if ev.Operation == Insert {
			ev.FullDocument = nil
			ev.ClaimCheck = &ClaimCheck{Bucket: "b", Key: "docdbdr/claimcheck/x.bson", Size: 10, SHA256: "00ff"}
			stub, err := Marshal(&ev)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, stub)
		}
	}
	return out
}

// FuzzUnmarshal: Unmarshal never panics on any bytes, and a message it accepts re-marshals
// consistently — Marshal succeeds, the result is accepted again and describes the same event,
// and marshalling that gives the same bytes (one round trip reaches a fixed point). Key and
// Headers work on every accepted message.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range messageSeeds(f) {
		f.Add(m)
	}
	f.Add([]byte{})
	f.Add([]byte{5, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		agreesWithReflection(t, b)
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		m1, err := Marshal(&e)
		if err != nil {
			t.Fatalf("accepted message does not marshal: %v", err)
		}
		e2, err := Unmarshal(m1)
		if err != nil {
			t.Fatalf("re-marshalled message is refused: %v\n%x", err, m1)
		}
		sameEvent(t, e, e2)
		m2, err := Marshal(&e2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m1, m2) {
			t.Fatalf("marshal is not stable:\n%x\n%x", m1, m2)
		}
		if _, err := Key(&e); err != nil && e.ClaimCheck == nil {
			t.Fatalf("accepted message has no key: %v", err)
		}
		_ = Headers(&e)
	})
}

// FuzzFromChangeStream: converting any document from a change stream never panics; an event it
// converts and that validates survives Marshal and Unmarshal unchanged.
func FuzzFromChangeStream(f *testing.F) {
	for _, d := range fuzzSeeds() {
		raw, err := bson.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if validate(b) != nil {
			return // the driver hands over only valid documents (its own Validate panics on some bytes)
		}
		e, err := FromChangeStream(b)
		if err != nil || e.Validate() != nil {
			return
		}
		m, err := Marshal(&e)
		if err != nil {
			t.Fatalf("converted event does not marshal: %v", err)
		}
		e2, err := Unmarshal(m)
		if err != nil {
			t.Fatalf("converted, valid event is refused after marshalling: %v", err)
		}
		sameEvent(t, e, e2)
	})
}

// sameEvent compares the fields a consumer uses.
func sameEvent(t *testing.T, a, b Event) {
	t.Helper()
	switch {
	case a.Version != b.Version, a.Operation != b.Operation, a.NS != b.NS, a.ClusterTime != b.ClusterTime:
		t.Fatalf("header fields changed: %+v vs %+v", a, b)
	case !bytes.Equal(a.DocumentKey, b.DocumentKey), !bytes.Equal(a.FullDocument, b.FullDocument), !bytes.Equal(a.ResumeToken, b.ResumeToken):
		t.Fatalf("document key, full document or resume token changed")
	case (a.To == nil) != (b.To == nil), a.To != nil && *a.To != *b.To:
		t.Fatalf("rename target changed: %v vs %v", a.To, b.To)
	case (a.ClaimCheck == nil) != (b.ClaimCheck == nil), a.ClaimCheck != nil && *a.ClaimCheck != *b.ClaimCheck:
		t.Fatalf("claim check changed: %v vs %v", a.ClaimCheck, b.ClaimCheck)
	case !a.WallTime.Equal(b.WallTime):
		t.Fatalf("wall time changed: %v vs %v", a.WallTime, b.WallTime)
	case (a.UpdateDescription == nil) != (b.UpdateDescription == nil):
		t.Fatalf("update description appeared or vanished")
	}
	if ua, ub := a.UpdateDescription, b.UpdateDescription; ua != nil {
		if !bytes.Equal(ua.UpdatedFields, ub.UpdatedFields) || len(ua.RemovedFields) != len(ub.RemovedFields) || len(ua.TruncatedArrays) != len(ub.TruncatedArrays) {
			t.Fatalf("update description changed: %+v vs %+v", ua, ub)
		}
		for i := range ua.RemovedFields {
			if ua.RemovedFields[i] != ub.RemovedFields[i] {
				t.Fatalf("removed fields changed: %v vs %v", ua.RemovedFields, ub.RemovedFields)
			}
		}
		for i := range ua.TruncatedArrays {
			if ua.TruncatedArrays[i] != ub.TruncatedArrays[i] {
				t.Fatalf("truncated arrays changed: %v vs %v", ua.TruncatedArrays, ub.TruncatedArrays)
			}
		}
	}
}

// agreesWithReflection fails when the raw decoder accepts b and decodes it otherwise than the
// driver's reflective decoder into Event, the reference.
func agreesWithReflection(t *testing.T, b []byte) {
	t.Helper()
	if validate(b) != nil {
		return
	}
	fast, ok := decodeMessage(b)
	if !ok {
		return
	}
	ref, err := unmarshalReflect(b)
	if err != nil {
		t.Fatalf("raw decoder accepts what the reflective decoder refuses (%v):\n%x", err, b)
	}
	fast.normalize()
	ref.normalize()
	if !reflect.DeepEqual(fast, ref) {
		t.Fatalf("raw and reflective decoders disagree:\nraw  %+v\nrefl %+v\n%x", fast, ref, b)
	}
}
