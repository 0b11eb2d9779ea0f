package conformance

// Collection and database management: create, listCollections, drop, dropDatabase,
// renameCollection, createIndexes / listIndexes / dropIndexes.

import (
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// TestListCollections: collections created explicitly and implicitly (by a first insert) are
// listed; the filter narrows by name; nameOnly returns just name and type
// (manual: reference/command/listCollections).
func TestListCollections(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	requireNoError(t, db.CreateCollection(ctx, "alpha"), "create alpha")
	requireNoError(t, db.CreateCollection(ctx, "beta"), "create beta")
	_, err := db.Collection("gamma").InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
	requireNoError(t, err, "insert into gamma (implicit creation)")

	cases := []struct {
		name   string
		filter bson.D
		want   []string
	}{
		{"all", bson.D{}, []string{"alpha", "beta", "gamma"}},
		{"by name", bson.D{{Key: "name", Value: "beta"}}, []string{"beta"}},
		{"by name $in", bson.D{{Key: "name", Value: bson.D{{Key: "$in", Value: bson.A{"alpha", "gamma", "zeta"}}}}}, []string{"alpha", "gamma"}},
		{"no match", bson.D{{Key: "name", Value: "zeta"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			names, err := db.ListCollectionNames(ctx, tc.filter)
			requireNoError(t, err, "listCollections")
			requireStrings(t, sortedStrings(names), tc.want, "collection names")
		})
	}

	t.Run("full entries", func(t *testing.T) {
		cur, err := db.ListCollections(ctx, bson.D{{Key: "name", Value: "alpha"}})
		requireNoError(t, err, "listCollections")
		var entries []bson.Raw
		requireNoError(t, cur.All(ctx, &entries), "read listCollections cursor")
		if len(entries) != 1 {
			t.Fatalf("got %d entries, want 1", len(entries))
		}
		e := entries[0]
		if e.Lookup("name").StringValue() != "alpha" || e.Lookup("type").StringValue() != "collection" {
			t.Errorf("entry = %s, want name alpha and type collection", e)
		}
		if _, ok := e.Lookup("options").DocumentOK(); !ok {
			t.Errorf("entry = %s, want an options document", e)
		}
	})

	t.Run("nameOnly", func(t *testing.T) {
		cur, err := db.ListCollections(ctx, bson.D{{Key: "name", Value: "gamma"}}, options.ListCollections().SetNameOnly(true))
		requireNoError(t, err, "listCollections nameOnly")
		var entries []bson.Raw
		requireNoError(t, cur.All(ctx, &entries), "read listCollections cursor")
		if len(entries) != 1 {
			t.Fatalf("got %d entries, want 1", len(entries))
		}
		requireDoc(t, entries[0], bson.D{{Key: "name", Value: "gamma"}, {Key: "type", Value: "collection"}}, false, "nameOnly entry")
	})
}

// TestCreateCollection: create makes an empty collection; creating an existing collection
// with different options fails with NamespaceExists (48). With identical options MongoDB 7.0+
// returns success and earlier versions NamespaceExists, so both are accepted there
// (manual: reference/command/create, "create" field).
func TestCreateCollection(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	requireNoError(t, db.CreateCollection(ctx, "c"), "create c")

	names, err := db.ListCollectionNames(ctx, bson.D{})
	requireNoError(t, err, "listCollections")
	requireStrings(t, names, []string{"c"}, "collections after create")
	n, err := db.Collection("c").CountDocuments(ctx, bson.D{})
	requireNoError(t, err, "count")
	if n != 0 {
		t.Errorf("new collection has %d documents, want 0", n)
	}

	err = db.CreateCollection(ctx, "c", options.CreateCollection().SetCapped(true).SetSizeInBytes(4096))
	requireCode(t, err, "create an existing collection with different options", 48)

	err = db.CreateCollection(ctx, "c")
	if err != nil {
		requireCode(t, err, "create an existing collection with identical options", 48)
	}
}

// TestDropCollection: drop removes the collection and its documents. The driver's Drop
// ignores NamespaceNotFound for a missing collection (CRUD / Enumerate Collections specs);
// the raw drop command on a missing collection fails with NamespaceNotFound (26) before
// MongoDB 7.0 and succeeds from 7.0 (manual: reference/command/drop).
func TestDropCollection(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	coll := db.Collection("doomed")
	_, err := coll.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}})
	requireNoError(t, err, "insert")
	_, err = db.Collection("kept").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	requireNoError(t, err, "insert into kept")

	requireNoError(t, coll.Drop(ctx), "drop")
	names, err := db.ListCollectionNames(ctx, bson.D{})
	requireNoError(t, err, "listCollections")
	requireStrings(t, names, []string{"kept"}, "collections after drop")
	if n, _ := coll.CountDocuments(ctx, bson.D{}); n != 0 {
		t.Errorf("dropped collection still counts %d documents", n)
	}

	requireNoError(t, db.Collection("never_existed").Drop(ctx), "driver Drop of a missing collection")

	err = db.RunCommand(ctx, bson.D{{Key: "drop", Value: "never_existed"}}).Err()
	if err != nil {
		requireCode(t, err, "drop command on a missing collection", 26)
	}
}

