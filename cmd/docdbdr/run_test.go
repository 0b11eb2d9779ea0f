package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// TestRunEndToEnd runs `docdbdr run` against the embedded stack as the README recipe does (the
// environment of devstack's env file, WATCH_DB included, change streams enabled by devstack),
// writes from a plain driver client at a steady rate (inserts, then updates and deletes), checks
// the result with `docdbdr verify` and `docdbdr status`, measures the end-to-end lag (write
// acknowledged in the primary → document visible in a change stream on DR), and stops the run
// as Ctrl-C does.
//
// DOCDBDR_RUN_WRITES (default 2000) and DOCDBDR_RUN_RATE (writes/s, default 1000) size the
// steady phase.
func TestRunEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	writes, rate := envInt(t, "DOCDBDR_RUN_WRITES", 2000), envInt(t, "DOCDBDR_RUN_RATE", 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := startStack(ctx, t)
	if err := enableStreams(ctx, st, "bar"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WATCH_DB", "bar")

	// A plain driver client, as a user's application would use: no project code.
	plain := func(uri string) *mongo.Client {
		c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
		return c
	}
	primary := plain(st.PrimaryURI).Database("bar").Collection("foo")
	drColl := plain(st.DRURI).Database("bar").Collection("foo")

	// Arrival in DR, watched on DR itself.
	arrived := map[int64]time.Time{}
	var arrivedMu sync.Mutex
	cs, err := drColl.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetMaxAwaitTime(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for cs.Next(watchCtx) {
			at := time.Now()
			// Apply writes a document with an upsert, which the stream may report as insert,
			// replace or update: the first event of an _id is its arrival.
			id, ok := cs.Current.Lookup("documentKey", "_id").AsInt64OK()
			if !ok {
				continue
			}
			arrivedMu.Lock()
			if _, seen := arrived[id]; !seen {
				arrived[id] = at
			}
			arrivedMu.Unlock()
		}
	}()
	defer func() { stopWatch(); <-watched; _ = cs.Close(context.Background()) }()

	out := &syncBuffer{}
	runCtx, stopRun := context.WithCancel(ctx)
	exited := make(chan struct{}) // closed when run returns, with code set
	var code int
	started := time.Now()
	go func() {
		defer close(exited)
		code = run(runCtx, []string{"run", "--capture-interval", "200ms"}, out, os.Stderr)
	}()
	defer func() {
		stopRun()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
		}
	}()

	// Capture starts at "now" the first time (START_AT): wait until it streams, by writing
	// markers to another collection until one reaches DR.
	ready := plain(st.PrimaryURI).Database("bar").Collection("ready")
	drReady := plain(st.DRURI).Database("bar").Collection("ready")
	for i := 0; ; i++ {
		if _, err := ready.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
		if n, _ := drReady.CountDocuments(ctx, bson.D{}); n > 0 {
			break
		}
		if i > 300 {
			t.Fatalf("no write reached DR within 30s; run output:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Logf("capture streaming %s after the start", time.Since(started).Round(time.Millisecond))

	// Steady writes: one insert every 1/rate.
	acked := make([]time.Time, writes)
	t0 := time.Now()
	every := time.Second / time.Duration(rate)
	for i := range writes {
		if d := time.Until(t0.Add(time.Duration(i) * every)); d > 0 {
			time.Sleep(d)
		}
		if _, err := primary.InsertOne(ctx, bson.D{{Key: "_id", Value: int64(i)}, {Key: "n", Value: int32(i)}, {Key: "at", Value: time.Now()}}); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
		acked[i] = time.Now()
	}
	achieved := float64(writes) / time.Since(t0).Seconds()
	// Then updates and deletes (deletes are intercepted: DR keeps the documents, the archive has them).
	for i := range 10 {
		if _, err := primary.UpdateOne(ctx, bson.D{{Key: "_id", Value: int64(i)}}, bson.D{{Key: "$set", Value: bson.D{{Key: "updated", Value: true}}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 10; i < 15; i++ {
		if _, err := primary.DeleteOne(ctx, bson.D{{Key: "_id", Value: int64(i)}}); err != nil {
			t.Fatal(err)
		}
	}

	// verify until it finds no real difference (apply has caught up), within a deadline.
	var verifyOut, verifyErr bytes.Buffer
	deadline := time.Now().Add(60 * time.Second)
	for {
		verifyOut.Reset()
		verifyErr.Reset()
		code := run(ctx, []string{"verify", "--db", "bar", "--collections", "foo"}, &verifyOut, &verifyErr)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify still exits %d after 60s\n%s\n%s\nrun output:\n%s", code, verifyOut.String(), verifyErr.String(), out.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("verify clean %s after the start", time.Since(started).Round(time.Millisecond))
	var statusOut, statusErr bytes.Buffer
	if code := run(ctx, []string{"status", "--db", "bar"}, &statusOut, &statusErr); code != 0 || !strings.Contains(statusOut.String(), "scope bar") {
		t.Errorf("status: exit %d\n%s\n%s", code, statusOut.String(), statusErr.String())
	}

	// The end-to-end lag of the steady phase.
	arrivedMu.Lock()
	var lags []time.Duration
	for i, at := range acked {
		if a, ok := arrived[int64(i)]; ok {
			lags = append(lags, a.Sub(at))
		}
	}
	if len(lags) != writes {
		var missing []int
		for i := range acked {
			if _, ok := arrived[int64(i)]; !ok && len(missing) < 20 {
				missing = append(missing, i)
			}
		}
		t.Errorf("the DR watcher saw %d of %d inserts; missing %v", len(lags), writes, missing)
	}
	arrivedMu.Unlock()
	if len(lags) > 0 {
		slices.Sort(lags)
		t.Logf("end-to-end lag of %d inserts at %.0f writes/s (asked %d/s), GOMAXPROCS %d: p50 %s, p99 %s, max %s",
			len(lags), achieved, rate, runtime.GOMAXPROCS(0), percentile(lags, 0.50).Round(time.Millisecond),
			percentile(lags, 0.99).Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond))
	}

	// Ctrl-C: the run stops within the grace of the invocation in progress, and says so.
	stopRun()
	select {
	case <-exited:
		t.Logf("run stopped %s after the start", time.Since(started).Round(time.Millisecond))
		if code != 0 {
			t.Errorf("run exited %d after cancel, want 0\n%s", code, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s of cancel")
	}
	text := out.String()
	for _, want := range []string{"docdbdr run: capturing database bar", "capture: ", "apply: batch of", "docdbdr run: stopped; "} {
		if !strings.Contains(text, want) {
			t.Errorf("run output lacks %q:\n%s", want, text)
		}
	}
}

// TestRunNeedsAScope: without WATCH_DB, run fails at once naming the variable.
func TestRunNeedsAScope(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	startStack(ctx, t)
	var errOut bytes.Buffer
	if code := run(ctx, []string{"run"}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "WATCH_DB: required") {
		t.Errorf("exit %d, stderr:\n%s", code, errOut.String())
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for one writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunSummaries checks the per-batch lines, as text and as JSON, and the totals (a failed
// apply batch is retried: it does not count as applied).
func TestRunSummaries(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	feed := func(s *runSummaries) {
		s.capture(localrun.CaptureResult{Started: t0, Ended: t0.Add(45 * time.Second),
			Summary: capture.Summary{Events: 7, Acknowledged: 7, StopReason: capture.StopContinuousDrain}})
		s.capture(localrun.CaptureResult{Started: t0, Ended: t0.Add(6 * time.Second), Err: fmt.Errorf("drain: %w", context.Canceled),
			Summary: capture.Summary{Events: 3, Acknowledged: 3, StopReason: capture.StopError, CheckpointSaved: true}})
		s.apply(localrun.ApplyResult{Records: 5, Started: t0, Ended: t0.Add(20 * time.Millisecond),
			Summary: apply.Summary{Applied: 4, Archived: 1, MaxLag: 1500 * time.Millisecond}})
		s.apply(localrun.ApplyResult{Records: 2, Err: errors.New("DR down")})
		s.total()
	}
	var text bytes.Buffer
	feed(&runSummaries{w: &text})
	for _, want := range []string{"capture: 7 event(s), 7 acknowledged, stopped on continuous-drain-elapsed after 45s",
		"apply: batch of 5 record(s): 4 applied, 1 archived, 0 already applied, in 20ms, max lag 1.5s",
		"capture: 3 event(s), 3 acknowledged, stopped on error after 6s, cut short by the stop (checkpoint saved)",
		"FAILED (retried): DR down", "stopped; 10 event(s) captured, 5 record(s) applied (4 writes, 1 archived), 0 failed capture invocation(s), 1 failed apply batch(es)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	feed(&runSummaries{w: &js, json: true})
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d JSON lines:\n%s", len(lines), js.String())
	}
	var a applyLine
	if err := json.Unmarshal([]byte(lines[2]), &a); err != nil || a.Kind != "apply" || a.Applied != 4 || time.Duration(a.MaxLag) != 1500*time.Millisecond {
		t.Errorf("apply line %s: %+v, %v", lines[2], a, err)
	}
	var total map[string]any
	if err := json.Unmarshal([]byte(lines[4]), &total); err != nil || total["records"] != float64(5) || total["failedApplyBatches"] != float64(1) ||
		total["failedCaptures"] != float64(0) {
		t.Errorf("total line %s: %v", lines[4], err)
	}
}
