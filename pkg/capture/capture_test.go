package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
	"go.mongodb.org/mongo-driver/mongo"
)

type harness struct {
	clock   *fakeClock
	stream  *fakeStream
	opener  *fakeOpener
	batch   *fakeBatch
	cps     *fakeCheckpoints
	blob    *fakeBlob
	metrics bytes.Buffer
	logs    bytes.Buffer
	opts    Options
	inv     Invocation
}

func defaultOptions() Options {
	return Options{
		Scope:                 scope.Scope{DB: "bar", Collections: []string{"foo"}},
		MaxEvents:             100,
		MaxBytes:              1 << 30,
		CheckpointEvery:       1000,
		IdleTimeout:           3 * time.Second,
		DeadlineMargin:        10 * time.Second,
		LeaseTTL:              15 * time.Minute,
		ChangeStreamRetention: 3 * time.Hour,
		MaxMessageBytes:       1_000_000,
		ArchivePrefix:         "docdbdr/",
	}
}

func newHarness(events ...bson.Raw) *harness {
	h := &harness{clock: newClock(), opts: defaultOptions(), blob: &fakeBlob{}}
	h.stream = &fakeStream{clock: h.clock, events: events, maxAwait: time.Second, gap: 10 * time.Millisecond}
	h.opener = &fakeOpener{stream: h.stream}
	h.batch = &fakeBatch{ackLimit: -1}
	h.cps = &fakeCheckpoints{acked: h.batch.Acked, now: h.clock.Now}
	h.inv = Invocation{Owner: "req-1", Deadline: h.clock.Now().Add(15 * time.Minute)}
	return h
}

func (h *harness) run() (Summary, error) {
	c := New(h.opts, Deps{
		Streams:     h.opener,
		Publisher:   &fakePublisher{batch: h.batch},
		Checkpoints: h.cps,
		Blobs:       h.blob,
		Now:         h.clock.Now,
		Sleep:       func(_ context.Context, d time.Duration) error { h.clock.Add(d); return nil },
		Logger:      slog.New(slog.NewJSONHandler(&h.logs, nil)),
		Metrics:     &h.metrics,
	})
	return c.Run(t0ctx(), h.inv)
}

// metric returns the value of an EMF metric from the emitted line.
func (h *harness) metric(t *testing.T, name string) float64 {
	t.Helper()
	var line map[string]any
	if err := json.Unmarshal(h.metrics.Bytes(), &line); err != nil {
		t.Fatalf("metrics line %q: %v", h.metrics.String(), err)
	}
	v, ok := line[name].(float64)
	if !ok {
		t.Fatalf("metric %s missing from %s", name, h.metrics.String())
	}
	return v
}

func (h *harness) savedIndex() int {
	if len(h.cps.state.ResumeToken) == 0 {
		return 0
	}
	return tokenIndex(h.cps.state.ResumeToken)
}

func TestStopReasons(t *testing.T) {
	tests := []struct {
		name       string
		events     []bson.Raw
		setup      func(*harness)
		wantReason string
		wantEvents int
	}{
		{"max events", inserts(1, 10), func(h *harness) { h.opts.MaxEvents = 4 }, StopMaxEvents, 4},
		{"max bytes", inserts(1, 10), func(h *harness) { h.opts.MaxBytes = 1 }, StopMaxBytes, 1},
		{"idle", inserts(1, 3), nil, StopIdle, 3},
		{"quiet scope is idle at once", nil, func(h *harness) { h.stream.pbrt = 99 }, StopIdle, 0},
		{"deadline", inserts(1, 3), func(h *harness) {
			h.opts.ContinuousDrain = time.Hour
			h.inv.Deadline = h.clock.Now().Add(h.opts.DeadlineMargin + 10*time.Second)
		}, StopDeadline, 3},
		{"continuous drain ignores idle", inserts(1, 3), func(h *harness) { h.opts.ContinuousDrain = 50 * time.Second }, StopContinuousDrain, 3},
		{"invalidate", append(inserts(1, 2), event(3, "drop", "bar", "foo"), event(4, "invalidate", "", ""), event(5, "insert", "bar", "foo")), nil, StopInvalidate, 3},
	}
	for _, tt := range tests {
		for _, batch := range []int{0, 3, 100} { // one event at a time, and groups of a batch
			t.Run(fmt.Sprintf("%s/batch=%d", tt.name, batch), func(t *testing.T) {
				h := newHarness(tt.events...)
				h.opener.batch = batch
				if tt.setup != nil {
					tt.setup(h)
				}
				stopReasonCase(t, h, tt.wantReason, tt.wantEvents)
			})
		}
	}
}

