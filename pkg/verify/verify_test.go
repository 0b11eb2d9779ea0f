package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// newCluster starts an embedded server for the test and returns a client of it.
func newCluster(t testing.TB) *mongo.Client { return mongotest.Client(t) }

// fakeArchive is an InterceptedLog holding archived operations per namespace.
type fakeArchive map[string][]archived

type archived struct {
	op string
	id any
}

func (f fakeArchive) Intercepted(_ context.Context, ns changeevent.Namespace, fn func(string, bson.RawValue) error) error {
	for _, a := range f[ns.String()] {
		var id bson.RawValue
		if a.id != nil {
			b, _ := bson.Marshal(bson.D{{Key: "_id", Value: a.id}})
			id = bson.Raw(b).Lookup("_id")
		}
		if err := fn(a.op, id); err != nil {
			return err
		}
	}
	return nil
}

const seeded = 3000

// pair seeds the same documents (int32 _id 0..seeded-1) into bar.foo of both clusters.
func pair(t *testing.T) (primary, dr *mongo.Client) {
	primary, dr = newCluster(t), newCluster(t)
	var docs []any
	for i := range seeded {
		docs = append(docs, bson.D{{Key: "_id", Value: int32(i)}, {Key: "n", Value: int32(i)}, {Key: "s", Value: "v"}})
	}
	for _, c := range []*mongo.Client{primary, dr} {
		if _, err := c.Database("bar").Collection("foo").InsertMany(context.Background(), docs); err != nil {
			t.Fatal(err)
		}
	}
	return primary, dr
}

