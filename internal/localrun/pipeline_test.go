package localrun

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/faults"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

// localOverrides are short bounds so that an idle capture invocation ends quickly.
var localOverrides = map[string]string{
	"WATCH_DB":          "bar",
	"WATCH_COLLECTIONS": "foo",
	"IDLE_TIMEOUT":      "200ms",
	"MAX_AWAIT":         "50ms",
	"DEADLINE_MARGIN":   "1s",
	"CHECKPOINT_EVERY":  "1000",
}

func quietLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// startPipeline starts the embedded stack and a pipeline over it (localOverrides, then extra),
// with change streams enabled on the scope and the checkpoint pinned at "now".
func startPipeline(t *testing.T, opts Options, extra map[string]string) (*Pipeline, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the embedded stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	overrides := map[string]string{}
	for _, m := range []map[string]string{localOverrides, extra} {
		for k, v := range m {
			overrides[k] = v
		}
	}
	opts.Getenv = Getenv(overrides, st.Env(), nil)
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	opts.BatchingWindow = 50 * time.Millisecond
	opts.RetryBackoff = 10 * time.Millisecond
	opts.MaxRetryBackoff = 50 * time.Millisecond
	p, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()); err != nil {
		t.Fatal(err)
	}
	// The first invocation pins the checkpoint at "now": writes after it are captured.
	if _, err := p.CaptureOnce(ctx, capture.Overrides{IdleTimeout: capture.Duration(10 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	return p, ctx
}

func TestGetenvLayers(t *testing.T) {
	get := Getenv(map[string]string{"A": "override", "C": ""}, []string{"A=env", "B=env", "C=env", "bad"},
		func(n string) string { return "process-" + n })
	for name, want := range map[string]string{"A": "override", "B": "env", "C": "", "D": "process-D"} {
		if got := get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if got := Getenv(nil, nil, nil)("X"); got != "" {
		t.Errorf("no layers: %q", got)
	}
}

func TestNewReportsEveryMissingVariable(t *testing.T) {
	_, err := New(context.Background(), Options{Getenv: Getenv(nil, nil, nil)})
	if err == nil {
		t.Fatal("New without configuration succeeded")
	}
	for _, name := range []string{"PRIMARY_URI", "DR_URI", "KAFKA_BROKERS", "ARCHIVE_BUCKET", "WATCH_DB"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

// TestScheduledPipelineReplicatesAndIntercepts runs the schedule and the event source mapping:
// an insert and an update reach DR, an unwatched collection does not, and a delete is archived
// instead of applied.
func TestScheduledPipelineReplicatesAndIntercepts(t *testing.T) {
	var captures, applies atomic.Int32
	p, ctx := startPipeline(t, Options{
		CaptureInterval: 100 * time.Millisecond,
		OnCapture:       func(CaptureResult) { captures.Add(1) },
		OnApply:         func(ApplyResult) { applies.Add(1) },
	}, nil)
	p.Start(ctx)
	foo := p.Primary().Database("bar").Collection("foo")
	id := primitive.NewObjectID()
	mustDo(t, func() error {
		_, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "x", Value: 1}})
		return err
	})
	mustDo(t, func() error {
		_, err := foo.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 2}}}})
		return err
	})
	mustDo(t, func() error {
		_, err := p.Primary().Database("bar").Collection("exa").InsertOne(ctx, bson.D{{Key: "y", Value: 1}})
		return err
	})
	mustDo(t, func() error { _, err := foo.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); return err })
	since := time.Now()
	if _, err := p.WaitCapture(ctx, since); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}

	var got bson.M
	if err := p.DR().Database("bar").Collection("foo").FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&got); err != nil {
		t.Fatalf("DR lost the deleted document: %v", err)
	}
	if got["x"] != int32(2) {
		t.Errorf("DR document %v, want x: 2", got)
	}
	names, err := p.DR().Database("bar").ListCollectionNames(ctx, bson.D{})
	if err != nil || len(names) != 1 || names[0] != "foo" {
		t.Errorf("DR collections %v (%v), want [foo]", names, err)
	}
	lines := archivedLines(ctx, t, p)
	if len(lines) != 1 || !strings.Contains(string(lines[0]), id.Hex()) || !strings.Contains(string(lines[0]), `"operation":"delete"`) {
		t.Errorf("archive lines %q, want the one delete of %s", lines, id.Hex())
	}
	p.Stop()
	if captures.Load() < 2 || applies.Load() < 1 {
		t.Errorf("captures %d, applies %d: the schedule or the mapping did not run", captures.Load(), applies.Load())
	}
}

