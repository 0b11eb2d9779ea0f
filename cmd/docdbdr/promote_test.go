package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/promote"
)

// TestPromoteCommand runs the command against the embedded stack with one intercepted delete in
// apply's ledger: the dry run moves nothing, --apply moves it into the side database, a second
// --apply finds it moved. (pkg/promote's TestFailover is the end-to-end check.)
func TestPromoteCommand(t *testing.T) {
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
	for _, kv := range st.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, k := range []string{"WATCH_DB", "WATCH_COLLECTIONS", "NAMESPACE_MAP", "DR_STATE_DB", "LOG_LEVEL"} {
		t.Setenv(k, "")
	}
	dr, err := mongo.Connect(ctx, options.Client().ApplyURI(st.DRURI))
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Disconnect(context.Background())
	doc := bson.D{{Key: "_id", Value: int32(7)}, {Key: "x", Value: "kept by DR"}}
	if _, err := dr.Database("shop").Collection("a").InsertOne(ctx, doc); err != nil {
		t.Fatal(err)
	}
	idType, idBytes, _ := bson.MarshalValue(int32(7))
	w := apply.NewMongoWriter(dr)
	if _, err := w.Claim(ctx, []apply.LedgerEntry{{EventID: "e1", DB: "shop", Coll: "a", Op: "delete",
		DocID: bson.RawValue{Type: idType, Value: idBytes}, Held: changeevent.Namespace{DB: "shop", Coll: "a"},
		ClusterTime: primitive.Timestamp{T: 1714564800, I: 1}, Object: "docdbdr/deletes/x.json.gz", State: apply.StateWritten,
		Topic: st.Topic, At: time.Now()}}); err != nil {
		t.Fatal(err)
	}

	promoteCmd := func(args ...string) promote.Report {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, append([]string{"promote", "--json"}, args...), &out, &errOut); code != 0 {
			t.Fatalf("promote %v: exit %d\n%s", args, code, errOut.String())
		}
		var r promote.Report
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("promote %v: %v\n%s", args, err, out.String())
		}
		return r
	}
	live := func() int64 {
		n, err := dr.Database("shop").Collection("a").CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	if r := promoteCmd(); r.Apply || r.Deletes.Moved != 1 || live() != 1 {
		t.Errorf("dry run: apply %v, would move %d, live documents %d; want false, 1, 1", r.Apply, r.Deletes.Moved, live())
	}
	if r := promoteCmd("--apply", "--drain-timeout", "1s"); !r.Apply || !r.Fenced || r.Deletes.Moved != 1 || live() != 0 {
		t.Errorf("--apply: apply %v fenced %v, moved %d, live documents %d; want true, true, 1, 0", r.Apply, r.Fenced, r.Deletes.Moved, live())
	}
	var side bson.Raw
	if err := dr.Database("docdbdr_intercepted").Collection(promote.SideDeletes).FindOne(ctx, bson.D{{Key: "_id", Value: "e1"}}).Decode(&side); err != nil {
		t.Fatal(err)
	}
	want, _ := bson.Marshal(doc)
	if !bytes.Equal(side.Lookup("doc").Document(), want) || side.Lookup("archive", "object").StringValue() != "docdbdr/deletes/x.json.gz" {
		t.Errorf("side document %s", side)
	}
	if r := promoteCmd("--apply"); r.Deletes.Moved != 0 || r.Deletes.AlreadyMoved != 1 || !r.FenceExisted {
		t.Errorf("second --apply: moved %d, already moved %d, fence existed %v", r.Deletes.Moved, r.Deletes.AlreadyMoved, r.FenceExisted)
	}
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"promote"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "DRY RUN") {
		t.Errorf("table: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if code := run(ctx, []string{"promote", "--primary-lost-at", "yesterday"}, &out, &errOut); code != 2 {
		t.Errorf("a bad --primary-lost-at: exit %d, want 2", code)
	}
}
