package changeevent

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

func TestApplyTo(t *testing.T) {
	base := bson.D{
		{Key: "_id", Value: int32(1)},
		{Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}, {Key: "c", Value: "x"}}},
		{Key: "arr", Value: bson.A{int32(1), bson.D{{Key: "n", Value: "one"}}, int32(3)}},
		{Key: "s", Value: "str"},
		{Key: "nul", Value: nil},
	}
	tests := []struct {
		name    string
		set     bson.D
		removed []string
		trunc   []TruncatedArray
		want    bson.D // nil: an error is expected
		wantErr string
	}{
		{name: "set existing field keeps its position", set: bson.D{{Key: "s", Value: int64(9)}},
			want: bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}, {Key: "c", Value: "x"}}},
				{Key: "arr", Value: bson.A{int32(1), bson.D{{Key: "n", Value: "one"}}, int32(3)}}, {Key: "s", Value: int64(9)}, {Key: "nul", Value: nil}}},
		{name: "new fields are appended in updatedFields order", set: bson.D{{Key: "z", Value: 1.5}, {Key: "m", Value: true}},
			want: append(clone(base), bson.E{Key: "z", Value: 1.5}, bson.E{Key: "m", Value: true})},
		{name: "dotted path into an embedded document", set: bson.D{{Key: "a.b", Value: "B"}, {Key: "a.new", Value: int32(5)}},
			want: bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: "B"}, {Key: "c", Value: "x"}, {Key: "new", Value: int32(5)}}},
				{Key: "arr", Value: bson.A{int32(1), bson.D{{Key: "n", Value: "one"}}, int32(3)}}, {Key: "s", Value: "str"}, {Key: "nul", Value: nil}}},
		{name: "intermediate documents are created, numeric segments as field names", set: bson.D{{Key: "p.q.0", Value: int32(1)}},
			want: append(clone(base), bson.E{Key: "p", Value: bson.D{{Key: "q", Value: bson.D{{Key: "0", Value: int32(1)}}}}})},
		{name: "array element and a field inside one", set: bson.D{{Key: "arr.0", Value: "zero"}, {Key: "arr.1.n", Value: "ONE"}},
			want: bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}, {Key: "c", Value: "x"}}},
				{Key: "arr", Value: bson.A{"zero", bson.D{{Key: "n", Value: "ONE"}}, int32(3)}}, {Key: "s", Value: "str"}, {Key: "nul", Value: nil}}},
		{name: "index past the end pads with nulls", set: bson.D{{Key: "arr.5", Value: int32(6)}, {Key: "arr.7.k", Value: int32(8)}},
			want: bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}, {Key: "c", Value: "x"}}},
				{Key: "arr", Value: bson.A{int32(1), bson.D{{Key: "n", Value: "one"}}, int32(3), nil, nil, int32(6), nil, bson.D{{Key: "k", Value: int32(8)}}}},
				{Key: "s", Value: "str"}, {Key: "nul", Value: nil}}},
		{name: "unset removes a field, nulls an array element, ignores what is absent", removed: []string{"a.c", "arr.0", "nope", "s.x", "arr.9"},
			want: bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}}},
				{Key: "arr", Value: bson.A{nil, bson.D{{Key: "n", Value: "one"}}, int32(3)}}, {Key: "s", Value: "str"}, {Key: "nul", Value: nil}}},
		{name: "truncation first, then a set inside the cut array", trunc: []TruncatedArray{{Field: "arr", NewSize: 1}}, set: bson.D{{Key: "arr.1", Value: "new"}},
			want: bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}, {Key: "c", Value: "x"}}},
				{Key: "arr", Value: bson.A{int32(1), "new"}}, {Key: "s", Value: "str"}, {Key: "nul", Value: nil}}},
		{name: "truncation to a larger size changes nothing", trunc: []TruncatedArray{{Field: "arr", NewSize: 10}}, want: clone(base)},
		{name: "set _id to its own value is allowed", set: bson.D{{Key: "_id", Value: int32(1)}}, want: clone(base)},
		{name: "set _id to another value", set: bson.D{{Key: "_id", Value: int32(2)}}, wantErr: "would change _id"},
		{name: "unset _id", removed: []string{"_id"}, wantErr: "would remove _id"},
		{name: "path through a scalar", set: bson.D{{Key: "s.x", Value: 1}}, wantErr: "cannot descend"},
		{name: "path through null", set: bson.D{{Key: "nul.x", Value: 1}}, wantErr: "cannot descend"},
		{name: "non-numeric segment into an array", set: bson.D{{Key: "arr.x", Value: 1}}, wantErr: "not an array index"},
		{name: "zero-padded index", set: bson.D{{Key: "arr.01", Value: 1}}, wantErr: "not an array index"},
		{name: "$-prefixed segment", set: bson.D{{Key: "$x", Value: 1}}, wantErr: "$-prefixed"},
		{name: "empty segment", set: bson.D{{Key: "a..b", Value: 1}}, wantErr: "empty path segment"},
		{name: "truncation of a missing field", trunc: []TruncatedArray{{Field: "zz", NewSize: 0}}, wantErr: "no such field"},
		{name: "truncation of a document", trunc: []TruncatedArray{{Field: "a", NewSize: 0}}, wantErr: "not an array"},
		{name: "padding beyond the limit", set: bson.D{{Key: "arr.2000000", Value: 1}}, wantErr: "pad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := mustRaw(t, base)
			before := bytes.Clone(doc)
			set := tt.set
			if set == nil {
				set = bson.D{}
			}
			ud := &UpdateDescription{UpdatedFields: mustRaw(t, set), RemovedFields: tt.removed, TruncatedArrays: tt.trunc}
			got, err := ud.ApplyTo(doc)
			if !bytes.Equal(doc, before) {
				t.Fatal("ApplyTo modified its input")
			}
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInapplicable) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInapplicable with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := mustRaw(t, tt.want); !bytes.Equal(got, want) {
				t.Errorf("post-image\n got %s\nwant %s", got, want)
			}
		})
	}
}

