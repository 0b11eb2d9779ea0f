package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// stack is a primary (the embedded Mongo-wire server in DocumentDB mode), a Kafka cluster (kfake)
// and the real driver, publisher and checkpoint store between them.
type stack struct {
	t       testing.TB
	srv     *mongoserver.Server
	client  *mongo.Client
	kafka   *kfake.Cluster
	pub     *kafka.Publisher
	store   *checkpoint.Store
	opts    Options
	metrics bytes.Buffer
	blob    *fakeBlob
	seen    map[string]int // Kafka records read so far, by resume token
}

func newStack(t testing.TB, mopts mongoserver.Options, sc scope.Scope) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	mopts.DocumentDB = true
	srv := mongoserver.New(mopts)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ctx := testCtx(t)
	client, err := docdb.Connect(ctx, docdb.Settings{URI: srv.URI(), TLS: docdb.TLSDisabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })

	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "changevents"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	pub, err := kafka.NewPublisher(ctx, kafka.Settings{Brokers: kc.ListenAddrs(), Topic: "changevents", Compression: "lz4", MaxMessageBytes: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(5 * time.Second) })

	opts := defaultOptions()
	opts.Scope = sc
	opts.IdleTimeout = 500 * time.Millisecond
	opts.MaxEvents = 1_000_000
	opts.CheckpointEvery = 10
	return &stack{
		t: t, srv: srv, client: client, kafka: kc, pub: pub, opts: opts, blob: &fakeBlob{}, seen: map[string]int{},
		store: checkpoint.New(client.Database("docdbdr").Collection("checkpoints"), nil),
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// enable runs DocumentDB's modifyChangeStreams for a collection ("" for the database).
func (s *stack) enable(db, coll string) {
	s.t.Helper()
	cmd := bson.D{{Key: "modifyChangeStreams", Value: 1}, {Key: "database", Value: db}, {Key: "collection", Value: coll}, {Key: "enable", Value: true}}
	if err := s.client.Database("admin").RunCommand(testCtx(s.t), cmd).Err(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) capturer(cps Checkpoints) *Capturer {
	if cps == nil {
		cps = s.store
	}
	return New(s.opts, Deps{
		Streams:     MongoStreams{Client: s.client, MaxAwait: 200 * time.Millisecond},
		Publisher:   KafkaPublisher{P: s.pub},
		Checkpoints: cps,
		Blobs:       s.blob,
		Logger:      slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Metrics:     &s.metrics,
	})
}

func (s *stack) run(owner string) (Summary, error) {
	s.metrics.Reset()
	return s.capturer(nil).Run(testCtx(s.t), Invocation{Owner: owner})
}

func (s *stack) mustRun(owner string) Summary {
	s.t.Helper()
	sum, err := s.run(owner)
	if err != nil {
		s.t.Fatalf("capture: %v", err)
	}
	return sum
}

func (s *stack) coll(db, name string) *mongo.Collection {
	return s.client.Database(db).Collection(name)
}

func (s *stack) insert(db, coll string, docs ...any) {
	s.t.Helper()
	if _, err := s.coll(db, coll).InsertMany(testCtx(s.t), docs); err != nil {
		s.t.Fatal(err)
	}
}

// consume reads every record published so far (the topic is read from the start each time with
// a fresh client) and returns the decoded events in partition order, plus the number of records.
func (s *stack) consume(wantAtLeast int) []changeevent.Event {
	s.t.Helper()
	var out []changeevent.Event
	for _, r := range s.records(wantAtLeast) {
		ev, err := changeevent.Unmarshal(r.Value)
		if err != nil {
			s.t.Fatalf("record at %d/%d: %v", r.Partition, r.Offset, err)
		}
		if k, _ := changeevent.Key(&ev); !bytes.Equal(k, r.Key) {
			s.t.Errorf("record key %s, want %s", r.Key, k)
		}
		out = append(out, ev)
	}
	return out
}

// records reads every record published so far, from the start of the topic with a fresh client.
func (s *stack) records(wantAtLeast int) []*kgo.Record {
	s.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.kafka.ListenAddrs()...), kgo.ConsumeTopics("changevents"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		s.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
		if len(out) >= wantAtLeast {
			// Give a moment for anything beyond what was expected (duplicates) to show up.
			pollCtx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			extra := cl.PollFetches(pollCtx)
			cancel()
			extra.EachRecord(func(r *kgo.Record) { out = append(out, r) })
			return out
		}
		if ctx.Err() != nil {
			s.t.Fatalf("read %d records, want at least %d", len(out), wantAtLeast)
		}
	}
}

func (s *stack) checkpointState() checkpoint.State {
	s.t.Helper()
	st, err := s.store.Load(testCtx(s.t), s.opts.Scope.ID())
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// TestIntegrationEveryOperationWithBSONTypes runs the original write-up's verification through
// capture: insert, update ($set and $unset), replace, delete, an unwatched collection, and a drop
// (which invalidates the stream; the next run continues with startAfter).
func TestIntegrationEveryOperationWithBSONTypes(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	first := s.mustRun("r1") // pins the start position
	if first.Events != 0 || !first.CheckpointSaved {
		t.Fatalf("first run: %+v", first)
	}

	id := primitive.NewObjectID()
	dec, _ := primitive.ParseDecimal128("1234.5678")
	doc := bson.D{
		{Key: "_id", Value: id},
		{Key: "i32", Value: int32(1)},
		{Key: "i64", Value: int64(1)},
		{Key: "f64", Value: 1.5},
		{Key: "dec", Value: dec},
		{Key: "date", Value: primitive.NewDateTimeFromTime(time.Date(2022, 7, 19, 20, 20, 22, 0, time.UTC))},
		{Key: "bin", Value: primitive.Binary{Subtype: 4, Data: bytes.Repeat([]byte{7}, 16)}},
		{Key: "re", Value: primitive.Regex{Pattern: "^a", Options: "i"}},
		{Key: "ts", Value: primitive.Timestamp{T: 1, I: 2}},
		{Key: "nested", Value: bson.D{{Key: "a", Value: bson.A{int32(1), "two", nil, true}}}},
		{Key: "x", Value: int32(1)},
	}
	ctx := testCtx(t)
	s.insert("bar", "foo", doc)
	if _, err := s.coll("bar", "foo").UpdateOne(ctx, bson.D{{Key: "x", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: int32(2)}}}, {Key: "$unset", Value: bson.D{{Key: "re", Value: ""}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.coll("bar", "foo").ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "x", Value: int32(3)}, {Key: "i64", Value: int64(9)}}); err != nil {
		t.Fatal(err)
	}
	s.insert("bar", "exa", bson.D{{Key: "y", Value: 1}})
	if _, err := s.coll("bar", "foo").DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		t.Fatal(err)
	}
	if err := s.coll("bar", "foo").Drop(ctx); err != nil {
		t.Fatal(err)
	}

	sum := s.mustRun("r2")
	if sum.StopReason != StopInvalidate || sum.Events != 5 || sum.Messages != 4+3 {
		t.Fatalf("second run: %+v", sum)
	}
	evs := s.consume(7) // the drop once in each of the 3 partitions
	var ops []string
	for _, ev := range evs {
		ops = append(ops, string(ev.Operation))
	}
	// Document changes share a key and so a partition; the drop is in every partition.
	docOps := []string{}
	for _, ev := range evs {
		if ev.Operation.IsDocumentChange() {
			docOps = append(docOps, string(ev.Operation))
		}
	}
	if strings.Join(docOps, ",") != "insert,update,replace,delete" || len(evs) != 7 {
		t.Fatalf("events %v", ops)
	}
	for _, ev := range evs {
		if ev.NS.Coll == "exa" {
			t.Error("the unwatched collection reached Kafka")
		}
		if ev.Operation.IsDocumentChange() {
			got, _ := ev.ID()
			if got.Type != bson.TypeObjectID || got.ObjectID() != id {
				t.Errorf("%s: _id %v lost its type", ev.Operation, got)
			}
		}
		switch ev.Operation {
		case changeevent.Insert:
			want, _ := bson.Marshal(doc)
			if !bytes.Equal(ev.FullDocument, want) {
				t.Errorf("inserted document changed on the way:\n got %s\nwant %s", ev.FullDocument, bson.Raw(want))
			}
		case changeevent.Update:
			ud := ev.UpdateDescription
			if ud == nil || ud.UpdatedFields.Lookup("x").Type != bson.TypeInt32 || len(ud.RemovedFields) != 1 || ud.RemovedFields[0] != "re" {
				t.Errorf("update description %+v", ud)
			}
		case changeevent.Replace:
			if ev.FullDocument.Lookup("i64").Type != bson.TypeInt64 {
				t.Errorf("replace document %s", ev.FullDocument)
			}
		}
	}

	// After the invalidate, the next run starts after it and sees the recreated collection.
	st := s.checkpointState()
	if !st.AfterInvalidate {
		t.Fatalf("checkpoint after invalidate: %+v", st)
	}
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: "again"}})
	sum = s.mustRun("r3")
	if sum.Events != 1 || sum.ByOperation["insert"] != 1 {
		t.Fatalf("run after invalidate: %+v", sum)
	}
}