func stopReasonCase(t *testing.T, h *harness, wantReason string, wantEvents int) {
	t.Helper()
	start := h.clock.Now()
	sum, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	if sum.StopReason != wantReason || sum.Events != wantEvents {
		t.Errorf("stop %q after %d events, want %q after %d", sum.StopReason, sum.Events, wantReason, wantEvents)
	}
	if !sum.CheckpointSaved || !h.cps.released {
		t.Errorf("checkpoint saved %v, lease released %v", sum.CheckpointSaved, h.cps.released)
	}
	if wantReason == StopContinuousDrain && h.clock.Now().Sub(start) < 50*time.Second {
		t.Errorf("continuous drain stopped after %v", h.clock.Now().Sub(start))
	}
}

// TestGroupsKeepStreamOrder: events handed on in groups (the driver's batches) are published in
// stream order, the run stops exactly at MAX_EVENTS inside a group, and the checkpoint is the
// last event published.
func TestGroupsKeepStreamOrder(t *testing.T) {
	for _, batch := range []int{1, 7, 64, 101, 500} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			h := newHarness(inserts(1, 400)...)
			h.opener.batch = batch
			h.opts.MaxEvents = 333
			sum, err := h.run()
			if err != nil {
				t.Fatal(err)
			}
			if sum.Events != 333 || sum.StopReason != StopMaxEvents {
				t.Fatalf("%d events, stop %q; want 333, %q", sum.Events, sum.StopReason, StopMaxEvents)
			}
			for i, m := range h.batch.msgs {
				ev, err := changeevent.Unmarshal(m.Value)
				if err != nil {
					t.Fatal(err)
				}
				if got := tokenIndex(ev.ResumeToken); got != i+1 {
					t.Fatalf("message %d is event %d", i+1, got)
				}
			}
			if got := h.savedIndex(); got != 333 {
				t.Errorf("checkpoint at event %d, want 333", got)
			}
		})
	}
}

func TestInvalidateSavesStartAfterPosition(t *testing.T) {
	h := newHarness(event(1, "insert", "bar", "foo"), event(2, "drop", "bar", "foo"), event(3, "invalidate", "", ""))
	if _, err := h.run(); err != nil {
		t.Fatal(err)
	}
	if h.savedIndex() != 3 || !h.cps.state.AfterInvalidate {
		t.Fatalf("saved %d afterInvalidate=%v, want the invalidate's token", h.savedIndex(), h.cps.state.AfterInvalidate)
	}
	// The next run opens with startAfter.
	h2 := newHarness()
	h2.cps.state = h.cps.state
	if _, err := h2.run(); err != nil {
		t.Fatal(err)
	}
	if got := h2.opener.got[0]; tokenIndex(got.StartAfter) != 3 || got.ResumeAfter != nil {
		t.Errorf("opened with %+v, want startAfter the invalidate", got)
	}
}

