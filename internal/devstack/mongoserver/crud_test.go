package mongoserver

import (
	"errors"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// docsOf returns all documents of coll in _id order as extended JSON.
func docsOf(t *testing.T, coll *mongo.Collection) []string {
	t.Helper()
	cur, err := coll.Find(ctx(t), bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for cur.Next(ctx(t)) {
		out = append(out, relaxed(cur.Current))
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// relaxed renders a document as relaxed extended JSON without spaces.
func relaxed(raw bson.Raw) string {
	b, err := bson.MarshalExtJSON(raw, false, false)
	if err != nil {
		return "!" + err.Error()
	}
	return string(b)
}

func codeOf(err error) int {
	var we mongo.WriteException
	if errors.As(err, &we) && len(we.WriteErrors) > 0 {
		return we.WriteErrors[0].Code
	}
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && len(bwe.WriteErrors) > 0 {
		return bwe.WriteErrors[0].Code
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return -1
}

// TestUpdates runs update statements against a seeded document and compares
// the stored result.
func TestUpdates(t *testing.T) {
	seed := bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: 1}, {Key: "n", Value: bson.D{{Key: "x", Value: 1}}},
		{Key: "arr", Value: bson.A{1, 2, 3}}, {Key: "objs", Value: bson.A{bson.D{{Key: "k", Value: 1}, {Key: "v", Value: 0}}, bson.D{{Key: "k", Value: 2}, {Key: "v", Value: 0}}}}}
	for _, tc := range []struct {
		name   string
		update interface{}
		filter bson.D // added to {_id: 1}
		opts   *options.UpdateOptions
		want   string
		code   int
	}{
		{"set and inc", bson.D{{Key: "$set", Value: bson.D{{Key: "b", Value: "x"}}}, {Key: "$inc", Value: bson.D{{Key: "a", Value: 2}}}}, nil, nil,
			`{"_id":1,"a":3,"n":{"x":1},"arr":[1,2,3],"objs":[{"k":1,"v":0},{"k":2,"v":0}],"b":"x"}`, 0},
		{"dotted set and unset", bson.D{{Key: "$set", Value: bson.D{{Key: "n.y", Value: 2}}}, {Key: "$unset", Value: bson.D{{Key: "n.x", Value: ""}}}}, nil, nil,
			`{"_id":1,"a":1,"n":{"y":2},"arr":[1,2,3],"objs":[{"k":1,"v":0},{"k":2,"v":0}]}`, 0},
		{"array index set", bson.D{{Key: "$set", Value: bson.D{{Key: "arr.1", Value: 20}}}}, nil, nil,
			`{"_id":1,"a":1,"n":{"x":1},"arr":[1,20,3],"objs":[{"k":1,"v":0},{"k":2,"v":0}]}`, 0},
		{"arrayFilters", bson.D{{Key: "$set", Value: bson.D{{Key: "objs.$[o].v", Value: 9}}}},
			nil, options.Update().SetArrayFilters(options.ArrayFilters{Filters: []interface{}{bson.D{{Key: "o.k", Value: 2}}}}),
			`{"_id":1,"a":1,"n":{"x":1},"arr":[1,2,3],"objs":[{"k":1,"v":0},{"k":2,"v":9}]}`, 0},
		{"push each slice position", bson.D{{Key: "$push", Value: bson.D{{Key: "arr", Value: bson.D{{Key: "$each", Value: bson.A{0}}, {Key: "$position", Value: 0}, {Key: "$slice", Value: 3}}}}}}, nil, nil,
			`{"_id":1,"a":1,"n":{"x":1},"arr":[0,1,2],"objs":[{"k":1,"v":0},{"k":2,"v":0}]}`, 0},
		{"truncate with empty each", bson.D{{Key: "$push", Value: bson.D{{Key: "arr", Value: bson.D{{Key: "$each", Value: bson.A{}}, {Key: "$slice", Value: 1}}}}}}, nil, nil,
			`{"_id":1,"a":1,"n":{"x":1},"arr":[1],"objs":[{"k":1,"v":0},{"k":2,"v":0}]}`, 0},
		{"addToSet and pull", bson.D{{Key: "$addToSet", Value: bson.D{{Key: "arr", Value: bson.D{{Key: "$each", Value: bson.A{3, 4}}}}}}, {Key: "$pull", Value: bson.D{{Key: "objs", Value: bson.D{{Key: "k", Value: 1}}}}}}, nil, nil,
			`{"_id":1,"a":1,"n":{"x":1},"arr":[1,2,3,4],"objs":[{"k":2,"v":0}]}`, 0},
		{"pull condition", bson.D{{Key: "$pull", Value: bson.D{{Key: "arr", Value: bson.D{{Key: "$gte", Value: 2}}}}}}, nil, nil,
			`{"_id":1,"a":1,"n":{"x":1},"arr":[1],"objs":[{"k":1,"v":0},{"k":2,"v":0}]}`, 0},
		{"positional on scalar array", bson.D{{Key: "$set", Value: bson.D{{Key: "arr.$", Value: 20}}}},
			bson.D{{Key: "arr", Value: 2}}, nil, `{"_id":1,"a":1,"n":{"x":1},"arr":[1,20,3],"objs":[{"k":1,"v":0},{"k":2,"v":0}]}`, 0},
		{"positional into documents", bson.D{{Key: "$set", Value: bson.D{{Key: "objs.$.v", Value: 5}}}},
			bson.D{{Key: "objs.k", Value: 2}}, nil, `{"_id":1,"a":1,"n":{"x":1},"arr":[1,2,3],"objs":[{"k":1,"v":0},{"k":2,"v":5}]}`, 0},
		{"change _id refused", bson.D{{Key: "$set", Value: bson.D{{Key: "_id", Value: 2}}}}, nil, nil, "", codeImmutableField},
		{"unknown operator", bson.D{{Key: "$frobnicate", Value: bson.D{{Key: "a", Value: 1}}}}, nil, nil, "", codeFailedToParse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Options{})
			coll := connect(t, s).Database("d").Collection("c")
			if _, err := coll.InsertOne(ctx(t), seed); err != nil {
				t.Fatal(err)
			}
			opts := tc.opts
			if opts == nil {
				opts = options.Update()
			}
			filter := append(bson.D{{Key: "_id", Value: 1}}, tc.filter...)
			_, err := coll.UpdateOne(ctx(t), filter, tc.update, opts)
			if tc.code != 0 {
				if codeOf(err) != tc.code {
					t.Fatalf("want code %d, got %v", tc.code, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := docsOf(t, coll); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("got  %v\nwant %s", got, tc.want)
			}
		})
	}
}

func TestUpsertMultiReplace(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("c")
	res, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: "k"}, {Key: "tag", Value: "t"}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: 1}}}, {Key: "$setOnInsert", Value: bson.D{{Key: "created", Value: true}}}},
		options.Update().SetUpsert(true))
	if err != nil {
		t.Fatal(err)
	}
	if res.UpsertedID != "k" || res.MatchedCount != 0 {
		t.Fatalf("upsert result %+v", res)
	}
	res, err = coll.ReplaceOne(ctx(t), bson.D{{Key: "_id", Value: "r"}}, bson.D{{Key: "w", Value: 2}}, options.Replace().SetUpsert(true))
	if err != nil || res.UpsertedID != "r" {
		t.Fatalf("replace upsert %+v %v", res, err)
	}
	if _, err := coll.InsertMany(ctx(t), []interface{}{bson.D{{Key: "_id", Value: 1}, {Key: "g", Value: 1}}, bson.D{{Key: "_id", Value: 2}, {Key: "g", Value: 1}}}); err != nil {
		t.Fatal(err)
	}
	res, err = coll.UpdateMany(ctx(t), bson.D{{Key: "g", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "h", Value: true}}}})
	if err != nil || res.MatchedCount != 2 || res.ModifiedCount != 2 {
		t.Fatalf("multi %+v %v", res, err)
	}
	res, err = coll.UpdateMany(ctx(t), bson.D{{Key: "g", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "h", Value: true}}}})
	if err != nil || res.MatchedCount != 2 || res.ModifiedCount != 0 {
		t.Fatalf("no-op multi %+v %v", res, err)
	}
	want := []string{`{"_id":1,"g":1,"h":true}`, `{"_id":2,"g":1,"h":true}`, `{"_id":"k","tag":"t","v":1,"created":true}`, `{"_id":"r","w":2}`}
	if got := docsOf(t, coll); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v", got)
	}
}