// TestIntegrationConsecutiveRunsExactlyOnce: bounded runs one after another publish every event
// exactly once, in order per document.
func TestIntegrationConsecutiveRunsExactlyOnce(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	s.opts.MaxEvents = 20
	total := 0
	for round := range 3 {
		var docs []any
		for i := range 25 {
			docs = append(docs, bson.D{{Key: "_id", Value: round*100 + i}})
		}
		s.insert("bar", "foo", docs...)
		total += 25
	}
	runs := 0
	for {
		sum := s.mustRun(fmt.Sprint("r", runs+1))
		runs++
		if sum.Events == 0 {
			break
		}
		if runs > 10 {
			t.Fatal("never caught up")
		}
	}
	if runs != 5 { // 20 + 20 + 20 + 15, then an empty one
		t.Errorf("%d runs", runs)
	}
	evs := s.consume(total)
	assertExactlyOnce(t, evs, total)
}

func assertExactlyOnce(t *testing.T, evs []changeevent.Event, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, ev := range evs {
		seen[string(ev.ResumeToken)]++
	}
	if len(seen) != want {
		t.Errorf("%d distinct events, want %d", len(seen), want)
	}
	for tok, n := range seen {
		if n != 1 {
			t.Errorf("event %s published %d times", bson.Raw(tok), n)
		}
	}
}

