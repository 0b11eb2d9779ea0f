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

// TestIntegrationConcurrentInvocationRefused: a lease held past the run's soft deadline is a
// clean refusal; one that lapses within it (a dead holder) is waited for and taken over.
func TestIntegrationConcurrentInvocationRefused(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	if _, err := s.store.Acquire(testCtx(t), s.opts.Scope.ID(), "req-running", time.Minute); err != nil {
		t.Fatal(err)
	}
	s.insert("bar", "foo", bson.D{{Key: "_id", Value: 1}})
	sum, err := s.capturer(nil).Run(testCtx(t), Invocation{Owner: "req-second", Deadline: time.Now().Add(30 * time.Second)})
	if err != nil {
		t.Fatalf("refusal is not an error: %v", err)
	}
	if sum.StopReason != StopLeaseHeld || !strings.Contains(sum.LeaseHeldBy, "req-running") || sum.Events != 0 {
		t.Errorf("summary %+v", sum)
	}

	// The holder dies holding a lease that lapses in 1.5 s: the next run waits and takes over.
	if err := s.store.Reset(testCtx(t), s.opts.Scope.ID(), checkpoint.ResetTo{ResumeToken: s.checkpointState().ResumeToken}, "test"); err != nil {
		t.Fatal(err)
	}
	dead, err := s.store.Acquire(testCtx(t), s.opts.Scope.ID(), "req-dead", 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum = s.mustRun("req-next")
	took := time.Since(start)
	if sum.Events != 1 || sum.StopReason == StopLeaseHeld || !strings.Contains(sum.LeaseHeldBy, "req-dead") {
		t.Fatalf("after the holder died: %+v", sum)
	}
	if lapse := time.Until(dead.ExpiresAt); lapse > 0 || took > 3*time.Second {
		t.Errorf("took over %v before the dead lease lapsed, run took %v", lapse, took)
	}
	t.Logf("waited %d ms for the dead holder's lease", sum.LeaseWaitMillis)
}

// freezingHook freezes the capture it wraps right before its first checkpoint write, as a long
// GC pause or a frozen container would: its saves and its heartbeat renewals both hang until
// thaw is called (then the frozen calls go through).
type freezingHook struct {
	Checkpoints
	once   sync.Once
	frozen chan struct{} // closed once frozen
	thawed chan struct{}
}

func (f *freezingHook) freeze() {
	f.once.Do(func() { close(f.frozen) })
	<-f.thawed
}

func (f *freezingHook) Save(ctx context.Context, l checkpoint.Lease, pos checkpoint.Position) error {
	f.freeze()
	return f.Checkpoints.Save(ctx, l, pos)
}

func (f *freezingHook) Renew(ctx context.Context, l checkpoint.Lease) (checkpoint.Lease, error) {
	select {
	case <-f.frozen:
		<-f.thawed
	default:
	}
	return f.Checkpoints.Renew(ctx, l)
}

// TestIntegrationStaleLeaseHolderCannotOverwrite: a capture frozen past its lease (no renewal)
// loses it to the next one; when it thaws it moves neither the checkpoint nor the topic.
func TestIntegrationStaleLeaseHolderCannotOverwrite(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	for i := range 30 {
		s.insert("bar", "foo", bson.D{{Key: "_id", Value: i}})
	}
	s.opts.LeaseTTL = 300 * time.Millisecond
	s.opts.DeadlineMargin = 100 * time.Millisecond
	s.opts.CheckpointEvery = 5
	hook := &freezingHook{Checkpoints: s.store, frozen: make(chan struct{}), thawed: make(chan struct{})}
	var staleErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, staleErr = s.capturer(hook).Run(testCtx(t), Invocation{Owner: "req-A"})
	}()
	<-hook.frozen
	second, err := s.capturer(nil).Run(testCtx(t), Invocation{Owner: "req-B"}) // waits for A's lease to lapse
	if err != nil || second.Events != 30 || !second.CheckpointSaved {
		t.Fatalf("the taking-over capture: %+v, %v", second, err)
	}
	before := len(s.records(30 + 5))
	close(hook.thawed)
	<-done
	if staleErr == nil || !strings.Contains(staleErr.Error(), "lease lost") {
		t.Fatalf("stale holder: err = %v, want its lease lost", staleErr)
	}
	if st := s.checkpointState(); st.Lease != nil {
		t.Errorf("lease not released: %+v", st.Lease)
	}
	if after := len(s.records(before)); after != before {
		t.Errorf("the stale holder published %d messages after it thawed", after-before)
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

// renewHook runs before each heartbeat renewal (n from 1); a non-nil error fails the renewal.
type renewHook struct {
	Checkpoints
	mu      sync.Mutex
	n       int
	expires time.Time
	before  func(ctx context.Context, n int) error
}

func (h *renewHook) Renew(ctx context.Context, l checkpoint.Lease) (checkpoint.Lease, error) {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	if h.before != nil {
		if err := h.before(ctx, n); err != nil {
			return l, err
		}
	}
	l, err := h.Checkpoints.Renew(ctx, l)
	if err == nil {
		h.mu.Lock()
		h.expires = l.ExpiresAt
		h.mu.Unlock()
	}
	return l, err
}

// expiry is the expiry the latest successful renewal set.
func (h *renewHook) expiry() time.Time { h.mu.Lock(); defer h.mu.Unlock(); return h.expires }

func (h *renewHook) renewals() int { h.mu.Lock(); defer h.mu.Unlock(); return h.n }

// publishLog records when each message handed to Kafka was published.
type publishLog struct {
	Publisher
	mu    sync.Mutex
	times []time.Time
}

func (p *publishLog) Begin(ctx context.Context, window int) (Batch, error) {
	b, err := p.Publisher.Begin(ctx, window)
	if err != nil {
		return nil, err
	}
	return &loggedBatch{Batch: b, log: p}, nil
}

func (p *publishLog) last() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.times) == 0 {
		return time.Time{}
	}
	return p.times[len(p.times)-1]
}

