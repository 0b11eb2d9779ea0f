package conformance

// What a server refuses to store: documents nested too deep, and the field names each server
// version refuses ("$"-prefixed, dotted), with the error codes the servers answer.
//
// Sources:
//   - MongoDB manual, reference/limits: "Nested Depth for BSON Documents: MongoDB supports no
//     more than 100 levels of nesting". mongod refuses a deeper document with Overflow (15);
//     the cap it enforces is maxBSONDepth - 20, 180 with the default server parameters.
//   - MongoDB 4.0 manual, reference/limits "Restrictions on Field Names": top-level field
//     names cannot start with "$"; otherwise, since 3.6, the server permits storage of field
//     names that contain dots and dollar signs. A document an update writes may hold no
//     "$"-prefixed name except the DBRef fields ($ref, $id, $db in that order):
//     DollarPrefixedFieldName (52), InvalidDBRef (55); an insert's top-level "$" name is
//     BadValue (2), "Document can't have $ prefixed field names".
//   - MongoDB 5.0+ manual, core/dot-dollar-considerations ("Field Names with Periods and Dollar
//     Signs", "Dollar-Prefixed Field Names"): "$"-prefixed fields are permitted as top-level
//     and nested field names for inserts, and an update that creates a document during an
//     upsert is treated as an insert; an update that replaces a document, or modifies one,
//     cannot write a top-level "$"-prefixed field (52). Dotted names are stored.
//   - Amazon DocumentDB developer guide, functional differences: DocumentDB 4.0 does not
//     support dots in field names nor "$"-prefixed field names. The guide does not give the
//     reply, so the cases expect MongoDB's codes for the same refusals (2, 52, and
//     DottedFieldName 57).

import (
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// nameRules is the field-name behaviour of one server version.
type nameRules int

const (
	mongoDB40 nameRules = iota
	documentDB40
	mongoDB50
)

func (r nameRules) String() string {
	return [...]string{"MongoDB 4.0", "DocumentDB 4.0", "MongoDB 5.0+"}[r]
}

// storageServer is one server the storage cases run against, with the rules it must follow.
type storageServer struct {
	name  string
	uri   func(t *testing.T) string
	rules func(wire int32) nameRules
}

// storageServers are the server under test (a real deployment when DOCDBDR_CONFORMANCE_URI
// is set, judged by the wire version it reports), an embedded server reporting wire 13
// (MongoDB 5.0), and a DocumentDB-mode server (a real cluster when
// DOCDBDR_CONFORMANCE_DOCUMENTDB_URI is set).
var storageServers = []storageServer{
	{"server under test", serverURI, func(wire int32) nameRules {
		if wire >= 13 {
			return mongoDB50
		}
		return mongoDB40
	}},
	{"wire 13", func(t *testing.T) string { return dedicatedServerWire(t, 13) }, func(int32) nameRules { return mongoDB50 }},
	{"DocumentDB", documentDBURI, func(wire int32) nameRules {
		if wire >= 13 {
			return mongoDB50
		}
		return documentDB40
	}},
}

// forEachStorageServer runs f as a subtest against every storage server.
func forEachStorageServer(t *testing.T, f func(t *testing.T, coll *mongo.Collection, rules nameRules)) {
	for _, s := range storageServers {
		t.Run(s.name, func(t *testing.T) {
			ctx := testContext(t)
			client := connect(t, s.uri(t))
			rules := s.rules(maxWireVersion(t, ctx, client))
			t.Logf("rules: %s", rules)
			f(t, testDB(t, client).Collection("c"), rules)
		})
	}
}

// nested is a document `levels` levels deep, counting itself: nested(1) = {v: 1},
// nested(2) = {a: {v: 1}}. With arrays, each level below the top is an array instead:
// {a: [[...[1]...]]}.
func nested(levels int, arrays bool) bson.D {
	if arrays {
		var v any = bson.A{1}
		for i := 2; i < levels; i++ {
			v = bson.A{v}
		}
		if levels == 1 {
			return doc("v", 1)
		}
		return doc("a", v)
	}
	d := doc("v", 1)
	for i := 1; i < levels; i++ {
		d = doc("a", d)
	}
	return d
}

// TestNestingDepth: a document of 100 levels (the manual's limit) is stored; a deeper one is
// refused with Overflow (15), on insert and when an update would make it deeper. Each
// non-empty embedded document or array is a level; empty ones do not count. The embedded
// servers refuse level 101; a real mongod's cap is 180 by default, so against a real
// deployment the 101-level cases are skipped and a 181-level document, beyond either limit,
// stands in.
func TestNestingDepth(t *testing.T) {
	withID := func(d bson.D) bson.D { return append(doc("_id", 1), d...) }
	over := func(t *testing.T) int {
		if external() || documentDBExternal() {
			return 181
		}
		return 101
	}
	forEachStorageServer(t, func(t *testing.T, coll *mongo.Collection, _ nameRules) {
		ctx := testContext(t)
		deep := over(t)

		_, err := coll.InsertOne(ctx, withID(nested(100, false)))
		requireNoError(t, err, "insert of a document 100 levels deep")
		var got bson.Raw
		requireNoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got), "read back")
		requireDoc(t, got, withID(nested(100, false)), true, "100-level document")

		// 100 levels plus an empty document and an empty array at level 101.
		flat := doc("e", bson.D{}, "ea", bson.A{})
		var inner = flat
		for i := 1; i < 100; i++ {
			inner = doc("a", inner)
		}
		_, err = coll.InsertOne(ctx, append(doc("_id", 2), inner...))
		requireNoError(t, err, "insert of 100 levels with empty documents below (they add no level)")

		for _, arrays := range []bool{false, true} {
			_, err = coll.InsertOne(ctx, append(doc("_id", fmt.Sprintf("deep-%v", arrays)), nested(deep, arrays)...))
			requireCode(t, err, fmt.Sprintf("insert of a document %d levels deep (arrays %v)", deep, arrays), 15)
		}

		// $set a: <deep-1 levels> at the top level makes the document deep levels deep.
		_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("a", nested(deep-1, false))))
		requireCode(t, err, fmt.Sprintf("update making the document %d levels deep", deep), 15)
		_, err = coll.ReplaceOne(ctx, doc("_id", 1), nested(deep, false))
		requireCode(t, err, fmt.Sprintf("replacement %d levels deep", deep), 15)
		requireNoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got), "read back after the refused updates")
		requireDoc(t, got, withID(nested(100, false)), true, "document after the refused updates")
	})
}