// crashAfterPublish is a checkpoint store whose process "dies" before it can save: Save fails
// and the lease is never released.
type crashAfterPublish struct {
	Checkpoints
}

func (crashAfterPublish) Save(context.Context, checkpoint.Lease, checkpoint.Position) error {
	return errors.New("process killed")
}
func (crashAfterPublish) Release(context.Context, checkpoint.Lease) error { return nil }

func TestIntegrationCrashBetweenPublishAndCheckpoint(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	s.opts.CheckpointEvery = 1000
	var docs []any
	for i := range 30 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}})
	}
	s.insert("bar", "foo", docs...)
	before := s.checkpointState()

	_, err := s.capturer(crashAfterPublish{s.store}).Run(testCtx(t), Invocation{Owner: "req-crash"})
	if err == nil {
		t.Fatal("the crashed run succeeded")
	}
	if got := s.checkpointState(); !bytes.Equal(got.ResumeToken, before.ResumeToken) {
		t.Fatal("the checkpoint moved")
	}
	published := len(s.consume(30))

	// Lambda retries the same request: it may take its own lease back at once.
	sum := s.mustRun("req-crash")
	if sum.Events != 30 {
		t.Errorf("the retry republished %d events, want the 30-event tail", sum.Events)
	}
	evs := s.consume(published + 30)
	seen := map[string]bool{}
	for _, ev := range evs {
		seen[string(ev.ResumeToken)] = true
	}
	if len(seen) != 30 {
		t.Errorf("%d distinct events in Kafka, want all 30", len(seen))
	}
	// And a third run publishes nothing new.
	if sum := s.mustRun("r3"); sum.Events != 0 {
		t.Errorf("third run published %d", sum.Events)
	}
}

func TestIntegrationKafkaUnreachable(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}})
	before := s.checkpointState()
	s.kafka.Close()

	start := time.Now()
	sum, err := s.run("r1")
	took := time.Since(start)
	if err == nil {
		t.Fatal("capture succeeded without Kafka")
	}
	if took > 45*time.Second {
		t.Errorf("failing took %v", took)
	}
	if !errors.Is(err, kafka.ErrNotAcknowledged) || sum.StopReason != StopError || sum.Acknowledged != 0 {
		t.Errorf("err = %v, summary %+v", err, sum)
	}
	if after := s.checkpointState(); !bytes.Equal(after.ResumeToken, before.ResumeToken) {
		t.Error("the checkpoint moved")
	}
	t.Logf("failed after %v: %v", took, err)
}