type loggedBatch struct {
	Batch
	log *publishLog
}

// Publish records when a publish that succeeded began (and so when the run decided to publish).
func (b *loggedBatch) Publish(ctx context.Context, m kafka.Message) (uint64, error) {
	began := time.Now()
	seq, err := b.Batch.Publish(ctx, m)
	if err == nil {
		b.log.mu.Lock()
		b.log.times = append(b.log.times, began)
		b.log.mu.Unlock()
	}
	return seq, err
}

// writeWhile inserts a document every few milliseconds until stop is closed.
func (s *stack) writeWhile(stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_, _ = s.coll("bar", "foo").InsertOne(context.Background(), bson.D{{Key: "_id", Value: fmt.Sprint("w", i)}})
		}
	}()
	return done
}

// TestIntegrationLeaseRenewedWhileRunning: a run longer than several TTLs keeps its lease by
// the heartbeat (nobody can take it meanwhile) and ends normally.
func TestIntegrationLeaseRenewedWhileRunning(t *testing.T) {
	s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
	s.enable("bar", "foo")
	s.mustRun("r0")
	s.opts.LeaseTTL, s.opts.DeadlineMargin, s.opts.ContinuousDrain = 600*time.Millisecond, 100*time.Millisecond, 2*time.Second
	hook := &renewHook{Checkpoints: s.store}
	stop := make(chan struct{})
	written := s.writeWhile(stop)
	var intruder error
	go func() {
		time.Sleep(1500 * time.Millisecond) // past two TTLs of the running capture
		_, intruder = s.store.Acquire(context.Background(), s.opts.Scope.ID(), "intruder", time.Second)
	}()
	sum, err := s.capturer(hook).Run(testCtx(t), Invocation{Owner: "req-long"})
	close(stop)
	<-written
	if err != nil || sum.StopReason != StopContinuousDrain || sum.Events == 0 {
		t.Fatalf("long run: %+v, %v", sum, err)
	}
	if !errors.Is(intruder, checkpoint.ErrLeaseHeld) {
		t.Errorf("another capture acquired the lease while the run was alive: %v", intruder)
	}
	if n := hook.renewals(); n < 5 {
		t.Errorf("%d renewals in a 2 s run of a 600 ms lease, want one every 200 ms", n)
	}
}