// outcome is what one server version does with a write: 0 stores it, anything else is the
// error code it answers.
type outcome map[nameRules]int

// TestFieldNameRules checks every rule of the header on each server: inserts, replacements
// and operator updates of an existing document, and upserts that insert, with "$"-prefixed,
// dotted and DBRef field names at the top level and nested. What a server stores it must
// store byte for byte.
func TestFieldNameRules(t *testing.T) {
	const ok = 0
	existing := doc("_id", 1, "v", 1)
	cases := []struct {
		name string
		// Exactly one of insert, replace, set is given; upsert makes replace or set an upsert
		// that matches nothing.
		insert, replace, set bson.D
		upsert               bool
		want                 outcome
		stored               bson.D // the stored document when accepted; default: the inserted one
	}{
		{name: "insert top-level $ field", insert: doc("_id", 1, "$price", 50),
			want: outcome{mongoDB40: 2, documentDB40: 2, mongoDB50: ok}},
		{name: "insert nested $ field", insert: doc("_id", 1, "a", doc("$x", 1)),
			want: outcome{mongoDB40: ok, documentDB40: 52, mongoDB50: ok}},
		{name: "insert $ field in an array element", insert: doc("_id", 1, "a", bson.A{doc("$x", 1)}),
			want: outcome{mongoDB40: ok, documentDB40: 52, mongoDB50: ok}},
		{name: "insert top-level dotted field", insert: doc("_id", 1, "price.usd", 45.99),
			want: outcome{mongoDB40: ok, documentDB40: 57, mongoDB50: ok}},
		{name: "insert nested dotted field", insert: doc("_id", 1, "a", doc("b.c", 1)),
			want: outcome{mongoDB40: ok, documentDB40: 57, mongoDB50: ok}},
		{name: "insert nested DBRef", insert: doc("_id", 1, "owner", doc("$ref", "users", "$id", 7, "$db", "app")),
			want: outcome{mongoDB40: ok, documentDB40: ok, mongoDB50: ok}},

		{name: "replace with a top-level $ field", replace: doc("v", 2, "$x", 1),
			want: outcome{mongoDB40: 52, documentDB40: 52, mongoDB50: 52}},
		{name: "replace with a nested $ field", replace: doc("v", 2, "a", doc("$x", 1)),
			want:   outcome{mongoDB40: 52, documentDB40: 52, mongoDB50: ok},
			stored: doc("_id", 1, "v", 2, "a", doc("$x", 1))},
		{name: "replace with a dotted field", replace: doc("v", 2, "a.b", 1),
			want:   outcome{mongoDB40: ok, documentDB40: 57, mongoDB50: ok},
			stored: doc("_id", 1, "v", 2, "a.b", 1)},
		{name: "replace with a nested DBRef", replace: doc("v", 2, "owner", doc("$ref", "users", "$id", 7)),
			want:   outcome{mongoDB40: ok, documentDB40: ok, mongoDB50: ok},
			stored: doc("_id", 1, "v", 2, "owner", doc("$ref", "users", "$id", 7))},
		{name: "replace with DBRef fields out of order", replace: doc("v", 2, "owner", doc("$id", 7, "$ref", "users")),
			want:   outcome{mongoDB40: 55, documentDB40: 55, mongoDB50: ok},
			stored: doc("_id", 1, "v", 2, "owner", doc("$id", 7, "$ref", "users"))},
		{name: "replace with a $ref not followed by $id", replace: doc("v", 2, "owner", doc("$ref", "users", "n", 7)),
			want:   outcome{mongoDB40: 55, documentDB40: 55, mongoDB50: ok},
			stored: doc("_id", 1, "v", 2, "owner", doc("$ref", "users", "n", 7))},
		{name: "replace with a $ref that is not a string", replace: doc("v", 2, "owner", doc("$ref", 1, "$id", 7)),
			want:   outcome{mongoDB40: 55, documentDB40: 55, mongoDB50: ok},
			stored: doc("_id", 1, "v", 2, "owner", doc("$ref", 1, "$id", 7))},
		{name: "upsert replacement with a top-level $ field", replace: doc("v", 2, "$x", 1), upsert: true,
			want:   outcome{mongoDB40: 52, documentDB40: 52, mongoDB50: ok},
			stored: doc("_id", 9, "v", 2, "$x", 1)},

		{name: "$set a top-level $ field", set: doc("$x", 1),
			want: outcome{mongoDB40: 52, documentDB40: 52, mongoDB50: 52}},
		{name: "$set a value holding a $ field", set: doc("a", doc("$x", 1)),
			want:   outcome{mongoDB40: 52, documentDB40: 52, mongoDB50: ok},
			stored: doc("_id", 1, "v", 1, "a", doc("$x", 1))},
		{name: "$set a value holding a dotted field", set: doc("a", doc("b.c", 1)),
			want:   outcome{mongoDB40: ok, documentDB40: 57, mongoDB50: ok},
			stored: doc("_id", 1, "v", 1, "a", doc("b.c", 1))},
		{name: "upsert $set of a value holding a $ field", set: doc("a", doc("$x", 1)), upsert: true,
			want:   outcome{mongoDB40: 52, documentDB40: 52, mongoDB50: ok},
			stored: doc("_id", 9, "a", doc("$x", 1))},
	}
	forEachStorageServer(t, func(t *testing.T, coll *mongo.Collection, rules nameRules) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx := testContext(t)
				_, err := coll.DeleteMany(ctx, bson.D{})
				requireNoError(t, err, "clear the collection")
				if tc.insert == nil && !tc.upsert {
					_, err = coll.InsertOne(ctx, existing)
					requireNoError(t, err, "seed the document to update")
				}
				id := any(1)
				switch {
				case tc.insert != nil:
					_, err = coll.InsertOne(ctx, tc.insert)
				case tc.replace != nil:
					if tc.upsert {
						id = 9
					}
					_, err = coll.ReplaceOne(ctx, doc("_id", id), tc.replace, options.Replace().SetUpsert(tc.upsert))
				default:
					if tc.upsert {
						id = 9
					}
					_, err = coll.UpdateOne(ctx, doc("_id", id), doc("$set", tc.set), options.Update().SetUpsert(tc.upsert))
				}
				want := tc.want[rules]
				if want != ok {
					requireCode(t, err, tc.name, want)
					return
				}
				requireNoError(t, err, tc.name)
				stored := tc.stored
				if stored == nil {
					stored = tc.insert
				}
				var got bson.Raw
				requireNoError(t, coll.FindOne(ctx, doc("_id", id)).Decode(&got), "read back")
				requireDoc(t, got, stored, true, "stored document")
			})
		}
	})
}

// TestFieldNamesOnlyModifiedPathsChecked: an operator update is validated on the fields it
// writes, not on the rest of the document, so a document that holds a nested "$" field (which
// an insert may store on MongoDB) can still be updated elsewhere (mongod validates the modified
// elements only).
func TestFieldNamesOnlyModifiedPathsChecked(t *testing.T) {
	forEachStorageServer(t, func(t *testing.T, coll *mongo.Collection, rules nameRules) {
		if rules == documentDB40 {
			t.Skip("DocumentDB 4.0 stores no \"$\"-prefixed field to begin with")
		}
		ctx := testContext(t)
		_, err := coll.InsertOne(ctx, doc("_id", 1, "a", doc("$x", 1), "v", 1))
		requireNoError(t, err, "insert with a nested $ field")
		_, err = coll.UpdateOne(ctx, doc("_id", 1), doc("$set", doc("v", 2)))
		requireNoError(t, err, "$set of another field")
		var got bson.Raw
		requireNoError(t, coll.FindOne(ctx, doc("_id", 1)).Decode(&got), "read back")
		requireDoc(t, got, doc("_id", 1, "a", doc("$x", 1), "v", 2), true, "updated document")
	})
}