func TestIntegrationQuietScopeCheckpointAdvances(t *testing.T) {
	s := newStack(t, mongoserver.Options{NoopInterval: -1}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	t1 := s.checkpointState().ResumeToken
	// Changes elsewhere on the cluster move the post-batch resume token of the quiet stream.
	for i := range 5 {
		s.insert("bar", "exa", bson.D{{Key: "_id", Value: i}})
	}
	sum := s.mustRun("r1")
	t2 := s.checkpointState().ResumeToken
	if sum.Events != 0 || !sum.CheckpointSaved || bytes.Equal(t1, t2) {
		t.Fatalf("quiet run: %+v, token %s -> %s", sum, t1, t2)
	}
	// Resuming from the advanced token works and still sees new changes.
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: "new"}})
	if sum := s.mustRun("r2"); sum.Events != 1 {
		t.Errorf("after the quiet run: %+v", sum)
	}
}

func TestIntegrationConcurrentInvocationRefused(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	if _, err := s.store.Acquire(testCtx(t), s.opts.Scope.ID(), "req-running", time.Minute); err != nil {
		t.Fatal(err)
	}
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: 1}})
	sum, err := s.run("req-second")
	if err != nil {
		t.Fatalf("refusal is not an error: %v", err)
	}
	if sum.StopReason != StopLeaseHeld || !strings.Contains(sum.LeaseHeldBy, "req-running") || sum.Events != 0 {
		t.Errorf("summary %+v", sum)
	}
}

// fencingHook lets a second capture take over (the first stalled past its lease) right before the
// first one's first checkpoint write.
type fencingHook struct {
	Checkpoints
	once     sync.Once
	takeOver func()
}

func (f *fencingHook) Save(ctx context.Context, l checkpoint.Lease, pos checkpoint.Position) error {
	f.once.Do(f.takeOver)
	return f.Checkpoints.Save(ctx, l, pos)
}

func TestIntegrationStaleLeaseHolderCannotOverwrite(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	for i := range 30 {
		s.insert("bar", "foo", bson.D{{Key: "_id", Value: i}})
	}
	s.opts.LeaseTTL = 200 * time.Millisecond
	s.opts.DeadlineMargin = 20 * time.Millisecond // a run ends before its lease: keep time to read
	s.opts.CheckpointEvery = 5
	var second Summary
	hook := &fencingHook{Checkpoints: s.store, takeOver: func() {
		time.Sleep(300 * time.Millisecond) // the first capture's lease expires
		var err error
		if second, err = s.capturer(nil).Run(testCtx(t), Invocation{Owner: "req-B"}); err != nil {
			t.Errorf("the taking-over capture failed: %v", err)
		}
	}}
	_, err := s.capturer(hook).Run(testCtx(t), Invocation{Owner: "req-A"})
	if !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("stale holder: err = %v, want ErrFenced", err)
	}
	st := s.checkpointState()
	if second.Events != 30 || !second.CheckpointSaved {
		t.Fatalf("second capture: %+v", second)
	}
	// The checkpoint is B's final one (the post-batch token after all 30), not A's.
	if st.Lease != nil {
		t.Errorf("lease not released: %+v", st.Lease)
	}
	if sum := s.mustRun("req-C"); sum.Events != 0 {
		t.Errorf("a later run republished %d events: the stale holder moved the checkpoint back", sum.Events)
	}
}

func TestIntegrationHistoryLost(t *testing.T) {
	s := newStack(t, mongoserver.Options{OplogMaxEntries: 20, NoopInterval: -1}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	before := s.checkpointState()
	for i := range 50 {
		s.insert("bar", "foo", bson.D{{Key: "_id", Value: i}})
	}
	sum, err := s.run("r1")
	if !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("err = %v, want ErrHistoryLost", err)
	}
	if !strings.Contains(err.Error(), "docdbdr bootstrap") || !strings.Contains(err.Error(), "docdbdr reset-checkpoint") {
		t.Errorf("error does not say what to do: %v", err)
	}
	if !strings.Contains(s.metrics.String(), `"HistoryLost":1`) || sum.Events != 0 {
		t.Errorf("metrics %s", s.metrics.String())
	}
	if after := s.checkpointState(); !bytes.Equal(after.ResumeToken, before.ResumeToken) || after.Lease != nil {
		t.Errorf("checkpoint or lease changed: %+v", after)
	}
}

func TestIntegrationStreamsNotEnabled(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	_, err := s.run("r0")
	want := `db.adminCommand({modifyChangeStreams: 1, database: "bar", collection: "foo", enable: true})`
	if !errors.Is(err, ErrStreamsNotEnabled) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v", err)
	}
}

