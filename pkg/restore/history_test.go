package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

func TestDiff(t *testing.T) {
	d := func(v bson.D) bson.Raw { return must(bson.Marshal(v)) }
	for _, tc := range []struct {
		name string
		a, b bson.Raw
		want string // path kind, joined
	}{
		{"same", d(bson.D{{Key: "x", Value: 1}}), d(bson.D{{Key: "x", Value: 1}}), ""},
		{"set", d(bson.D{{Key: "x", Value: 1}}), d(bson.D{{Key: "x", Value: 2}}), "x changed 1 2"},
		{"type only", d(bson.D{{Key: "x", Value: primitive.DateTime(1)}}), d(bson.D{{Key: "x", Value: int64(1)}}), `x changed {"$date":"1970-01-01T00:00:00.001Z"} {"$numberLong":"1"}`}, // the same 8 bytes
		{"added and removed", d(bson.D{{Key: "x", Value: 1}}), d(bson.D{{Key: "y", Value: "z"}}), `x removed 1  ; y added  "z"`},
		{"nested", d(bson.D{{Key: "s", Value: bson.D{{Key: "k", Value: 1}, {Key: "j", Value: 1}}}}), d(bson.D{{Key: "s", Value: bson.D{{Key: "k", Value: 2}, {Key: "j", Value: 1}}}}), "s.k changed 1 2"},
		{"array whole", d(bson.D{{Key: "a", Value: bson.A{1, 2}}}), d(bson.D{{Key: "a", Value: bson.A{1}}}), `a changed [1,2] [1]`},
		{"reordered", d(bson.D{{Key: "x", Value: 1}, {Key: "y", Value: 1}}), d(bson.D{{Key: "y", Value: 1}, {Key: "x", Value: 1}}), " reordered  "},
		{"created", nil, d(bson.D{{Key: "x", Value: 1}}), ` created  {"x":1}`},
		{"deleted", d(bson.D{{Key: "x", Value: 1}}), nil, ` deleted {"x":1} `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range Diff(tc.a, tc.b) {
				got = append(got, fmt.Sprintf("%s %s %s %s", c.Path, c.Kind, relaxed(t, c.Before), relaxed(t, c.After)))
			}
			if g := strings.Join(got, " ; "); g != tc.want {
				t.Errorf("Diff = %q, want %q", g, tc.want)
			}
		})
	}
}

// relaxed shows a value in relaxed Extended JSON (int32 1 as 1), keeping the type of longs.
func relaxed(t *testing.T, v json.RawMessage) string {
	if v == nil {
		return ""
	}
	var doc bson.Raw
	if err := bson.UnmarshalExtJSON([]byte(`{"v":`+string(v)+`}`), true, &doc); err != nil {
		t.Fatal(err)
	}
	val := doc.Lookup("v")
	if val.Type == bson.TypeInt64 {
		return string(v)
	}
	js := must(bson.MarshalExtJSON(doc, false, false))
	return strings.TrimSuffix(strings.TrimPrefix(string(js), `{"v":`), "}")
}

// TestHistory: lines from the history and the delete archive, written out of order, come back
// in cluster-time order, each with the changes into the next version (the newest into DR's).
func TestHistory(t *testing.T) {
	store := memStore{}
	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	doc := func(v bson.D) bson.Raw {
		return must(bson.Marshal(append(bson.D{{Key: "_id", Value: int32(7)}}, v...)))
	}
	type ev struct {
		op     changeevent.OperationType
		t      uint32
		before bson.Raw
		area   string
	}
	evs := []ev{ // written newest first, in two areas
		{changeevent.Delete, 40, doc(bson.D{{Key: "p", Value: int32(0)}}), "deletes"},
		{changeevent.Update, 30, doc(bson.D{{Key: "p", Value: int32(5)}}), "history"},
		{changeevent.Update, 20, doc(bson.D{{Key: "p", Value: int32(1)}}), "history"},
		{changeevent.Insert, 9, nil, "history"}, // its key sorts after the others: "9-1-..."
	}
	for i, e := range evs {
		ev := &changeevent.Event{Version: 1, Operation: e.op, NS: ns, DocumentKey: doc(nil), ClusterTime: primitive.Timestamp{T: e.t, I: 1},
			ResumeToken: must(bson.Marshal(bson.D{{Key: "_data", Value: fmt.Sprint(i)}}))}
		rec, err := archive.NewRecord(ev, archive.Kafka{Offset: int64(e.t)}, e.before)
		if err != nil {
			t.Fatal(err)
		}
		line := must(rec.MarshalLine())
		key := layout.HistoryObject(ns, ev.ClusterTime, fmt.Sprint(i), "c")
		if e.area == "deletes" {
			key = layout.ArchiveObject(ns, ev.ClusterTime, fmt.Sprint(i), "c")
		}
		store[key] = must(archive.EncodeObject([][]byte{line}))
	}
	var docKeys []string
	for k := range store {
		docKeys = append(docKeys, k)
	}
	// Another document's line, which the index does not name.
	other := &changeevent.Event{Version: 1, Operation: changeevent.Insert, NS: ns, DocumentKey: must(bson.Marshal(bson.D{{Key: "_id", Value: int32(8)}})),
		ClusterTime: primitive.Timestamp{T: 15, I: 1}, ResumeToken: must(bson.Marshal(bson.D{{Key: "_data", Value: "other"}}))}
	orec := must(archive.NewRecord(other, archive.Kafka{}, nil))
	store[layout.HistoryObject(ns, other.ClusterTime, "o", "c")] = must(archive.EncodeObject([][]byte{must(orec.MarshalLine())}))

	t.Run("every line", func(t *testing.T) {
		checkHistory(t, HistoryOptions{Archive: ArchiveReader{Store: store, Layout: layout}, NS: ns, ID: "7"})
	})
	t.Run("through the ledger's index", func(t *testing.T) {
		counted := &countingStore{memStore: store}
		checkHistory(t, HistoryOptions{Archive: ArchiveReader{Store: counted, Layout: layout}, Index: fakeIndex(docKeys), NS: ns, ID: "7"})
		if counted.gets != len(docKeys) || counted.lists != 0 {
			t.Errorf("%d GETs and %d lists, want the %d objects the index names and no list", counted.gets, counted.lists, len(docKeys))
		}
	})
}

type fakeIndex []string

func (f fakeIndex) ObjectsOf(context.Context, changeevent.Namespace, bson.RawValue) ([]string, error) {
	return f, nil
}

type countingStore struct {
	memStore
	gets, lists int
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, error) {
	c.gets++
	return c.memStore.Get(ctx, key)
}

func (c *countingStore) List(ctx context.Context, prefix string) ([]string, error) {
	c.lists++
	return c.memStore.List(ctx, prefix)
}

func checkHistory(t *testing.T, opts HistoryOptions) {
	t.Helper()
	vs, err := History(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		var cs []string
		for _, c := range v.Changes {
			cs = append(cs, c.Kind+" "+c.Path)
		}
		got = append(got, fmt.Sprintf("%s@%s exact=%t [%s]", v.Operation, v.Cluster, v.Exact, strings.Join(cs, ",")))
	}
	want := []string{"insert@9.1 exact=true [created ]", "update@20.1 exact=true [changed p]", "update@30.1 exact=true [changed p]",
		"delete@40.1 exact=true [deleted ]"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("History =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