// TestFaultsAreRetriedToTheSameState crashes capture before its checkpoint (so Kafka gets the
// same events twice) and fails apply part way through a bulk write and on an archive PUT (so the
// mapping redelivers). DR and the archive end as without faults.
func TestFaultsAreRetriedToTheSameState(t *testing.T) {
	var saveFault, writeFault, putFault faults.Fault
	var failedApplies atomic.Int32
	p, ctx := startPipeline(t, Options{
		ManualCapture: true,
		Hooks: Hooks{
			CaptureDeps: func(d capture.Deps) capture.Deps {
				d.Checkpoints = faults.FailingCheckpoints{Checkpoints: d.Checkpoints, SaveFault: &saveFault}
				return d
			},
			DR:      func(d apply.DR) apply.DR { return faults.FailingDR{DR: d, WriteFault: &writeFault} },
			Archive: func(a apply.Archive) apply.Archive { return faults.FailingArchive{Archive: a, PutFault: &putFault} },
		},
		OnApply: func(r ApplyResult) {
			if errors.Is(r.Err, faults.ErrInjected) {
				failedApplies.Add(1)
			}
		},
	}, nil)
	foo := p.Primary().Database("bar").Collection("foo")
	var ids []any
	for i := range 20 {
		ids = append(ids, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: i}})
	}
	mustDo(t, func() error { _, err := foo.InsertMany(ctx, ids); return err })
	mustDo(t, func() error {
		_, err := foo.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: 5}}}})
		return err
	})

	saveFault.Arm(0, -1)
	sum, err := p.CaptureOnce(ctx, capture.Overrides{})
	if !errors.Is(err, faults.ErrInjected) || sum.Acknowledged != 25 {
		t.Fatalf("crashing capture: acknowledged %d, err %v; want 25 and the injected fault", sum.Acknowledged, err)
	}
	saveFault.Disarm()
	writeFault.Arm(7, 1)
	putFault.Arm(0, 1)
	p.Start(ctx)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The write and the PUT may fail in one invocation: apply writes DR and S3 side by side.
	if writeFault.Fired() != 1 || putFault.Fired() != 1 || failedApplies.Load() < 1 {
		t.Errorf("faults fired: write %d put %d, failed applies %d", writeFault.Fired(), putFault.Fired(), failedApplies.Load())
	}
	n, err := p.DR().Database("bar").Collection("foo").CountDocuments(ctx, bson.D{})
	if err != nil || n != 20 {
		t.Errorf("DR has %d documents (%v), want all 20", n, err)
	}
	// Each delete reached Kafka twice (the crashed run and its replay), and is archived once:
	// one line per event (docs/apply.md).
	seen := map[archive.Kafka]int{}
	ids5 := map[string]int{}
	for _, l := range archivedLines(ctx, t, p) {
		r, err := archive.ParseLine(l)
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Kafka]++
		ids5[string(r.ID)]++
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("Kafka record %+v archived %d times", k, c)
		}
	}
	if len(ids5) != 5 {
		t.Errorf("archived ids %v, want 5 distinct", ids5)
	}
	for id, c := range ids5 {
		if c != 1 {
			t.Errorf("id %s archived %d times, want once (though published by the crashed run and again)", id, c)
		}
	}
}

func mustDo(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

// archivedLines returns every line of every delete archive object of the scope's database.
func archivedLines(ctx context.Context, t *testing.T, p *Pipeline) [][]byte {
	t.Helper()
	layout := archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}
	keys, err := p.Archive().List(ctx, layout.DeletesPrefix(p.Scope().DB, ""))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, k := range keys {
		body, err := p.Archive().Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := archive.DecodeObject(body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, lines...)
	}
	return out
}