func TestIntegrationListScope(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo", "x"}})
	s.enable("bar", "")
	s.mustRun("r0")
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: 1}})
	s.insert("bar", "exa", bson.D{{Key: "_id", Value: 2}})
	s.insert("bar", "x", bson.D{{Key: "_id", Value: 3}})
	s.insert("baz", "foo", bson.D{{Key: "_id", Value: 4}})
	sum := s.mustRun("r1")
	if sum.Events != 2 {
		t.Fatalf("summary %+v", sum)
	}
	for _, ev := range s.consume(2) {
		if ev.NS.Coll != "foo" && ev.NS.Coll != "x" || ev.NS.DB != "bar" {
			t.Errorf("out-of-scope event %s published", ev.NS)
		}
	}
}

// TestIntegrationBarriersReachEveryPartition: at the broker, each collection event is in every
// partition exactly once, with the barrier header naming the partition count, after the document
// changes that precede it in that partition; every document change is in the partition that
// changeevent.Partition (what apply relies on) says owns its key.
func TestIntegrationBarriersReachEveryPartition(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar"})
	s.enable("bar", "")
	s.mustRun("r0")
	ctx := testCtx(t)
	var docs []any
	for i := range 20 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}})
	}
	s.insert("bar", "foo", docs...)
	if err := s.coll("bar", "foo").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	s.insert("bar", "x", bson.D{{Key: "_id", Value: "a"}})
	if err := s.client.Database("bar").Collection("x").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	sum := s.mustRun("r1")
	if sum.Events != 23 || sum.Messages != 21+2*3 || sum.ByOperation["drop"] != 2 {
		t.Fatalf("summary %+v", sum)
	}
	recs := s.records(27)
	if len(recs) != 27 {
		t.Fatalf("%d records at the broker, want 27", len(recs))
	}
	type copyOf struct {
		ns string
		p  int32
	}
	barriers := map[copyOf]int{}
	order := map[int32][]string{} // per partition, in offset order
	for _, r := range recs {
		ev, err := changeevent.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		var barrier string
		for _, h := range r.Headers {
			if h.Key == changeevent.HeaderBarrier {
				barrier = string(h.Value)
			}
		}
		if ev.Operation.IsDocumentChange() {
			if barrier != "" {
				t.Errorf("document change at %d/%d has a barrier header", r.Partition, r.Offset)
			}
			if want := changeevent.Partition(r.Key, 3); r.Partition != want {
				t.Errorf("key %s in partition %d, changeevent.Partition says %d", r.Key, r.Partition, want)
			}
			order[r.Partition] = append(order[r.Partition], ev.NS.String())
			continue
		}
		order[r.Partition] = append(order[r.Partition], "drop "+ev.NS.String())
		if barrier != "3" {
			t.Errorf("%s copy at %d/%d: barrier header %q, want \"3\"", ev.Operation, r.Partition, r.Offset, barrier)
		}
		barriers[copyOf{ev.NS.String(), r.Partition}]++
	}
	for _, ns := range []string{"bar.foo", "bar.x"} {
		for p := range int32(3) {
			if n := barriers[copyOf{ns, p}]; n != 1 {
				t.Errorf("drop of %s in partition %d: %d copies, want 1", ns, p, n)
			}
		}
	}
	// In every partition: foo's documents, its drop, x's document (if it hashes there), x's drop.
	for p, seq := range order {
		got := strings.Join(slices.Compact(slices.Clone(seq)), ",")
		if got != "bar.foo,drop bar.foo,bar.x,drop bar.x" && got != "bar.foo,drop bar.foo,drop bar.x" && got != "drop bar.foo,bar.x,drop bar.x" && got != "drop bar.foo,drop bar.x" {
			t.Errorf("partition %d holds %s: a barrier is out of order", p, got)
		}
	}
}

func TestIntegrationClaimCheck(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	s.opts.MaxMessageBytes = 4096
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: 1}, {Key: "big", Value: strings.Repeat("z", 10_000)}}, bson.D{{Key: "_id", Value: 2}})
	sum := s.mustRun("r1")
	if sum.ClaimChecks != 1 || len(s.blob.objects) != 1 {
		t.Fatalf("summary %+v", sum)
	}
	evs := s.consume(2)
	for _, ev := range evs {
		id, _ := ev.ID()
		if id.Int32() == 1 {
			if ev.ClaimCheck == nil {
				t.Fatal("oversized insert not claim-checked")
			}
			full, err := changeevent.Unmarshal(s.blob.objects[ev.ClaimCheck.Key])
			if err != nil || full.FullDocument.Lookup("big").StringValue() != strings.Repeat("z", 10_000) {
				t.Errorf("claim-check object: %v", err)
			}
		}
	}
}