func clone(d bson.D) bson.D { return append(bson.D(nil), d...) }

// TestApplyToAmbiguousDottedFieldNames: a document may hold a field whose name contains a dot
// (MongoDB 5.0+ allows it); a dotted path that could mean that field is refused, not guessed.
func TestApplyToAmbiguousDottedFieldNames(t *testing.T) {
	doc := mustRaw(t, bson.D{{Key: "_id", Value: 1}, {Key: "a.b", Value: 1}, {Key: "a", Value: bson.D{{Key: "b", Value: 2}}}})
	for _, path := range []string{"a.b", "a.b.c"} {
		ud := &UpdateDescription{UpdatedFields: mustRaw(t, bson.D{{Key: path, Value: 3}})}
		if _, err := ud.ApplyTo(doc); err == nil || !strings.Contains(err.Error(), "ambiguous") {
			t.Errorf("%s: err = %v, want ambiguous", path, err)
		}
	}
	ud := &UpdateDescription{UpdatedFields: mustRaw(t, bson.D{{Key: "a.c", Value: 3}})}
	if _, err := ud.ApplyTo(doc); err != nil {
		t.Errorf("a.c is not ambiguous: %v", err)
	}
}

// TestApplyToKeepsUntouchedBytes: values the update does not touch, including doubles whose bits
// matter (NaN payloads, negative zero) and types that have no Go equivalent, are copied as bytes.
func TestApplyToKeepsUntouchedBytes(t *testing.T) {
	dec, _ := primitive.ParseDecimal128("-0.00")
	doc := mustRaw(t, bson.D{
		{Key: "_id", Value: primitive.NewObjectID()},
		{Key: "nan", Value: math.Float64frombits(0x7ff8000000000abc)},
		{Key: "negzero", Value: math.Copysign(0, -1)},
		{Key: "dec", Value: dec},
		{Key: "nested", Value: bson.D{{Key: "x", Value: bson.A{primitive.MinKey{}, primitive.Undefined{}}}, {Key: "y", Value: int32(1)}}},
		{Key: "cws", Value: primitive.CodeWithScope{Code: "f", Scope: bson.D{{Key: "a", Value: 1}}}},
	})
	ud := &UpdateDescription{UpdatedFields: mustRaw(t, bson.D{{Key: "nested.y", Value: int32(2)}})}
	got, err := ud.ApplyTo(doc)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Replace(doc, []byte("y\x00\x01\x00\x00\x00"), []byte("y\x00\x02\x00\x00\x00"), 1)
	if !bytes.Equal(got, want) {
		t.Errorf("bytes differ\n got %x\nwant %x", got, want)
	}
}

func TestEventID(t *testing.T) {
	a := Event{ResumeToken: mustRaw(t, bson.D{{Key: "_data", Value: "8262D70F2E000000012B"}})}
	b := Event{ResumeToken: mustRaw(t, bson.D{{Key: "_data", Value: "8262D70F2E000000022B"}})}
	// The first 16 bytes of the SHA-256 of the token's BSON, in hex, computed independently
	// (Python's hashlib over the hand-encoded document).
	if got, want := a.EventID(), "514a455995a88364b5ec969e4b1d61d5"; got != want {
		t.Fatalf("EventID = %q, want %q", got, want)
	}
	if a.EventID() == b.EventID() {
		t.Error("two resume tokens give one EventID")
	}
	c := a
	c.NS = Namespace{DB: "other"} // a copy of the same event (a barrier copy, a republish)
	if c.EventID() != a.EventID() {
		t.Error("the same resume token gives two EventIDs")
	}
}

// FuzzApplyTo: whatever the document and the update description hold, ApplyTo does not panic,
// and what it returns is one well-formed BSON document.
func FuzzApplyTo(f *testing.F) {
	doc, _ := bson.Marshal(bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: bson.D{{Key: "b", Value: bson.A{1, 2}}}}, {Key: "c.d", Value: 1}})
	set, _ := bson.Marshal(bson.D{{Key: "a.b.3", Value: "x"}, {Key: "n.m", Value: 1}})
	f.Add([]byte(doc), []byte(set), "a.b.0", "a.b", int32(1))
	f.Add([]byte(doc), []byte(set), "c.d", "zz", int32(-1))
	f.Fuzz(func(t *testing.T, doc, set []byte, removed, truncated string, size int32) {
		if validate(doc) != nil || validate(set) != nil {
			return // decode refuses these before apply sees them
		}
		ud := &UpdateDescription{UpdatedFields: set, RemovedFields: []string{removed}, TruncatedArrays: []TruncatedArray{{Field: truncated, NewSize: size}}}
		out, err := ud.ApplyTo(doc)
		if err != nil {
			return
		}
		if verr := validate(out); verr != nil {
			t.Fatalf("ApplyTo returned malformed BSON: %v", verr)
		}
	})
}