func TestVerifyFindsEachPlantedDifference(t *testing.T) {
	ctx := context.Background()
	foo := func(c *mongo.Client) *mongo.Collection { return c.Database("bar").Collection("foo") }
	set := func(c *mongo.Client, id int32, field string, v any) {
		if _, err := foo(c).UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: field, Value: v}}}}); err != nil {
			t.Fatal(err)
		}
	}
	del := func(c *mongo.Client, id int32) {
		if _, err := foo(c).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		plant   func(t *testing.T, primary, dr *mongo.Client)
		archive fakeArchive
		want    Counts
		check   func(t *testing.T, c CollectionReport)
		real    bool
	}{
		{name: "identical", plant: func(*testing.T, *mongo.Client, *mongo.Client) {},
			want: Counts{Equal: seeded}},
		{name: "missing in DR", plant: func(_ *testing.T, _, dr *mongo.Client) { del(dr, 1500) },
			want: Counts{Equal: seeded - 1, Missing: 1}, real: true,
			check: func(t *testing.T, c CollectionReport) {
				if len(c.MissingIDs) != 1 || c.MissingIDs[0] != `{"$numberInt":"1500"}` {
					t.Errorf("missing ids = %v", c.MissingIDs)
				}
			}},
		{name: "changed field", plant: func(_ *testing.T, _, dr *mongo.Client) { set(dr, 7, "s", "w") },
			want: Counts{Equal: seeded - 1, Different: 1}, real: true,
			check: func(t *testing.T, c CollectionReport) {
				if len(c.Differences) != 1 || c.Differences[0].ID != `{"$numberInt":"7"}` || c.Differences[0].Fields[0] != "s: value differs" {
					t.Errorf("differences = %+v", c.Differences)
				}
			}},
		{name: "type only int32 to int64", plant: func(_ *testing.T, _, dr *mongo.Client) { set(dr, 2999, "n", int64(2999)) },
			want: Counts{Equal: seeded - 1, Different: 1}, real: true,
			check: func(t *testing.T, c CollectionReport) {
				if len(c.Differences) != 1 || c.Differences[0].Fields[0] != "n: int → long" {
					t.Errorf("differences = %+v", c.Differences)
				}
			}},
		{name: "extra in DR", plant: func(_ *testing.T, primary, _ *mongo.Client) { del(primary, 0) },
			want: Counts{Equal: seeded - 1, Extra: 1}, real: true,
			check: func(t *testing.T, c CollectionReport) {
				if len(c.ExtraIDs) != 1 || c.ExtraIDs[0] != `{"$numberInt":"0"}` {
					t.Errorf("extra ids = %v", c.ExtraIDs)
				}
			}},
		{name: "intercepted deletes are not errors",
			plant:   func(_ *testing.T, primary, _ *mongo.Client) { del(primary, 10); del(primary, 2000); del(primary, 2500) },
			archive: fakeArchive{"bar.foo": {{"delete", int32(10)}, {"delete", int32(2000)}, {"delete", int64(2500)}, {"delete", int32(77)}}},
			// 2500 was archived as an int64 _id: a different document, so the int32 one is unexplained.
			want: Counts{Equal: seeded - 3, Intercepted: 2, Extra: 1}, real: true,
			check: func(t *testing.T, c CollectionReport) {
				if strings.Join(c.InterceptedIDs, " ") != `{"$numberInt":"10"} {"$numberInt":"2000"}` {
					t.Errorf("intercepted ids = %v", c.InterceptedIDs)
				}
			}},
		{name: "collection dropped in the primary",
			plant: func(t *testing.T, primary, _ *mongo.Client) {
				if err := foo(primary).Drop(ctx); err != nil {
					t.Fatal(err)
				}
			},
			archive: fakeArchive{"bar.foo": {{"drop", nil}}},
			want:    Counts{Intercepted: seeded},
			check: func(t *testing.T, c CollectionReport) {
				if !c.Dropped || c.DRCount != seeded {
					t.Errorf("report = %+v", c)
				}
			}},
		{name: "all at once",
			plant: func(_ *testing.T, primary, dr *mongo.Client) {
				del(dr, 1)
				set(dr, 2, "s", "changed")
				set(dr, 3, "n", int64(3))
				del(primary, 4)
				del(primary, 5)
				if _, err := foo(dr).InsertOne(ctx, bson.D{{Key: "_id", Value: int32(seeded + 1)}}); err != nil {
					t.Fatal(err)
				}
			},
			archive: fakeArchive{"bar.foo": {{"delete", int32(5)}}},
			want:    Counts{Equal: seeded - 5, Missing: 1, Different: 2, Extra: 2, Intercepted: 1}, real: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary, dr := pair(t)
			tt.plant(t, primary, dr)
			opts := Options{Primary: primary, DR: dr, Scope: scope.Scope{DB: "bar", Collections: []string{"foo"}},
				Workers: 3, Ranges: 8}
			if tt.archive != nil {
				opts.Archive = tt.archive
			}
			rep, err := Run(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			c := rep.Collections[0]
			if c.Counts != tt.want {
				t.Errorf("counts = %+v, want %+v", c.Counts, tt.want)
			}
			if c.Ranges < 2 && tt.name != "collection dropped in the primary" {
				t.Errorf("compared in %d range(s); the test wants the parallel path", c.Ranges)
			}
			if rep.HasDifferences() != tt.real {
				t.Errorf("HasDifferences = %v, want %v", rep.HasDifferences(), tt.real)
			}
			if tt.check != nil {
				tt.check(t, c)
			}

			var table, js bytes.Buffer
			if err := rep.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			wantVerdict := "RESULT: no real differences"
			if tt.real {
				wantVerdict = "real difference(s)"
			}
			if !strings.Contains(table.String(), wantVerdict) {
				t.Errorf("table lacks %q:\n%s", wantVerdict, table.String())
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var decoded struct {
				HasDifferences bool `json:"hasDifferences"`
				Totals         Counts
			}
			if err := json.Unmarshal(js.Bytes(), &decoded); err != nil || decoded.HasDifferences != tt.real || decoded.Totals != rep.Totals {
				t.Errorf("JSON = %s (%v)", js.String(), err)
			}
		})
	}
}

// TestVerifyWholeDatabaseIncludesDRCollections checks that a collection that only DR has (dropped
// in the primary, drop not archived) shows up as extra documents.
func TestVerifyWholeDatabaseIncludesDRCollections(t *testing.T) {
	ctx := context.Background()
	primary, dr := pair(t)
	if _, err := dr.Database("bar").Collection("old").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, Options{Primary: primary, DR: dr, Scope: scope.Scope{DB: "bar"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Collections) != 2 || rep.Collections[1].Name != "old" || rep.Collections[1].Extra != 1 || rep.Totals.Equal != seeded {
		t.Errorf("report = %+v", rep)
	}
}