// TestIntegrationLostLeaseStopsPublishingAtOnce: when a renewal is fenced (an operator reset,
// or a takeover), fails, or hangs until the lease is about to expire, the run stops publishing
// at once (hanging: before the lease expires) and fails saying why; a fenced lease is not
// released, the others are.
func TestIntegrationLostLeaseStopsPublishingAtOnce(t *testing.T) {
	tests := []struct {
		name    string
		renew   func(s *stack) func(ctx context.Context, n int) error
		want    string
		fenced  bool
		hanging bool
	}{
		{"fenced by a reset", func(s *stack) func(context.Context, int) error {
			return func(ctx context.Context, n int) error {
				if n == 3 {
					return s.store.Reset(ctx, s.opts.Scope.ID(), checkpoint.ResetTo{StartAt: time.Now()}, "operator")
				}
				return nil
			}
		}, "lease lost", true, false},
		{"renewal fails", func(*stack) func(context.Context, int) error {
			return func(_ context.Context, n int) error {
				if n == 3 {
					return errors.New("primary unreachable")
				}
				return nil
			}
		}, "primary unreachable", false, false},
		{"renewal hangs", func(*stack) func(context.Context, int) error {
			return func(ctx context.Context, n int) error {
				if n == 3 {
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			}
		}, "about to expire", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, mongoserver.Options{}, scope.Scope{DB: "bar", Collections: []string{"foo"}})
			s.enable("bar", "foo")
			s.mustRun("r0")
			s.opts.LeaseTTL, s.opts.DeadlineMargin, s.opts.ContinuousDrain = 900*time.Millisecond, 200*time.Millisecond, 10*time.Second
			var lostAt time.Time
			var mu sync.Mutex
			renew := tt.renew(s)
			hook := &renewHook{Checkpoints: s.store, before: func(ctx context.Context, n int) error {
				if n == 3 {
					mu.Lock()
					lostAt = time.Now()
					mu.Unlock()
				}
				return renew(ctx, n)
			}}
			pubs := &publishLog{Publisher: KafkaPublisher{P: s.pub}}
			stop := make(chan struct{})
			written := s.writeWhile(stop)
			c := New(s.opts, Deps{Streams: MongoStreams{Client: s.client, MaxAwait: 50 * time.Millisecond}, Publisher: pubs,
				Checkpoints: hook, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
			start := time.Now()
			_, err := c.Run(testCtx(t), Invocation{Owner: "req-1"})
			ended := time.Now()
			close(stop)
			<-written
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, checkpoint.ErrFenced) != tt.fenced {
				t.Fatalf("err = %v, want it to say %q (fenced %v)", err, tt.want, tt.fenced)
			}
			mu.Lock()
			lost := lostAt
			mu.Unlock()
			// The third renewal is due at 3 x 300 ms; the lease then expires 900 ms after the
			// second one, the guard 100 ms before that.
			last := pubs.last()
			switch {
			case tt.hanging:
				// The run stops DEADLINE_MARGIN/2 before the expiry the second (last successful)
				// renewal set: no publish may begin after the expiry, nor later after the stop
				// than a timer's latency.
				expiry := hook.expiry()
				stopAt := expiry.Add(-s.opts.DeadlineMargin / 2)
				if !last.Before(expiry) || last.Sub(stopAt) > 10*time.Millisecond {
					t.Errorf("a publish began at %v: the lease expired at %v, the run was to stop at %v", last, expiry, stopAt)
				}
			case last.Sub(lost) > 100*time.Millisecond:
				t.Errorf("published %v after the lease was lost", last.Sub(lost))
			}
			t.Logf("ran %v, lost the lease %v in, last publish %v after that, returned %v after", ended.Sub(start).Round(time.Millisecond),
				lost.Sub(start).Round(time.Millisecond), last.Sub(lost).Round(time.Millisecond), ended.Sub(lost).Round(time.Millisecond))
			if st := s.checkpointState(); !tt.fenced && st.Lease != nil {
				t.Errorf("a lease lost without a takeover was not released: %+v", st.Lease)
			}
		})
	}
}