func TestStartPosition(t *testing.T) {
	startAt := time.Date(2024, 4, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		state checkpoint.State
		opts  func(*Options)
		check func(Start) bool
	}{
		{"first run: now", checkpoint.State{}, nil, func(s Start) bool { return s.ResumeAfter == nil && s.StartAfter == nil && s.StartAt == nil }},
		{"first run: START_AT", checkpoint.State{}, func(o *Options) { o.StartAt = startAt }, func(s Start) bool {
			return s.StartAt != nil && s.StartAt.T == uint32(startAt.Unix())
		}},
		{"saved token", checkpoint.State{Position: checkpoint.Position{ResumeToken: token(7)}}, func(o *Options) { o.StartAt = startAt }, func(s Start) bool {
			return tokenIndex(s.ResumeAfter) == 7 && s.StartAt == nil
		}},
		{"reset to a time", checkpoint.State{StartAt: primitiveTS(1700000000)}, nil, func(s Start) bool { return s.StartAt != nil && s.StartAt.T == 1700000000 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.cps.state = tt.state
			if tt.opts != nil {
				tt.opts(&h.opts)
			}
			if _, err := h.run(); err != nil {
				t.Fatal(err)
			}
			if !tt.check(h.opener.got[0]) {
				t.Errorf("opened with %+v", h.opener.got[0])
			}
		})
	}
}

// TestCheckpointNeverBeyondLastAck: every save, during and after the drain, names an event
// whose message and all earlier ones were acknowledged at that moment.
func TestCheckpointNeverBeyondLastAck(t *testing.T) {
	tests := []struct {
		name      string
		ackLimit  int
		failAt    int
		wantSaved int // index of the event finally saved
		wantErr   bool
	}{
		{"all acknowledged", -1, 0, 20, false},
		{"acks stall at 7", 7, 0, 7, true},
		{"message 12 fails", -1, 12, 11, true},
		{"nothing acknowledged", 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(inserts(1, 20)...)
			h.opts.CheckpointEvery = 3
			h.batch.ackLimit, h.batch.failAt = tt.ackLimit, tt.failAt
			_, err := h.run()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			for i, pos := range h.cps.saves {
				if idx := tokenIndex(pos.ResumeToken); uint64(idx) > h.cps.ackedAt[i] {
					t.Errorf("save %d moved the checkpoint to event %d with only %d acknowledged", i, idx, h.cps.ackedAt[i])
				}
			}
			if got := h.savedIndex(); got != tt.wantSaved {
				t.Errorf("checkpoint at event %d, want %d", got, tt.wantSaved)
			}
			if tt.wantErr && h.metric(t, "Errors") != 1 {
				t.Error("Errors metric not set")
			}
		})
	}
}

func TestCheckpointEveryN(t *testing.T) {
	h := newHarness(inserts(1, 10)...)
	h.opts.CheckpointEvery = 4
	sum, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, p := range h.cps.saves {
		got = append(got, tokenIndex(p.ResumeToken))
	}
	// Saves after 4 and 8 acknowledgements, then the final one.
	if len(got) != 3 || got[0] != 4 || got[1] != 8 || got[2] != 10 || sum.Checkpoints != 3 {
		t.Errorf("saves at %v (summary %d)", got, sum.Checkpoints)
	}
}

func TestQuietScopeSavesPostBatchToken(t *testing.T) {
	tests := []struct {
		name   string
		events []bson.Raw
	}{
		{"no events", nil},
		{"events, then quiet", inserts(1, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(tt.events...)
			h.stream.pbrt = 500 // the server's post-batch token moved past other namespaces' changes
			sum, err := h.run()
			if err != nil {
				t.Fatal(err)
			}
			if h.savedIndex() != 500 || !sum.CheckpointSaved {
				t.Errorf("checkpoint at %d (saved %v), want the post-batch token 500", h.savedIndex(), sum.CheckpointSaved)
			}
		})
	}
}

func TestLeaseHeldIsACleanRefusal(t *testing.T) {
	h := newHarness(inserts(1, 3)...)
	h.cps.heldBy = "req-0"
	h.cps.heldUntil = h.inv.Deadline.Add(-h.opts.DeadlineMargin) // lapses too late for this run
	sum, err := h.run()
	if err != nil {
		t.Fatalf("a held lease must not fail the invocation: %v", err)
	}
	if sum.StopReason != StopLeaseHeld || !strings.Contains(sum.LeaseHeldBy, `"req-0"`) {
		t.Errorf("summary %+v does not say who holds the lease", sum)
	}
	if len(h.opener.got) != 0 || len(h.batch.msgs) != 0 || len(h.cps.saves) != 0 {
		t.Error("a refused invocation opened the stream, published or saved")
	}
	if h.metric(t, "LeaseHeld") != 1 {
		t.Error("LeaseHeld metric not set")
	}
}

