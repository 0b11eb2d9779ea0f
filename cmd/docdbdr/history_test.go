package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
)

func TestHistoryAndAsOfUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		want   string
		absent string // when set, stderr must not hold it
	}{
		{"as-of without a collection", []string{"restore", "--db", "bar", "--as-of", "2024-05-01T10:42:00Z"}, "--as-of needs one collection", ""},
		{"as-of not a time", []string{"restore", "--db", "bar", "--coll", "foo", "--as-of", "10:42"}, "--as-of: want an RFC 3339 time", ""},
		{"filter without as-of", []string{"restore", "--db", "bar", "--filter", "{}"}, "need --as-of", ""},
		{"filter not a query", []string{"restore", "--db", "bar", "--coll", "foo", "--as-of", "2024-05-01T10:42:00Z", "--filter", "{cat"}, "--filter: want a query document", ""},
		{"as-of with --from", []string{"restore", "--db", "bar", "--coll", "foo", "--as-of", "2024-05-01T10:42:00Z", "--from", "2024-05-01T10:00:00Z"}, "are for undeletes", ""},
		{"both collection flags", []string{"restore", "--db", "bar", "--coll", "foo", "--collections", "foo"}, "not both", ""},
		{"filter and ids", []string{"restore", "--db", "bar", "--collections", "foo", "--as-of", "2024-05-01T10:42:00Z", "--filter", "{}", "--id", "1"}, "cannot be combined", ""},
		{"bad --to", []string{"restore", "--db", "bar", "--to", "yesterday"}, "--to: want an RFC 3339 time", ""},
		{"into without as-of", []string{"restore", "--db", "bar", "--into", "x"}, "need --as-of", ""},
		{"history without an id", []string{"history", "--db", "bar", "--collection", "foo"}, "--id is required", "--collection is required"},
		{"history without an id, deprecated --coll", []string{"history", "--db", "bar", "--coll", "foo"}, "--id is required", "--collection is required"},
		{"history without a collection", []string{"history", "--db", "bar", "--id", "1"}, "--collection is required", ""},
		{"history with both collection flags", []string{"history", "--db", "bar", "--coll", "foo", "--collection", "foo", "--id", "1"}, "not both", ""},
		{"restore-collection without a collection", []string{"restore-collection", "--db", "bar"}, "--collection is required", ""},
		{"restore-collection with both collection flags", []string{"restore-collection", "--db", "bar", "--coll", "a", "--collection", "a"}, "not both", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(context.Background(), tc.args, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
			if tc.absent != "" && strings.Contains(stderr.String(), tc.absent) {
				t.Errorf("stderr %q holds %q", stderr.String(), tc.absent)
			}
		})
	}
}

// TestHistoryAndAsOfCommands runs both commands against the embedded stack with the history on:
// a document inserted, updated, then overwritten by a bad update after T; history lists the
// three versions with what each changed, restore --as-of T reports it and, with --apply, puts
// the version at T back.
func TestHistoryAndAsOfCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	overrides := map[string]string{"WATCH_DB": "bar", "WATCH_COLLECTIONS": "foo", "IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "50ms",
		"DEADLINE_MARGIN": "1s", "ARCHIVE_HISTORY": "on"}
	p, err := localrun.New(ctx, localrun.Options{Getenv: localrun.Getenv(overrides, st.Env(), nil), ManualCapture: true,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), BatchingWindow: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CaptureOnce(ctx, capture.Overrides{IdleTimeout: capture.Duration(10 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	p.Start(ctx)
	foo := p.Primary().Database("bar").Collection("foo")
	write := func(f func() error) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	id := bson.D{{Key: "_id", Value: int32(1)}}
	set := func(v int32) func() error {
		return func() error {
			_, err := foo.UpdateOne(ctx, id, bson.D{{Key: "$set", Value: bson.D{{Key: "p", Value: v}}}})
			return err
		}
	}
	write(func() error {
		_, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: int32(1)}, {Key: "p", Value: int32(1)}})
		return err
	})
	write(set(2))
	write(func() error { return p.Sync(ctx) })
	time.Sleep(1100 * time.Millisecond)
	asOf := time.Now().Truncate(time.Second)
	time.Sleep(time.Until(asOf.Add(time.Second)))
	write(set(0))
	write(func() error { return p.Sync(ctx) })

	for _, kv := range st.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, k := range []string{"WATCH_DB", "WATCH_COLLECTIONS", "LOG_LEVEL"} {
		t.Setenv(k, "")
	}
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, errOut.String())
		}
		return out.String()
	}

	var vs []restore.Version
	if err := json.Unmarshal([]byte(cli("history", "--db", "bar", "--collection", "foo", "--id", "1", "--json")), &vs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		var cs []string
		for _, c := range v.Changes {
			cs = append(cs, c.Kind+" "+c.Path+" "+compact(c.Before)+" "+compact(c.After))
		}
		got = append(got, v.Operation+": "+strings.Join(cs, ", "))
	}
	want := []string{`insert: created   {"_id":{"$numberInt":"1"},"p":{"$numberInt":"1"}}`,
		`update: changed p {"$numberInt":"1"} {"$numberInt":"2"}`, `update: changed p {"$numberInt":"2"} {"$numberInt":"0"}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if table := cli("history", "--db", "bar", "--coll", "foo", "--id", "1"); !strings.Contains(table, "3 archived versions") ||
		!strings.Contains(table, `p: {"$numberInt":"2"} -> {"$numberInt":"0"}`) {
		t.Errorf("history table:\n%s", table)
	}

	T := asOf.Format(time.RFC3339)
	var rep restore.AsOfReport
	if err := json.Unmarshal([]byte(cli("restore", "--db", "bar", "--collections", "foo", "--as-of", T, "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.DryRun || rep.ChangedBack != 1 || rep.Selected != 1 {
		t.Errorf("dry run: %+v", rep)
	}
	cli("restore", "--db", "bar", "--coll", "foo", "--as-of", T, "--apply")
	var doc bson.D
	if err := foo.FindOne(ctx, id).Decode(&doc); err != nil || doc[1].Value != int32(2) {
		t.Errorf("after restore --as-of %s: %v (%v), want p: 2", T, doc, err)
	}
	var errOut bytes.Buffer
	if code := run(ctx, []string{"restore", "--db", "bar", "--coll", "foo", "--as-of", asOf.Add(-time.Hour).Format(time.RFC3339)}, io.Discard, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "switched on") {
		t.Errorf("a T before the history: exit %d, %s", code, errOut.String())
	}
}

func compact(js json.RawMessage) string {
	var b bytes.Buffer
	if len(js) > 0 {
		_ = json.Compact(&b, js)
	}
	return b.String()
}