func TestInsertErrors(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("c")
	docs := []interface{}{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}}
	_, err := coll.InsertMany(ctx(t), docs)
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("ordered: want duplicate key, got %v", err)
	}
	if n, _ := coll.CountDocuments(ctx(t), bson.D{}); n != 1 {
		t.Fatalf("ordered insert continued past the error: %d docs", n)
	}
	_, err = coll.InsertMany(ctx(t), []interface{}{bson.D{{Key: "_id", Value: 3}}, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 4}}}, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || len(bwe.WriteErrors) != 1 || bwe.WriteErrors[0].Index != 1 || bwe.WriteErrors[0].Code != codeDuplicateKey {
		t.Fatalf("unordered: got %v", err)
	}
	if n, _ := coll.CountDocuments(ctx(t), bson.D{}); n != 3 {
		t.Fatalf("unordered insert: %d docs, want 3", n)
	}
	// _id goes first and is generated when absent.
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "x", Value: 1}, {Key: "_id", Value: 9}}); err != nil {
		t.Fatal(err)
	}
	var raw bson.Raw
	if raw, err = coll.FindOne(ctx(t), bson.D{{Key: "_id", Value: 9}}).Raw(); err != nil || relaxed(raw) != `{"_id":9,"x":1}` {
		t.Fatalf("got %s %v", relaxed(raw), err)
	}
	// An update that grows a document past 16 MiB fails with 10334.
	big := strings.Repeat("x", 9<<20)
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: "big"}, {Key: "a", Value: big}}); err != nil {
		t.Fatal(err)
	}
	_, err = coll.UpdateByID(ctx(t), "big", bson.D{{Key: "$set", Value: bson.D{{Key: "b", Value: big}}}})
	if codeOf(err) != codeBSONObjectTooLarge {
		t.Fatalf("want 10334, got %v", err)
	}
}