// TestLeaseLapsingWithinTheBudgetIsTakenOver: a run that finds the lease held until a time
// before its soft deadline (a dead holder's lease) waits for it, takes over and captures.
func TestLeaseLapsingWithinTheBudgetIsTakenOver(t *testing.T) {
	h := newHarness(inserts(1, 3)...)
	h.cps.heldBy = "dead-req"
	h.cps.heldUntil = h.clock.Now().Add(25 * time.Second)
	start := h.clock.Now()
	sum, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	if sum.StopReason == StopLeaseHeld || sum.Events != 3 || !sum.CheckpointSaved {
		t.Fatalf("summary %+v: want the 3 events captured after the takeover", sum)
	}
	if sum.LeaseWaitMillis < 25_000 || sum.LeaseWaitMillis > 26_000 || !strings.Contains(sum.LeaseHeldBy, "dead-req") {
		t.Errorf("waited %d ms for the lease held by %q, want 25 s for dead-req", sum.LeaseWaitMillis, sum.LeaseHeldBy)
	}
	if took := h.clock.Now().Sub(start); took > time.Minute {
		t.Errorf("the run took %v", took)
	}
	if h.metric(t, "LeaseHeld") != 0 || h.metric(t, "LeaseWaitTime") < 25_000 {
		t.Errorf("LeaseHeld %v, LeaseWaitTime %v", h.metric(t, "LeaseHeld"), h.metric(t, "LeaseWaitTime"))
	}
}

func TestFencedSaveFails(t *testing.T) {
	h := newHarness(inserts(1, 10)...)
	h.opts.CheckpointEvery = 2
	h.cps.fenceNow = true
	sum, err := h.run()
	if !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("err = %v, want ErrFenced", err)
	}
	if len(h.cps.saves) != 0 || h.cps.released || sum.StopReason != StopError {
		t.Errorf("saves %d, released %v, stop %q", len(h.cps.saves), h.cps.released, sum.StopReason)
	}
	if len(h.batch.msgs) > 3 {
		t.Errorf("kept publishing after losing the lease: %d messages", len(h.batch.msgs))
	}
}

func TestHistoryLost(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"mongodb 286 at open", mongo.CommandError{Code: 286, Message: "Resume of change stream was not possible"}},
		{"documentdb 136 at open", mongo.CommandError{Code: 136, Message: "CollectionScan died due to position in capped collection being deleted"}},
		{"message only", errors.New("change stream history lost: the resume token is older than the oldest retained change")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.cps.state.Position = checkpoint.Position{ResumeToken: token(42), ClusterTime: primitiveTS(1714000000)}
			h.opener.err = tt.err
			sum, err := h.run()
			if !errors.Is(err, ErrHistoryLost) {
				t.Fatalf("err = %v, want ErrHistoryLost", err)
			}
			for _, want := range []string{"docdbdr bootstrap", "docdbdr reset-checkpoint", "unchanged", "2024-04-24T"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not say %q: %v", want, err)
				}
			}
			if h.metric(t, "HistoryLost") != 1 || sum.StopReason != StopError {
				t.Error("HistoryLost metric not 1")
			}
			if len(h.cps.saves) != 0 || h.savedIndex() != 42 {
				t.Error("the checkpoint moved")
			}
		})
	}
	// During the drain (a getMore) as well.
	h := newHarness(inserts(1, 2)...)
	h.stream.err = mongo.CommandError{Code: 286, Message: "history lost"}
	if _, err := h.run(); !errors.Is(err, ErrHistoryLost) || h.metric(t, "HistoryLost") != 1 {
		t.Errorf("history lost during the drain: %v", err)
	}
}