// TestDropDatabase: dropDatabase removes every collection and the database from
// listDatabases; dropping a database that does not exist succeeds
// (manual: reference/command/dropDatabase).
func TestDropDatabase(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	db := testDB(t, client)
	for _, c := range []string{"a", "b"} {
		_, err := db.Collection(c).InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
		requireNoError(t, err, "insert into "+c)
	}

	requireNoError(t, db.Drop(ctx), "dropDatabase")
	names, err := db.ListCollectionNames(ctx, bson.D{})
	requireNoError(t, err, "listCollections after dropDatabase")
	requireStrings(t, names, nil, "collections after dropDatabase")
	dbs, err := client.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: db.Name()}})
	requireNoError(t, err, "listDatabases")
	requireStrings(t, dbs, nil, "databases named like the dropped one")

	requireNoError(t, client.Database(uniqueDBName(t)).Drop(ctx), "dropDatabase of a missing database")
}

// TestRenameCollection: renameCollection moves documents to the new name; an existing target
// fails with NamespaceExists (48) unless dropTarget is true; a missing source fails with
// NamespaceNotFound (26) (manual: reference/command/renameCollection).
func TestRenameCollection(t *testing.T) {
	cases := []struct {
		name         string
		targetExists bool
		sourceExists bool
		dropTarget   bool
		wantCode     int // 0: success
	}{
		{name: "to a new name", sourceExists: true},
		{name: "onto an existing target", sourceExists: true, targetExists: true, wantCode: 48},
		{name: "onto an existing target with dropTarget", sourceExists: true, targetExists: true, dropTarget: true},
		{name: "missing source", wantCode: 26},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			client := newClient(t)
			db := testDB(t, client)
			src, dst := db.Collection("src"), db.Collection("dst")
			if tc.sourceExists {
				_, err := src.InsertMany(ctx, []any{
					bson.D{{Key: "_id", Value: 1}, {Key: "from", Value: "src"}},
					bson.D{{Key: "_id", Value: 2}, {Key: "from", Value: "src"}},
				})
				requireNoError(t, err, "seed src")
			}
			if tc.targetExists {
				_, err := dst.InsertOne(ctx, bson.D{{Key: "_id", Value: 9}, {Key: "from", Value: "dst"}})
				requireNoError(t, err, "seed dst")
			}

			err := client.Database("admin").RunCommand(ctx, bson.D{
				{Key: "renameCollection", Value: db.Name() + ".src"},
				{Key: "to", Value: db.Name() + ".dst"},
				{Key: "dropTarget", Value: tc.dropTarget},
			}).Err()

			if tc.wantCode != 0 {
				requireCode(t, err, "renameCollection", tc.wantCode)
				if tc.targetExists {
					requireStrings(t, ids(findAll(t, ctx, dst, bson.D{})), intIDs(9), "target left untouched")
					requireStrings(t, ids(findAll(t, ctx, src, bson.D{})), intIDs(1, 2), "source left untouched")
				}
				return
			}
			requireNoError(t, err, "renameCollection")
			requireStrings(t, ids(findAll(t, ctx, dst, bson.D{})), intIDs(1, 2), "documents under the new name")
			names, err := db.ListCollectionNames(ctx, bson.D{})
			requireNoError(t, err, "listCollections")
			requireStrings(t, names, []string{"dst"}, "collections after rename")
		})
	}
}