func TestFindAndCursors(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("c")
	var docs []interface{}
	for i := 0; i < 250; i++ {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "mod", Value: i % 7}, {Key: "s", Value: 250 - i}})
	}
	if _, err := coll.InsertMany(ctx(t), docs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		filter bson.D
		opts   *options.FindOptions
		count  int
		first  string
	}{
		{"all via getMore", bson.D{}, options.Find().SetBatchSize(7), 250, `{"_id":0,"mod":0,"s":250}`},
		{"filter", bson.D{{Key: "mod", Value: 3}}, options.Find(), 36, `{"_id":3,"mod":3,"s":247}`},
		{"sort skip limit", bson.D{}, options.Find().SetSort(bson.D{{Key: "s", Value: 1}}).SetSkip(5).SetLimit(10), 10, `{"_id":244,"mod":6,"s":6}`},
		{"limit smaller than batch", bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: 100}}}}, options.Find().SetLimit(3).SetBatchSize(2), 3, `{"_id":100,"mod":2,"s":150}`},
		{"projection", bson.D{{Key: "_id", Value: 5}}, options.Find().SetProjection(bson.D{{Key: "s", Value: 1}}), 1, `{"_id":5,"s":245}`},
		{"exclusion", bson.D{{Key: "_id", Value: 5}}, options.Find().SetProjection(bson.D{{Key: "s", Value: 0}, {Key: "_id", Value: 0}}), 1, `{"mod":5}`},
		{"two exclusions", bson.D{{Key: "_id", Value: 5}}, options.Find().SetProjection(bson.D{{Key: "s", Value: 0}, {Key: "mod", Value: 0}}), 1, `{"_id":5}`},
		{"inclusion keeps document order", bson.D{{Key: "_id", Value: 5}}, options.Find().SetProjection(bson.D{{Key: "s", Value: 1}, {Key: "mod", Value: 1}}), 1, `{"_id":5,"mod":5,"s":245}`},
		{"id in", bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{4, 8}}}}}, options.Find(), 2, `{"_id":4,"mod":4,"s":246}`},
		{"sort desc by id", bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetBatchSize(100), 250, `{"_id":249,"mod":4,"s":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, err := coll.Find(ctx(t), tc.filter, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for cur.Next(ctx(t)) {
				got = append(got, relaxed(cur.Current))
			}
			if err := cur.Err(); err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.count || got[0] != tc.first {
				t.Fatalf("got %d docs, first %v", len(got), got[:min(1, len(got))])
			}
		})
	}
	n, err := coll.CountDocuments(ctx(t), bson.D{{Key: "mod", Value: 0}})
	if err != nil || n != 36 {
		t.Fatalf("count %d %v", n, err)
	}
	n, err = coll.EstimatedDocumentCount(ctx(t))
	if err != nil || n != 250 {
		t.Fatalf("estimated count %d %v", n, err)
	}
	dr, err := coll.DeleteMany(ctx(t), bson.D{{Key: "mod", Value: bson.D{{Key: "$ne", Value: 0}}}})
	if err != nil || dr.DeletedCount != 214 {
		t.Fatalf("deleteMany %+v %v", dr, err)
	}
	dr, err = coll.DeleteOne(ctx(t), bson.D{})
	if err != nil || dr.DeletedCount != 1 {
		t.Fatalf("deleteOne %+v %v", dr, err)
	}
}

// TestUniqueIndex: a unique secondary index rejects duplicates on insert,
// update and upsert, cannot be built over duplicates, and stops enforcing
// once dropped.
func TestUniqueIndex(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("c")
	if _, err := coll.InsertMany(ctx(t), []interface{}{bson.D{{Key: "_id", Value: 1}, {Key: "e", Value: "a"}}, bson.D{{Key: "_id", Value: 2}, {Key: "e", Value: "b"}}, bson.D{{Key: "_id", Value: 3}, {Key: "f", Value: 1}}, bson.D{{Key: "_id", Value: 4}, {Key: "f", Value: 1}}}); err != nil {
		t.Fatal(err)
	}
	idx := coll.Indexes()
	if _, err := idx.CreateOne(ctx(t), mongo.IndexModel{Keys: bson.D{{Key: "f", Value: 1}}, Options: options.Index().SetUnique(true)}); codeOf(err) != codeDuplicateKey {
		t.Fatalf("building over duplicates: %v", err)
	}
	name, err := idx.CreateOne(ctx(t), mongo.IndexModel{Keys: bson.D{{Key: "e", Value: 1}}, Options: options.Index().SetUnique(true).SetSparse(true)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		op   func() error
		code int
	}{
		{"insert duplicate", func() error {
			_, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 5}, {Key: "e", Value: "a"}})
			return err
		}, codeDuplicateKey},
		{"sparse allows many missing", func() error {
			_, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 6}})
			return err
		}, 0},
		{"update into duplicate", func() error {
			_, err := coll.UpdateByID(ctx(t), 2, bson.D{{Key: "$set", Value: bson.D{{Key: "e", Value: "a"}}}})
			return err
		}, codeDuplicateKey},
		{"update own key", func() error {
			_, err := coll.UpdateByID(ctx(t), 1, bson.D{{Key: "$set", Value: bson.D{{Key: "e", Value: "z"}, {Key: "x", Value: 1}}}})
			return err
		}, 0},
		{"old key is free again", func() error {
			_, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 7}, {Key: "e", Value: "a"}})
			return err
		}, 0},
		{"upsert duplicate", func() error {
			_, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: 8}}, bson.D{{Key: "$set", Value: bson.D{{Key: "e", Value: "b"}}}}, options.Update().SetUpsert(true))
			return err
		}, codeDuplicateKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if (tc.code == 0 && err != nil) || (tc.code != 0 && codeOf(err) != tc.code) {
				t.Fatalf("want code %d, got %v", tc.code, err)
			}
		})
	}
	if _, err := idx.DropOne(ctx(t), name); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 9}, {Key: "e", Value: "a"}}); err != nil {
		t.Fatalf("after dropping the index: %v", err)
	}
}

func TestFindAndModify(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("lease")
	after := options.After
	// Upsert a lease, then take it with a conditional update (a fencing
	// counter), then fail to take it with a stale condition.
	var doc bson.M
	err := coll.FindOneAndUpdate(ctx(t), bson.D{{Key: "_id", Value: "scope"}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "fence", Value: 1}}}, {Key: "$set", Value: bson.D{{Key: "owner", Value: "a"}}}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(after)).Decode(&doc)
	if err != nil || doc["fence"] != int32(1) || doc["owner"] != "a" {
		t.Fatalf("upsert: %v %v", doc, err)
	}
	doc = nil
	err = coll.FindOneAndUpdate(ctx(t), bson.D{{Key: "_id", Value: "scope"}, {Key: "fence", Value: 1}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "fence", Value: 1}}}},
		options.FindOneAndUpdate().SetProjection(bson.D{{Key: "fence", Value: 1}})).Decode(&doc)
	if err != nil || doc["fence"] != int32(1) || doc["owner"] != nil {
		t.Fatalf("before-image with projection: %v %v", doc, err)
	}
	err = coll.FindOneAndUpdate(ctx(t), bson.D{{Key: "_id", Value: "scope"}, {Key: "fence", Value: 1}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "fence", Value: 1}}}}).Err()
	if !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("stale fence: want ErrNoDocuments, got %v", err)
	}
	if _, err := coll.InsertMany(ctx(t), []interface{}{bson.D{{Key: "_id", Value: 1}, {Key: "p", Value: 5}}, bson.D{{Key: "_id", Value: 2}, {Key: "p", Value: 9}}}); err != nil {
		t.Fatal(err)
	}
	err = coll.FindOneAndReplace(ctx(t), bson.D{{Key: "p", Value: bson.D{{Key: "$exists", Value: true}}}}, bson.D{{Key: "p", Value: 0}},
		options.FindOneAndReplace().SetSort(bson.D{{Key: "p", Value: -1}}).SetReturnDocument(after)).Decode(&doc)
	if err != nil || doc["_id"] != int32(2) || doc["p"] != int32(0) {
		t.Fatalf("replace sorted: %v %v", doc, err)
	}
	err = coll.FindOneAndDelete(ctx(t), bson.D{{Key: "_id", Value: 1}}).Decode(&doc)
	if err != nil || doc["p"] != int32(5) {
		t.Fatalf("delete: %v %v", doc, err)
	}
	if n, _ := coll.CountDocuments(ctx(t), bson.D{{Key: "_id", Value: 1}}); n != 0 {
		t.Fatal("findOneAndDelete left the document")
	}
}

func TestAggregate(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("c")
	var docs []interface{}
	for i := 0; i < 10; i++ {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "g", Value: i % 3}, {Key: "v", Value: i}})
	}
	if _, err := coll.InsertMany(ctx(t), docs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		pipeline mongo.Pipeline
		want     string
	}{
		{"match sort limit project", mongo.Pipeline{
			{{Key: "$match", Value: bson.D{{Key: "g", Value: 1}}}},
			{{Key: "$sort", Value: bson.D{{Key: "v", Value: -1}}}},
			{{Key: "$skip", Value: 1}},
			{{Key: "$limit", Value: 1}},
			{{Key: "$project", Value: bson.D{{Key: "v", Value: 1}, {Key: "_id", Value: 0}}}},
		}, `{"v":4}`},
		{"count", mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "v", Value: bson.D{{Key: "$gt", Value: 4}}}}}}, {{Key: "$count", Value: "n"}}}, `{"n":5}`},
		{"group", mongo.Pipeline{
			{{Key: "$group", Value: bson.D{{Key: "_id", Value: "$g"}, {Key: "total", Value: bson.D{{Key: "$sum", Value: "$v"}}}, {Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}}, {Key: "first", Value: bson.D{{Key: "$first", Value: "$v"}}}}}},
			{{Key: "$sort", Value: bson.D{{Key: "_id", Value: 1}}}},
		}, `{"_id":0,"total":18,"n":4,"first":0} {"_id":1,"total":12,"n":3,"first":1} {"_id":2,"total":15,"n":3,"first":2}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, err := coll.Aggregate(ctx(t), tc.pipeline)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for cur.Next(ctx(t)) {
				got = append(got, relaxed(cur.Current))
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("got  %v\nwant %s", got, tc.want)
			}
		})
	}
	_, err := coll.Aggregate(ctx(t), mongo.Pipeline{{{Key: "$nope", Value: 1}}})
	if codeOf(err) != codeLocation40324 {
		t.Fatalf("unknown stage: %v", err)
	}
}