func TestStreamsNotEnabledQuotesTheCommand(t *testing.T) {
	tests := []struct {
		name  string
		scope scope.Scope
		want  string
	}{
		{"collection", scope.Scope{DB: "bar", Collections: []string{"foo"}}, `db.adminCommand({modifyChangeStreams: 1, database: "bar", collection: "foo", enable: true})`},
		{"database", scope.Scope{DB: "bar"}, `db.adminCommand({modifyChangeStreams: 1, database: "bar", collection: "", enable: true})`},
		{"list", scope.Scope{DB: "bar", Collections: []string{"foo", "x"}}, `db.adminCommand({modifyChangeStreams: 1, database: "bar", collection: "", enable: true})`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness()
			h.opts.Scope = tt.scope
			h.opener.err = mongo.CommandError{Code: 136, Message: "modifyChangeStreams has not been run for this collection"}
			_, err := h.run()
			if !errors.Is(err, ErrStreamsNotEnabled) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to quote %s", err, tt.want)
			}
			if errors.Is(err, ErrHistoryLost) {
				t.Error("not-enabled classified as history lost")
			}
		})
	}
}

func TestScopeFilter(t *testing.T) {
	events := []bson.Raw{
		event(1, "insert", "bar", "foo"),
		event(2, "insert", "bar", "exa"), // not watched
		event(3, "insert", "other", "foo"),
		event(4, "update", "bar", "x"),
		event(5, "rename", "bar", "tmp", bson.E{Key: "to", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}}),
		event(6, "rename", "bar", "x", bson.E{Key: "to", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "gone"}}}),
		event(7, "createIndexes", "bar", "foo"), // unknown operation type
		event(8, "delete", "bar", "exa"),
	}
	h := newHarness(events...)
	h.opts.Scope = scope.Scope{DB: "bar", Collections: []string{"foo", "x"}}
	h.opts.CheckpointEvery = 1
	sum, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range h.batch.msgs {
		ev, err := changeevent.Unmarshal(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(ev.Operation)+" "+ev.NS.String())
	}
	want := "insert bar.foo|update bar.x|rename bar.tmp|rename bar.x"
	if strings.Join(got, "|") != want {
		t.Errorf("published %v, want %s", got, want)
	}
	if sum.Skipped != 4 || sum.Events != 4 {
		t.Errorf("skipped %d events %d", sum.Skipped, sum.Events)
	}
	// The checkpoint moves past skipped events too.
	if h.savedIndex() != 8 {
		t.Errorf("checkpoint at %d, want 8", h.savedIndex())
	}
}