// TestIndexes: a new collection has exactly the _id index, which enforces uniqueness;
// createIndexes adds indexes named after their keys, re-creating an identical index is a
// no-op, unique indexes reject duplicates with 11000, and dropIndexes removes one
// (manual: reference/command/createIndexes, listIndexes, dropIndexes; core/index-unique).
func TestIndexes(t *testing.T) {
	ctx := testContext(t)
	db := testDB(t, newClient(t))
	requireNoError(t, db.CreateCollection(ctx, "c"), "create")
	coll := db.Collection("c")

	specs := listIndexes(t, coll)
	if len(specs) != 1 || specs[0].Lookup("name").StringValue() != "_id_" {
		t.Fatalf("indexes of a new collection = %v, want only _id_", specs)
	}
	requireDoc(t, specs[0].Lookup("key").Document(), bson.D{{Key: "_id", Value: int32(1)}}, true, "_id_ key")

	_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: 1}, {Key: "b", Value: 1}})
	requireNoError(t, err, "insert")
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}})
	requireCode(t, err, "duplicate _id", 11000)

	name, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "a", Value: 1}},
		Options: options.Index().SetUnique(true),
	})
	requireNoError(t, err, "create unique index on a")
	if name != "a_1" {
		t.Errorf("default index name = %q, want a_1", name)
	}
	name, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "a", Value: 1}, {Key: "b", Value: -1}}})
	requireNoError(t, err, "create compound index")
	if name != "a_1_b_-1" {
		t.Errorf("default compound index name = %q, want a_1_b_-1", name)
	}
	_, err = coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "a", Value: 1}},
		Options: options.Index().SetUnique(true),
	})
	requireNoError(t, err, "re-create an identical index")

	specs = listIndexes(t, coll)
	byName := map[string]bson.Raw{}
	for _, s := range specs {
		byName[s.Lookup("name").StringValue()] = s
	}
	if len(specs) != 3 || byName["_id_"] == nil || byName["a_1"] == nil || byName["a_1_b_-1"] == nil {
		t.Fatalf("indexes = %v, want _id_, a_1 and a_1_b_-1", specs)
	}
	if u, ok := byName["a_1"].Lookup("unique").BooleanOK(); !ok || !u {
		t.Errorf("a_1 = %s, want unique: true", byName["a_1"])
	}
	requireDoc(t, byName["a_1_b_-1"].Lookup("key").Document(),
		bson.D{{Key: "a", Value: int32(1)}, {Key: "b", Value: int32(-1)}}, true, "compound index key")

	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}, {Key: "a", Value: 1}})
	requireCode(t, err, "duplicate value under a unique index", 11000)

	_, err = coll.Indexes().DropOne(ctx, "a_1")
	requireNoError(t, err, "drop index a_1")
	specs = listIndexes(t, coll)
	var names []string
	for _, s := range specs {
		names = append(names, s.Lookup("name").StringValue())
	}
	if len(names) != 2 || slices.Contains(names, "a_1") {
		t.Errorf("indexes after dropping a_1 = %v, want _id_ and a_1_b_-1", names)
	}
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}, {Key: "a", Value: 1}})
	requireNoError(t, err, "insert a duplicate a once the unique index is gone")
}

func listIndexes(t *testing.T, coll *mongo.Collection) []bson.Raw {
	t.Helper()
	ctx := testContext(t)
	cur, err := coll.Indexes().List(ctx)
	requireNoError(t, err, "listIndexes")
	var specs []bson.Raw
	requireNoError(t, cur.All(ctx, &specs), "read listIndexes cursor")
	return specs
}
