package restore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// newCluster starts an embedded server for the test and returns a client of it.
func newCluster(t testing.TB) *mongo.Client { return mongotest.Client(t) }

// memStore is an in-memory ObjectStore.
type memStore map[string][]byte

func (m memStore) List(_ context.Context, prefix string) ([]string, error) {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func (m memStore) Get(_ context.Context, key string) ([]byte, error) {
	b, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("no object %s", key)
	}
	return b, nil
}

// deletion is one delete to archive.
type deletion struct {
	coll string
	id   any
	at   time.Time
}

var layout = archive.Layout{Prefix: "docdbdr/"}

// archiveDeletes writes the deletes as apply would: one object per namespace and day, records in
// the real line format.
func archiveDeletes(t *testing.T, store memStore, dels []deletion) {
	t.Helper()
	objects := map[string][][]byte{}
	for i, d := range dels {
		b, _ := bson.Marshal(bson.D{{Key: "_id", Value: d.id}})
		ev := &changeevent.Event{Version: 1, Operation: changeevent.Delete, NS: changeevent.Namespace{DB: "bar", Coll: d.coll},
			DocumentKey: b, ClusterTime: primitive.Timestamp{T: uint32(d.at.Unix()), I: 1},
			ResumeToken: bson.Raw(must(bson.Marshal(bson.D{{Key: "_data", Value: fmt.Sprint(i)}})))}
		rec, err := archive.NewRecord(ev, archive.Kafka{Topic: "changevents", Offset: int64(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		line, err := rec.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		day := primitive.Timestamp{T: uint32(d.at.UTC().Truncate(24 * time.Hour).Unix())} // one object per collection and day
		key := layout.ArchiveObject(changeevent.Namespace{DB: "bar", Coll: d.coll}, day, "0", "test")
		objects[key] = append(objects[key], line)
	}
	for key, lines := range objects {
		body, err := archive.EncodeObject(lines)
		if err != nil {
			t.Fatal(err)
		}
		store[key] = body
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ids(items []Item, outcome Outcome) []string {
	var out []string
	for _, it := range items {
		if it.Outcome == outcome {
			out = append(out, it.ID)
		}
	}
	slices.Sort(out)
	return out
}

func TestRestore(t *testing.T) {
	ctx := context.Background()
	day1 := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	oid := primitive.NewObjectIDFromTimestamp(day1)

	// The story: DR holds every document; the primary lost some of them (archived deletes).
	// "back" was recreated in the primary with new content; "gone" is in the archive but DR never
	// had it.
	drDocs := []any{
		bson.D{{Key: "_id", Value: int32(1)}, {Key: "v", Value: "one"}},
		bson.D{{Key: "_id", Value: int64(2)}, {Key: "v", Value: int64(2)}},
		bson.D{{Key: "_id", Value: oid}, {Key: "v", Value: primitive.NewDateTimeFromTime(day1)}},
		bson.D{{Key: "_id", Value: "back"}, {Key: "v", Value: "old"}},
		bson.D{{Key: "_id", Value: "kept"}, {Key: "v", Value: "untouched"}},
	}
	primaryDocs := []any{
		bson.D{{Key: "_id", Value: "back"}, {Key: "v", Value: "new"}},
		bson.D{{Key: "_id", Value: "kept"}, {Key: "v", Value: "untouched"}},
	}
	dels := []deletion{
		{"foo", int32(1), day1},
		{"foo", int64(2), day1.Add(time.Hour)},
		{"foo", oid, day2},
		{"foo", "back", day1},
		{"foo", "gone", day2},
		{"foo", int32(1), day2}, // deleted twice (restored and deleted again): restored once
		{"other", int32(1), day1},
	}
	oidJSON := fmt.Sprintf(`{"$oid":"%s"}`, oid.Hex())

	tests := []struct {
		name      string
		sel       Selection
		apply     bool
		overwrite bool
		want      map[Outcome][]string
	}{
		{name: "dry run of everything", sel: Selection{DB: "bar", Coll: "foo"},
			want: map[Outcome][]string{
				WouldRestore:  {`{"$numberInt":"1"}`, `{"$numberLong":"2"}`, oidJSON},
				SkippedExists: {`"back"`},
				MissingInDR:   {`"gone"`},
			}},
		{name: "apply by ids", sel: Selection{DB: "bar", Coll: "foo", IDs: []string{`{"$numberLong":"2"}`, oid.Hex(), "back"}}, apply: true,
			want: map[Outcome][]string{Restored: {`{"$numberLong":"2"}`, oidJSON}, SkippedExists: {`"back"`}}},
		{name: "apply by time range", sel: Selection{DB: "bar", Coll: "foo", From: day1, To: day1.Add(30 * time.Minute)}, apply: true,
			want: map[Outcome][]string{Restored: {`{"$numberInt":"1"}`}, SkippedExists: {`"back"`}}},
		{name: "overwrite asked", sel: Selection{DB: "bar", Coll: "foo", IDs: []string{`"back"`}}, apply: true, overwrite: true,
			want: map[Outcome][]string{Overwritten: {`"back"`}}},
		{name: "dry run with overwrite", sel: Selection{DB: "bar", Coll: "foo", IDs: []string{`"back"`}}, overwrite: true,
			want: map[Outcome][]string{WouldOverwrite: {`"back"`}}},
		{name: "id of the wrong type selects nothing", sel: Selection{DB: "bar", Coll: "foo", IDs: []string{`{"$numberLong":"1"}`}}, apply: true,
			want: map[Outcome][]string{}},
		{name: "whole database", sel: Selection{DB: "bar", From: day1, To: day1.Add(time.Minute)}, apply: true,
			want: map[Outcome][]string{Restored: {`{"$numberInt":"1"}`, `{"$numberInt":"1"}`}, SkippedExists: {`"back"`}}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary, dr := newCluster(t), newCluster(t)
			for _, coll := range []string{"foo", "other"} {
				if _, err := dr.Database("bar").Collection(coll).InsertMany(ctx, drDocs); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := primary.Database("bar").Collection("foo").InsertMany(ctx, primaryDocs); err != nil {
				t.Fatal(err)
			}
			store := memStore{}
			archiveDeletes(t, store, dels)
			before := snapshot(t, primary)

			var progress [][2]int
			rep, err := Run(ctx, Options{Primary: primary, DR: dr, Archive: ArchiveReader{Store: store, Layout: layout},
				Select: tt.sel, Apply: tt.apply, Overwrite: tt.overwrite, BatchSize: 2,
				Progress: func(done, selected int) { progress = append(progress, [2]int{done, selected}) }})
			if err != nil {
				t.Fatal(err)
			}
			// Reported once the selection is known, then after each batch of 2, ending at all of it.
			if want := 1 + (rep.Selected+1)/2; len(progress) != want || progress[0] != [2]int{0, rep.Selected} ||
				progress[len(progress)-1] != [2]int{rep.Selected, rep.Selected} {
				t.Errorf("progress %v for %d selected in batches of 2", progress, rep.Selected)
			}
			for _, o := range []Outcome{Restored, WouldRestore, Overwritten, WouldOverwrite, SkippedExists, MissingInDR} {
				if got := ids(rep.Items, o); !slices.Equal(got, tt.want[o]) {
					t.Errorf("%s: %v, want %v", o, got, tt.want[o])
				}
			}

			after := snapshot(t, primary)
			drNow := snapshot(t, dr)
			changed := map[string]bool{}
			for _, it := range rep.Items {
				if it.Outcome == Restored || it.Outcome == Overwritten {
					changed[it.NS+"|"+it.ID] = true
					if !bytes.Equal(after[it.NS+"|"+it.ID], drNow[it.NS+"|"+it.ID]) {
						t.Errorf("%s %s in the primary is not DR's version", it.NS, it.ID)
					}
				}
			}
			// Nothing else in the primary changed; a dry run changed nothing at all.
			for k, v := range before {
				if !changed[k] && !bytes.Equal(v, after[k]) {
					t.Errorf("%s changed in the primary without being selected", k)
				}
			}
			if len(after) != len(before)+len(tt.want[Restored]) {
				t.Errorf("primary has %d documents, want %d", len(after), len(before)+len(tt.want[Restored]))
			}

			var table bytes.Buffer
			if err := rep.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			if rep.DryRun != !tt.apply || (rep.DryRun && !strings.Contains(table.String(), "dry run")) {
				t.Errorf("dry run flag %v, table:\n%s", rep.DryRun, table.String())
			}
			// A dry run counts what it would write, never what it wrote, in the report and the table.
			counts := map[Outcome]int{Restored: rep.Restored, WouldRestore: rep.WouldRestore,
				Overwritten: rep.Overwritten, WouldOverwrite: rep.WouldOverwrite}
			for o, n := range counts {
				if n != len(tt.want[o]) {
					t.Errorf("report counts %d %s, want %d", n, o, len(tt.want[o]))
				}
			}
			verdict, _, _ := strings.Cut(table.String(), "\n")
			for _, word := range []string{"would restore", "would overwrite", " restored", " overwritten"} {
				if got, want := strings.Contains(verdict, word), strings.HasPrefix(word, "would") == rep.DryRun; got != want {
					t.Errorf("verdict line %q: contains %q = %v, want %v", verdict, word, got, want)
				}
			}
		})
	}
}

// snapshot returns every document of the cluster's bar database by "bar.coll|canonical _id".
func snapshot(t *testing.T, c *mongo.Client) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	names, err := c.Database("bar").ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		cur, err := c.Database("bar").Collection(n).Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			id, _ := changeevent.IDJSON(cur.Current.Lookup("_id"))
			out["bar."+n+"|"+string(id)] = bytes.Clone(cur.Current)
		}
		_ = cur.Close(ctx)
	}
	return out
}

func TestParseID(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"$oid":"62d70f2e9416e4a253875177"}`, `{"$oid":"62d70f2e9416e4a253875177"}`},
		{`62d70f2e9416e4a253875177`, `{"$oid":"62d70f2e9416e4a253875177"}`},
		{`{"$numberLong":"5"}`, `{"$numberLong":"5"}`},
		{`5`, `{"$numberInt":"5"}`},
		{`"abc"`, `"abc"`},
		{`abc`, `"abc"`},
	}
	for _, tt := range tests {
		id, err := ParseID(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := idKey(id); got != tt.want {
			t.Errorf("ParseID(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestDayInRange(t *testing.T) {
	key := "docdbdr/deletes/db=bar/coll=foo/dt=2024-03-01/changevents-0-5.json.gz"
	d := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		from, to time.Time
		want     bool
	}{
		{time.Time{}, time.Time{}, true},
		{d.Add(23 * time.Hour), time.Time{}, true},
		{d.Add(24 * time.Hour), time.Time{}, false},
		{time.Time{}, d, false},
		{time.Time{}, d.Add(time.Second), true},
	}
	for _, tt := range tests {
		if got := dayInRange(key, tt.from, tt.to); got != tt.want {
			t.Errorf("dayInRange(%v, %v) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}

func TestReportMerge(t *testing.T) {
	a := Report{DryRun: true, Selected: 3, WouldRestore: 2, SkippedExists: 1, Items: []Item{{NS: "bar.foo"}}}
	a.Merge(Report{DryRun: true, Selected: 2, WouldRestore: 1, WouldOverwrite: 1, MissingInDR: 0, Items: []Item{{NS: "bar.x"}}})
	want := Report{DryRun: true, Selected: 5, WouldRestore: 3, WouldOverwrite: 1, SkippedExists: 1}
	if a.Selected != want.Selected || a.WouldRestore != want.WouldRestore || a.WouldOverwrite != want.WouldOverwrite ||
		a.SkippedExists != want.SkippedExists || len(a.Items) != 2 || a.Items[1].NS != "bar.x" {
		t.Errorf("merged %+v", a)
	}
}