func TestScopePipeline(t *testing.T) {
	if p := (scope.Scope{DB: "bar", Collections: []string{"foo"}}).Pipeline(); len(p) != 0 {
		t.Errorf("a collection stream needs no filter: %v", p)
	}
	p := scope.Scope{DB: "bar", Collections: []string{"foo", "x"}}.Pipeline()
	js, _ := bson.MarshalExtJSON(bson.D{{Key: "p", Value: p}}, false, false)
	for _, want := range []string{`"ns.coll":{"$in":["foo","x"]}`, `"to.coll":{"$in":["foo","x"]}`, `"dropDatabase"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("pipeline %s lacks %s", js, want)
		}
	}
}

func TestClaimCheck(t *testing.T) {
	bigDoc := func(id int32) bson.Raw {
		b, _ := bson.Marshal(bson.D{{Key: "_id", Value: id}, {Key: "blob", Value: strings.Repeat("y", 5000)}})
		return b
	}
	bigUpdate := event(2, "update", "bar", "foo", bson.E{Key: "fullDocument", Value: bigDoc(2)})

	t.Run("oversized events go to S3", func(t *testing.T) {
		bigDrop := event(4, "dropDatabase", "bar", "")
		h := newHarness(event(1, "insert", "bar", "foo"), bigUpdate, event(3, "replace", "bar", "foo", bson.E{Key: "fullDocument", Value: bigDoc(3)}), bigDrop)
		h.opts.Scope = scope.Scope{DB: "bar"}
		h.opts.MaxMessageBytes = 2048
		sum, err := h.run()
		if err != nil {
			t.Fatal(err)
		}
		if sum.ClaimChecks != 2 || len(h.blob.objects) != 2 || sum.Events != 4 {
			t.Fatalf("claim checks %d, objects %d", sum.ClaimChecks, len(h.blob.objects))
		}
		stub, err := changeevent.Unmarshal(h.batch.msgs[1].Value)
		if err != nil {
			t.Fatal(err)
		}
		cc := stub.ClaimCheck
		if cc == nil || cc.Bucket != "archive" || stub.FullDocument != nil || stub.Operation != changeevent.Update {
			t.Fatalf("stub %+v", stub)
		}
		if !strings.HasPrefix(cc.Key, "docdbdr/claimcheck/db=bar/coll=foo/1714564802-1-") || !strings.HasSuffix(cc.Key, cc.SHA256+".bson") {
			t.Errorf("key %s", cc.Key)
		}
		full, err := changeevent.Unmarshal(h.blob.objects[cc.Key])
		if err != nil || int64(len(h.blob.objects[cc.Key])) != cc.Size || full.FullDocument == nil {
			t.Errorf("stored object is not the full event: %v", err)
		}
		if len(h.batch.msgs[1].Value) > 2048 || len(h.batch.msgs) != 4 {
			t.Errorf("stub %d bytes, %d messages", len(h.batch.msgs[1].Value), len(h.batch.msgs))
		}
	})
	t.Run("S3 failure fails the invocation", func(t *testing.T) {
		h := newHarness(event(1, "insert", "bar", "foo"), bigUpdate, event(3, "insert", "bar", "foo"))
		h.opts.MaxMessageBytes = 2048
		h.blob.err = errBoom
		_, err := h.run()
		if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "s3://archive/docdbdr/claimcheck/") {
			t.Fatalf("err = %v", err)
		}
		if h.savedIndex() > 1 || len(h.batch.msgs) != 1 {
			t.Errorf("checkpoint %d, messages %d: went past the failed event", h.savedIndex(), len(h.batch.msgs))
		}
	})
}

func TestEventsArePublishedWithKeyAndHeaders(t *testing.T) {
	h := newHarness(event(1, "insert", "bar", "foo"), event(2, "delete", "bar", "foo"))
	sum, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	m := h.batch.msgs[1]
	if want, _ := changeevent.Key(mustEvent(t, m.Value)); string(m.Key) != string(want) || !strings.HasPrefix(string(m.Key), "bar|") || m.Headers[1] != [2]string{"docdbdr-op", "delete"} {
		t.Errorf("key %s headers %v", m.Key, m.Headers)
	}
	if sum.ByOperation["insert"] != 1 || sum.ByOperation["delete"] != 1 || sum.FirstClusterTime.T != 1714564801 || sum.LastClusterTime.T != 1714564802 {
		t.Errorf("summary %+v", sum)
	}
	for _, name := range []string{"Events", "Events.insert", "Bytes", "DrainTime", "PublishTime", "ReplicationLagSeconds", "LagRetentionFraction"} {
		h.metric(t, name)
	}
	if !strings.Contains(h.logs.String(), `"msg":"capture summary"`) {
		t.Errorf("no summary log line: %s", h.logs.String())
	}
}

func TestParseInvocation(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    Overrides
		wantErr bool
	}{
		{"empty", ``, Overrides{}, false},
		{"scheduled event", `{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events","time":"2024-05-01T12:00:00Z","detail":{}}`, Overrides{}, false},
		{"manual", `{"maxEvents": 10, "idleTimeout": "1s"}`, Overrides{MaxEvents: 10, IdleTimeout: Duration(time.Second)}, false},
		{"typo", `{"maxEvent": 10}`, Overrides{}, true},
		{"bad duration", `{"idleTimeout": 5}`, Overrides{}, true},
		{"negative", `{"maxEvents": -1}`, Overrides{}, true},
		{"not json", `maxEvents=10`, Overrides{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInvocation([]byte(tt.payload))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %+v, %v", got, err)
			}
		})
	}
}