func TestCatalog(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	db := cl.Database("d")
	if err := db.CreateCollection(ctx(t), "a"); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateCollection(ctx(t), "a"); codeOf(err) != codeNamespaceExists {
		t.Fatalf("create twice: %v", err)
	}
	insertIDs(t, db.Collection("b"), 1)
	names, err := db.ListCollectionNames(ctx(t), bson.D{})
	if err != nil || strings.Join(names, ",") != "a,b" {
		t.Fatalf("collections %v %v", names, err)
	}
	names, err = db.ListCollectionNames(ctx(t), bson.D{{Key: "name", Value: "b"}})
	if err != nil || strings.Join(names, ",") != "b" {
		t.Fatalf("filtered collections %v %v", names, err)
	}
	dbs, err := cl.ListDatabaseNames(ctx(t), bson.D{})
	if err != nil || strings.Join(dbs, ",") != "d" {
		t.Fatalf("databases %v %v", dbs, err)
	}
	idx := db.Collection("b").Indexes()
	if _, err := idx.CreateOne(ctx(t), mongo.IndexModel{Keys: bson.D{{Key: "x", Value: 1}}}); err != nil {
		t.Fatal(err)
	}
	specs, err := idx.ListSpecifications(ctx(t))
	if err != nil || len(specs) != 2 || specs[0].Name != "_id_" || specs[1].Name != "x_1" {
		t.Fatalf("indexes %v %v", specs, err)
	}
	if err := db.Collection("missing").Drop(ctx(t)); err != nil {
		t.Fatalf("driver hides ns not found on drop, got %v", err)
	}
	err = db.RunCommand(ctx(t), bson.D{{Key: "drop", Value: "missing"}}).Err()
	if codeOf(err) != codeNamespaceNotFound {
		t.Fatalf("drop missing: %v", err)
	}
	admin := cl.Database("admin")
	rename := func(from, to string, dropTarget bool) error {
		return admin.RunCommand(ctx(t), bson.D{{Key: "renameCollection", Value: from}, {Key: "to", Value: to}, {Key: "dropTarget", Value: dropTarget}}).Err()
	}
	if err := rename("d.b", "d.a", false); codeOf(err) != codeNamespaceExists {
		t.Fatalf("rename onto existing: %v", err)
	}
	if err := rename("d.b", "d.a", true); err != nil {
		t.Fatal(err)
	}
	if got := docsOf(t, db.Collection("a")); len(got) != 1 {
		t.Fatalf("renamed collection: %v", got)
	}
	if err := rename("d.nope", "d.x", false); codeOf(err) != codeNamespaceNotFound {
		t.Fatalf("rename missing: %v", err)
	}
	if err := db.Drop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if dbs, _ := cl.ListDatabaseNames(ctx(t), bson.D{}); len(dbs) != 0 {
		t.Fatalf("databases after dropDatabase: %v", dbs)
	}
	err = db.RunCommand(ctx(t), bson.D{{Key: "frobnicate", Value: 1}}).Err()
	if codeOf(err) != codeCommandNotFound {
		t.Fatalf("unknown command: %v", err)
	}
	var bi bson.M
	if err := admin.RunCommand(ctx(t), bson.D{{Key: "buildInfo", Value: 1}}).Decode(&bi); err != nil || bi["version"] != "4.0.0" {
		t.Fatalf("buildInfo %v %v", bi, err)
	}
}

func TestDistinct(t *testing.T) {
	s := startServer(t, Options{})
	coll := connect(t, s).Database("d").Collection("c")
	if _, err := coll.InsertMany(ctx(t), []interface{}{
		bson.D{{Key: "_id", Value: 1}, {Key: "t", Value: bson.A{"a", "b"}}},
		bson.D{{Key: "_id", Value: 2}, {Key: "t", Value: "b"}},
		bson.D{{Key: "_id", Value: 3}, {Key: "t", Value: "c"}, {Key: "skip", Value: true}},
	}); err != nil {
		t.Fatal(err)
	}
	vals, err := coll.Distinct(ctx(t), "t", bson.D{{Key: "skip", Value: bson.D{{Key: "$ne", Value: true}}}})
	if err != nil || len(vals) != 2 || vals[0] != "a" || vals[1] != "b" {
		t.Fatalf("distinct %v %v", vals, err)
	}
}