func TestOverridesApply(t *testing.T) {
	h := newHarness(inserts(1, 10)...)
	h.inv.Overrides = Overrides{MaxEvents: 2}
	sum, err := h.run()
	if err != nil || sum.Events != 2 || sum.StopReason != StopMaxEvents {
		t.Errorf("summary %+v, %v", sum, err)
	}
}

func mustEvent(t *testing.T, value []byte) *changeevent.Event {
	t.Helper()
	ev, err := changeevent.Unmarshal(value)
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

// TestCollectionEventsAreBarriers: a drop, rename or dropDatabase is published once per
// partition, pinned, with the barrier header; document changes are left to the key's hash.
func TestCollectionEventsAreBarriers(t *testing.T) {
	h := newHarness(event(1, "insert", "bar", "foo"), event(2, "drop", "bar", "foo"),
		event(3, "rename", "bar", "x", bson.E{Key: "to", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "y"}}}),
		event(4, "dropDatabase", "bar", ""), event(5, "delete", "bar", "y"))
	h.opts.Scope = scope.Scope{DB: "bar"}
	h.batch.parts = 3
	sum, err := h.run()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 5 || sum.Messages != 2+3*3 {
		t.Fatalf("events %d messages %d, want 5 and 11", sum.Events, sum.Messages)
	}
	var got []string
	for _, m := range h.batch.msgs {
		ev := mustEvent(t, m.Value)
		barrier := ""
		for _, hd := range m.Headers {
			if hd[0] == changeevent.HeaderBarrier {
				barrier = hd[1]
			}
		}
		switch {
		case ev.Operation.IsDocumentChange() && (m.Pinned || barrier != ""):
			t.Errorf("%s pinned=%v barrier=%q: document changes follow their key", ev.Operation, m.Pinned, barrier)
		case !ev.Operation.IsDocumentChange() && (!m.Pinned || barrier != "3"):
			t.Errorf("%s pinned=%v barrier=%q, want pinned with barrier 3", ev.Operation, m.Pinned, barrier)
		}
		got = append(got, fmt.Sprintf("%s@%d", ev.Operation, m.Partition))
	}
	want := "insert@0 drop@0 drop@1 drop@2 rename@0 rename@1 rename@2 dropDatabase@0 dropDatabase@1 dropDatabase@2 delete@0"
	if strings.Join(got, " ") != want {
		t.Errorf("published %s\nwant      %s", strings.Join(got, " "), want)
	}
}

// TestCheckpointWaitsForEveryBarrierCopy: a collection event's position is not checkpointed until
// every one of its copies is acknowledged.
func TestCheckpointWaitsForEveryBarrierCopy(t *testing.T) {
	for acked := 1; acked <= 4; acked++ { // message 1 is the insert, 2..4 the drop's copies
		t.Run(fmt.Sprint(acked, " acknowledged"), func(t *testing.T) {
			h := newHarness(event(1, "insert", "bar", "foo"), event(2, "drop", "bar", "foo"))
			h.opts.Scope = scope.Scope{DB: "bar"}
			h.batch.parts = 3
			h.batch.ackLimit = acked
			_, err := h.run()
			want := 1
			if acked == 4 {
				want = 2
			}
			if got := h.savedIndex(); got != want {
				t.Errorf("checkpoint at event %d with %d of 4 messages acknowledged, want %d", got, acked, want)
			}
			if (err != nil) != (acked < 4) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

// nested is a document nested n levels deep.
func nested(n int) bson.D {
	d := bson.D{{Key: "leaf", Value: int32(1)}}
	for range n - 1 {
		d = bson.D{{Key: "a", Value: d}}
	}
	return d
}

// TestPoisonIsDeadLettered: an event capture cannot convert (a document nested deeper than the
// format allows) or publish (a document key too large for any Kafka message) is written to the
// dead-letter prefix with its raw bytes and resume token, counted, and the run goes on past it.
func TestPoisonIsDeadLettered(t *testing.T) {
	deep := event(2, "insert", "bar", "foo", bson.E{Key: "fullDocument", Value: append(bson.D{{Key: "_id", Value: int32(2)}}, nested(120)...)})
	bigKey := strings.Repeat("k", 1100)
	hugeID, _ := bson.Marshal(bson.D{
		{Key: "_id", Value: token(2)}, {Key: "operationType", Value: "insert"},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1714564802, I: 1}},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: bigKey}}},
		{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: bigKey}, {Key: "pad", Value: strings.Repeat("p", 2000)}}},
	})
	tests := []struct {
		name   string
		poison bson.Raw
		reason string
	}{
		{"nested deeper than 100 levels", deep, "nested deeper than 100 levels"},
		{"key too large for a claim-check message", bson.Raw(hugeID), "even the claim-check message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(event(1, "insert", "bar", "foo"), tt.poison, event(3, "insert", "bar", "foo"))
			h.opts.MaxMessageBytes = 1024
			sum, err := h.run()
			if err != nil {
				t.Fatalf("a poison event failed the run: %v", err)
			}
			if sum.DeadLettered != 1 || sum.Events != 2 || h.metric(t, "DeadLettered") != 1 {
				t.Errorf("dead-lettered %d, published %d, metric %v; want 1, 2, 1", sum.DeadLettered, sum.Events, h.metric(t, "DeadLettered"))
			}
			if h.savedIndex() != 3 {
				t.Errorf("checkpoint at event %d, want past the poison to 3", h.savedIndex())
			}
			var dl DeadLetter
			var key string
			for k, body := range h.blob.objects {
				if strings.HasPrefix(k, DeadLetterPrefix("docdbdr/")) {
					key = k
					if err := json.Unmarshal(body, &dl); err != nil {
						t.Fatal(err)
					}
				}
			}
			if want := DeadLetterKey("docdbdr/", "bar.foo", primitive.Timestamp{T: 1714564802, I: 1}, token(2)); key != want {
				t.Fatalf("dead letter at %q, want %q (objects: %d)", key, want, len(h.blob.objects))
			}
			if !bytes.Equal(dl.Raw, tt.poison) || !strings.Contains(dl.Reason, tt.reason) || dl.Source != "capture" ||
				dl.Operation != "insert" || dl.DB != "bar" || dl.Coll != "foo" || dl.ClusterTime.T != 1714564802 || !strings.Contains(string(dl.ResumeToken), "00000002") {
				t.Errorf("dead letter %+v", dl)
			}
			if !strings.Contains(h.logs.String(), "dead-lettered a change event") {
				t.Error("no warning logged")
			}
		})
	}

	t.Run("a dead letter that cannot be written fails the run before the poison", func(t *testing.T) {
		h := newHarness(event(1, "insert", "bar", "foo"), deep, event(3, "insert", "bar", "foo"))
		h.blob.err = errBoom
		_, err := h.run()
		if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "nested deeper") {
			t.Fatalf("err = %v, want the S3 failure and the reason", err)
		}
		if h.savedIndex() != 1 {
			t.Errorf("checkpoint at %d, want 1: the poison must not be passed without its dead letter", h.savedIndex())
		}
	})
	t.Run("out of scope poison is skipped, not dead-lettered", func(t *testing.T) {
		other := event(2, "insert", "bar", "exa", bson.E{Key: "fullDocument", Value: append(bson.D{{Key: "_id", Value: int32(2)}}, nested(120)...)})
		h := newHarness(event(1, "insert", "bar", "foo"), other, event(3, "insert", "bar", "foo"))
		sum, err := h.run()
		if err != nil || sum.DeadLettered != 0 || sum.Skipped != 1 || len(h.blob.objects) != 0 || h.savedIndex() != 3 {
			t.Errorf("summary %+v, %v, objects %d, checkpoint %d", sum, err, len(h.blob.objects), h.savedIndex())
		}
	})
}
