package promote_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/event"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/bootstrap"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/promote"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
	"github.com/docdb-dr/docdb-dr/pkg/verify"
)

var (
	seedFlag    = flag.Uint64("promote.seed", 1, "seed of the failover test's workload")
	docsFlag    = flag.Int("promote.docs", 300, "documents inserted per collection before the random operations")
	opsFlag     = flag.Int("promote.ops", 600, "random operations of the failover test's workload")
	deletesFlag = flag.Int("promote.deletes", 0, "documents of collection a deleted in one deleteMany before the random operations")
)

// TestFailover is issue 17's end-to-end check: a seeded workload with deletes, re-inserts,
// a drop, renames (one over an existing target) runs through capture and apply; then apply
// stops, more changes are published but not applied (they are on the topic: what promote must
// drain), more are written and never captured (lost with the primary), and the primary's server
// is shut down. Promote runs against DR, the topic and the archive only, and then:
//   - DR's live collections equal the primary's state at the last replicated event, byte for byte;
//   - nothing DR held is lost: live plus the side database is exactly what DR held before;
//   - every moved version carries its archive reference, and the archive line holds the same
//     document;
//   - promote run again changes nothing.
func TestFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f := setup(ctx, t)
	rep, err := promote.Run(ctx, f.apply)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_ = rep.WriteTable(&buf)
	t.Logf("promote --apply:\n%s", buf.String())
	t.Logf("FIGURE promote: %d live intercepted documents moved, %d side collections (%d documents), %d ledger entries, duration %s, RPO %s (%d records unreplicated when the primary stopped)",
		rep.Deletes.Moved, len(rep.Collections), sideDocs(rep), rep.LedgerEntries, rep.Duration, f.dry.RPO, f.dry.Unreplicated)
	if rep.Deletes.Moved == 0 || len(rep.Collections) == 0 {
		t.Errorf("moved %d documents and %d collections; the workload intercepted both", rep.Deletes.Moved, len(rep.Collections))
	}
	f.check(ctx, t, rep.Deletes.Moved, len(rep.Collections))

	// A capture that comes back publishes again (here: a copy of an insert already on the
	// topic); apply runs. The fence keeps the promoted DR as it is.
	after := snapshotAll(ctx, t, f.p.DR())
	republish(ctx, t, f.brokers, f.topic)
	f.p.Start(ctx)
	time.Sleep(2 * time.Second)
	f.p.Stop()
	if diff := compareAll(after, snapshotAll(ctx, t, f.p.DR())); diff != "" {
		t.Errorf("apply wrote after the fence:\n%s", diff)
	}
	again, err := promote.Run(ctx, f.apply)
	if err != nil {
		t.Fatal(err)
	}
	if again.AfterFence != 1 || again.Changed() {
		t.Errorf("after a record published past the fence: %d after the fence (want 1), changed %v", again.AfterFence, again.Changed())
	}
}

// TestFailback: after promote, the way back (see failback).
func TestFailback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f := setup(ctx, t)
	if _, err := promote.Run(ctx, f.apply); err != nil {
		t.Fatal(err)
	}
	failback(ctx, t, f)
}

// failback: the applications write to the promoted cluster (B, the old DR); the pipeline is run
// in the other direction to a fresh cluster in the old region (A, a new stack's server): bootstrap
// with the hand-off to capture, capture and apply, more writes, verify; then the second promote
// makes A the copy to switch back to, and A's live collections equal B's byte for byte.
func failback(ctx context.Context, t *testing.T, f *fixture) {
	t.Helper()
	st2, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st2.Close() }()
	p2, err := localrun.New(ctx, localrun.Options{
		Getenv: localrun.Getenv(map[string]string{
			"PRIMARY_URI": f.drURI, // B is the source now
			"WATCH_DB":    "shop", "IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "50ms", "DEADLINE_MARGIN": "1s",
		}, st2.Env(), nil),
		ManualCapture: true, BatchSize: 500, BatchingWindow: 20 * time.Millisecond,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p2.Close() }()
	b := p2.Primary()
	if err := docdb.EnableChangeStreams(ctx, b, p2.Scope()); err != nil {
		t.Logf("B is MongoDB-like, change streams need no enabling: %v", err)
	}
	w := &workload{rng: rand.New(rand.NewPCG(*seedFlag, 18)), db: b.Database("shop"), t: t}
	w.random(ctx, []string{"b", "d", "e"}, 40) // the applications, switched to B

	res, err := bootstrap.Run(ctx, bootstrap.Options{Primary: b, DR: p2.DR(), Scope: p2.Scope(),
		Checkpoint: bootstrap.CheckpointStore{Store: p2.Checkpoints()}, Who: "failback test",
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil || !res.CheckpointSet {
		t.Fatalf("bootstrap B -> A: %+v, %v", res, err)
	}
	p2.Start(ctx)
	w.random(ctx, []string{"b", "d", "e"}, 40)
	if err := p2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	p2.Stop()
	rep, err := verify.Run(ctx, verify.Options{Primary: b, DR: p2.DR(), Scope: p2.Scope(),
		Archive: restore.ArchiveReader{Store: p2.Archive(), Layout: archive.Layout{Prefix: st2.Prefix}}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.HasDifferences() {
		var buf bytes.Buffer
		_ = rep.WriteTable(&buf)
		t.Errorf("verify B against A after failback replication:\n%s", buf.String())
	}

	// Switch back: the second promote, on A.
	back, err := promote.Run(ctx, promote.Options{DR: p2.DR(), Topic: kafkaTopic(t, st2), Apply: true, DrainTimeout: time.Minute,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if diff := compareAll(liveOf(snapshotAll(ctx, t, b)), liveOf(snapshotAll(ctx, t, p2.DR()))); diff != "" {
		t.Errorf("A after the second promote differs from B:\n%s", diff)
	}
	t.Logf("failback: verify %d equal, %d intercepted; second promote moved %d documents in %s",
		rep.Totals.Equal, rep.Totals.Intercepted, back.Deletes.Moved, back.Duration)
}

// republish publishes again the first record of partition 0.
func republish(ctx context.Context, t *testing.T, brokers []string, topic string) {
	t.Helper()
	cfg, err := kafka.SaramaConfig(kafka.Settings{Brokers: brokers, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	c, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cons, err := sarama.NewConsumerFromClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	var m *sarama.ConsumerMessage
	select {
	case m = <-pc.Messages():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	pc.AsyncClose()
	prod, err := sarama.NewSyncProducerFromClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	msg := &sarama.ProducerMessage{Topic: topic, Partition: 0, Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value)}
	for _, h := range m.Headers {
		msg.Headers = append(msg.Headers, *h)
	}
	if _, _, err := prod.SendMessage(msg); err != nil {
		t.Fatal(err)
	}
}

// TestFailoverInterrupted: promote crashes part way (its context is cancelled as its k-th write
// to DR starts), for k = 1, 4, 7, ... until a run completes; then everything checked after one
// uninterrupted run holds.
func TestFailoverInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f := setup(ctx, t)

	var writes, crashAt atomic.Int64
	var mu sync.Mutex
	var crash context.CancelFunc
	mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		switch e.CommandName {
		case "insert", "update", "delete", "drop":
			if writes.Add(1) == crashAt.Load() {
				mu.Lock()
				crash()
				mu.Unlock()
			}
		}
	}}
	dr, err := mongo.Connect(ctx, options.Client().ApplyURI(f.drURI).SetMonitor(mon))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = dr.Disconnect(context.Background()) }()
	small := f.apply
	small.DR, small.Chunk = dr, 20 // many steps, many places to be interrupted

	interrupted := 0
	var rep promote.Report
	for k := int64(1); ; k += 3 {
		runCtx, cancelRun := context.WithCancel(ctx)
		mu.Lock()
		crash = cancelRun
		mu.Unlock()
		writes.Store(0)
		crashAt.Store(k)
		r, err := promote.Run(runCtx, small)
		crashed := runCtx.Err() != nil
		cancelRun()
		if err == nil && !crashed {
			rep = r
			break
		}
		if err == nil {
			t.Logf("the run crashed at its write %d completed anyway (it was its last)", k)
			continue
		}
		if ctx.Err() != nil || k > 10000 {
			t.Fatalf("promote never completed: %v", err)
		}
		interrupted++
	}
	t.Logf("%d promote runs interrupted before one completed (it moved %d documents and %d collections, found %d documents moved already)",
		interrupted, rep.Deletes.Moved, len(rep.Collections), rep.Deletes.AlreadyMoved)
	if interrupted < 3 || rep.Deletes.AlreadyMoved == 0 {
		t.Errorf("%d interrupted runs, %d documents moved by them: the recovery was not exercised", interrupted, rep.Deletes.AlreadyMoved)
	}
	f.check(ctx, t, rep.Deletes.Moved+rep.Deletes.AlreadyMoved, -1)
}

// fixture is a DR whose primary is gone, drained by apply, ready for promote --apply.
type fixture struct {
	p              *localrun.Pipeline
	drURI, topic   string
	brokers        []string
	apply          promote.Options // Apply set
	dry            promote.Report  // the dry run, before apply drained the topic
	lastReplicated dump            // the primary at the last replicated event
	held           dump            // DR before promote
}

// setup is issue 17's scenario up to promote: a seeded workload with deletes, re-inserts, a
// drop, renames (one over an existing target) runs through capture and apply; then apply stops,
// more changes are published but not applied (on the topic: what promote must drain), more are
// written and never captured (lost with the primary), and the primary's server is shut down.
// A dry run must report the unreplicated records and change nothing; promote --apply with apply
// stopped must refuse (ErrNotDrained); then apply drains the topic.
func setup(ctx context.Context, t *testing.T) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the embedded stack")
	}
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	p, err := localrun.New(ctx, localrun.Options{
		Getenv: localrun.Getenv(map[string]string{
			"WATCH_DB": "shop", "IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "50ms", "DEADLINE_MARGIN": "1s",
			"CHECKPOINT_EVERY": "1000", "MAX_EVENTS": "100000",
		}, st.Env(), nil),
		ManualCapture: true, BatchSize: 500, BatchingWindow: 20 * time.Millisecond,
		RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CaptureOnce(ctx, capture.Overrides{IdleTimeout: capture.Duration(10 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	p.Start(ctx)

	w := &workload{rng: rand.New(rand.NewPCG(*seedFlag, 17)), db: p.Primary().Database("shop"), t: t}
	w.seed(ctx, []string{"a", "b", "c"}, *docsFlag)
	if *deletesFlag > 0 {
		w.deleteRange(ctx, "a", *deletesFlag)
	}
	w.random(ctx, []string{"a", "b", "c"}, *opsFlag)
	w.collectionEvents(ctx)
	w.random(ctx, []string{"b", "d", "e"}, *opsFlag/2)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	// Apply stops; changes reach the topic, not DR. A second later (cluster times are seconds).
	p.Stop()
	time.Sleep(1100 * time.Millisecond)
	w.random(ctx, []string{"b", "d", "e"}, 50)
	captureToEnd(ctx, t, p)
	f := &fixture{p: p, drURI: st.DRURI, topic: st.Topic, brokers: st.KafkaBrokers, lastReplicated: snapshot(ctx, t, p.Primary(), "shop")}
	// Changes capture never sees: lost with the primary.
	w.random(ctx, []string{"b", "d", "e"}, 20)
	if err := st.StopPrimary(); err != nil {
		t.Fatal(err)
	}

	opts := promote.Options{DR: p.DR(), Topic: kafkaTopic(t, st), Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	before := snapshotAll(ctx, t, p.DR())
	f.dry, err = promote.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if f.dry.Unreplicated == 0 || f.dry.RPO < time.Second {
		t.Errorf("dry run: %d unreplicated records, RPO %s; want some, at least 1s", f.dry.Unreplicated, f.dry.RPO)
	}
	if f.dry.Deletes.Moved == 0 || len(f.dry.Collections) == 0 {
		t.Errorf("dry run: would move %d documents and %d collections; the workload intercepted both", f.dry.Deletes.Moved, len(f.dry.Collections))
	}
	if diff := compareAll(before, snapshotAll(ctx, t, p.DR())); diff != "" {
		t.Fatalf("the dry run changed DR:\n%s", diff)
	}
	t.Logf("dry run: %d unreplicated, RPO %s, %d intercepted deletes, %d side collections",
		f.dry.Unreplicated, f.dry.RPO, f.dry.Deletes.Intercepted, len(f.dry.Collections))

	// With apply stopped, promote fences and refuses: the topic is not drained.
	f.apply = opts
	f.apply.Apply, f.apply.DrainTimeout = true, time.Second
	if _, err := promote.Run(ctx, f.apply); !errors.Is(err, promote.ErrNotDrained) {
		t.Fatalf("promote with apply stopped: %v, want ErrNotDrained", err)
	}
	// Apply drains the topic.
	p.Start(ctx)
	if err := p.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	f.held = snapshotAll(ctx, t, p.DR())
	f.apply.DrainTimeout = time.Minute
	return f
}

// check is what must hold after promote: DR's live collections equal the primary at the last
// replicated event byte for byte; live plus the side database is exactly what DR held before;
// every moved version carries its archive reference and the archive line holds the same
// document; promote run again changes nothing. moved and collections are what promote moved in
// all (collections -1: not checked).
func (f *fixture) check(ctx context.Context, t *testing.T, moved, collections int) {
	t.Helper()
	dr := f.p.DR()
	live := liveOf(snapshotAll(ctx, t, dr))
	if diff := compareAll(f.lastReplicated, live); diff != "" {
		t.Errorf("DR's live collections differ from the primary at the last replicated event:\n%s", diff)
	}
	if diff := compareAll(nonEmpty(liveOf(f.held)), nonEmpty(reassemble(ctx, t, dr, live))); diff != "" {
		t.Errorf("live + side database is not what DR held before promote:\n%s", diff)
	}
	checkArchiveReferences(ctx, t, dr, f.p.Archive())

	after := snapshotAll(ctx, t, dr)
	again, err := promote.Run(ctx, f.apply)
	if err != nil {
		t.Fatal(err)
	}
	if again.Changed() || again.Deletes.AlreadyMoved != moved || (collections >= 0 && again.AlreadyMovedCollections != collections) {
		t.Errorf("second run: changed %v, %d already moved (want %d), %d collections already moved (want %d)",
			again.Changed(), again.Deletes.AlreadyMoved, moved, again.AlreadyMovedCollections, collections)
	}
	if diff := compareAll(after, snapshotAll(ctx, t, dr)); diff != "" {
		t.Errorf("the second run changed DR:\n%s", diff)
	}
}

func sideDocs(r promote.Report) int {
	n := 0
	for _, c := range r.Collections {
		n += c.Documents
	}
	return n
}

// captureToEnd runs capture until an invocation stops idle: everything written is on the topic.
func captureToEnd(ctx context.Context, t *testing.T, p *localrun.Pipeline) {
	t.Helper()
	for i := 0; i < 50; i++ {
		sum, err := p.CaptureOnce(ctx, capture.Overrides{})
		if err == nil && sum.StopReason == capture.StopIdle {
			return
		}
	}
	t.Fatal("capture did not reach the end of the stream")
}

func kafkaTopic(t *testing.T, st *devstack.Stack) promote.Topic {
	t.Helper()
	cfg, err := kafka.SaramaConfig(kafka.Settings{Brokers: st.KafkaBrokers, Topic: st.Topic})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Consumer.MaxWaitTime = 50 * time.Millisecond
	c, err := sarama.NewClient(st.KafkaBrokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return promote.KafkaTopic{Client: c, Topic: st.Topic}
}

// workload writes to the primary's database "shop".
type workload struct {
	rng     *rand.Rand
	db      *mongo.Database
	t       *testing.T
	deleted map[string][]any // per collection, _ids deleted (re-insert candidates)
	next    int
}

func (w *workload) coll(c string) *mongo.Collection { return w.db.Collection(c) }

func (w *workload) body(i int) bson.D {
	d := bson.D{{Key: "n", Value: int32(i)}, {Key: "s", Value: fmt.Sprintf("v%d-%d", i, w.rng.IntN(1000))}}
	switch w.rng.IntN(4) {
	case 0:
		d = append(d, bson.E{Key: "big", Value: int64(w.rng.Int64())}, bson.E{Key: "f", Value: w.rng.Float64()})
	case 1:
		d = append(d, bson.E{Key: "nested", Value: bson.D{{Key: "z", Value: true}, {Key: "a", Value: bson.A{int32(1), "x", nil}}}})
	case 2:
		d = append(d, bson.E{Key: "at", Value: primitive.NewDateTimeFromTime(time.Unix(int64(w.rng.IntN(1<<30)), 0))})
	}
	return d
}

func (w *workload) newID(i int) any {
	if i%3 == 0 {
		return primitive.NewObjectID()
	}
	return int32(i)
}

func (w *workload) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *workload) seed(ctx context.Context, colls []string, n int) {
	for _, c := range colls {
		var docs []any
		for i := 0; i < n; i++ {
			w.next++
			docs = append(docs, append(bson.D{{Key: "_id", Value: w.newID(w.next)}}, w.body(w.next)...))
			if len(docs) == 1000 || i == n-1 {
				_, err := w.coll(c).InsertMany(ctx, docs)
				w.must(err)
				docs = nil
			}
		}
	}
}

// deleteRange deletes n documents of collection c (a deleteMany: one delete event each).
func (w *workload) deleteRange(ctx context.Context, c string, n int) {
	ids := w.ids(ctx, c)
	sort.Slice(ids, func(i, j int) bool { return fmt.Sprint(ids[i]) < fmt.Sprint(ids[j]) })
	ids = ids[:min(n, len(ids))]
	for start := 0; start < len(ids); start += 1000 {
		_, err := w.coll(c).DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids[start:min(start+1000, len(ids))]}}}})
		w.must(err)
	}
	w.remember(c, ids...)
}

func (w *workload) remember(c string, ids ...any) {
	if w.deleted == nil {
		w.deleted = map[string][]any{}
	}
	w.deleted[c] = append(w.deleted[c], ids...)
}

func (w *workload) ids(ctx context.Context, c string) []any {
	cur, err := w.coll(c).Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	w.must(err)
	var out []any
	for cur.Next(ctx) {
		out = append(out, cur.Current.Lookup("_id"))
	}
	w.must(cur.Err())
	return out
}

// random runs n operations on the collections: updates, replaces, deletes, re-inserts of
// deleted _ids, upserts, deleteMany.
func (w *workload) random(ctx context.Context, colls []string, n int) {
	for i := 0; i < n; i++ {
		c := colls[w.rng.IntN(len(colls))]
		ids := w.ids(ctx, c)
		var id any
		if len(ids) > 0 {
			id = ids[w.rng.IntN(len(ids))]
		}
		w.next++
		switch op := w.rng.IntN(10); {
		case op < 3 && id != nil:
			upd := bson.D{{Key: "$set", Value: bson.D{{Key: "s", Value: fmt.Sprint("u", w.next)}, {Key: fmt.Sprint("k", w.rng.IntN(4)), Value: int64(w.next)}}}}
			if w.rng.IntN(3) == 0 {
				upd = append(upd, bson.E{Key: "$unset", Value: bson.D{{Key: "n", Value: ""}}})
			}
			_, err := w.coll(c).UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, upd)
			w.must(err)
		case op == 3 && id != nil:
			_, err := w.coll(c).ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, w.body(w.next))
			w.must(err)
		case op < 6 && id != nil:
			_, err := w.coll(c).DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
			w.must(err)
			w.remember(c, id)
		case op < 8 && len(w.deleted[c]) > 0:
			// Re-insert a deleted _id (it may have been re-inserted already: then update it).
			d := w.deleted[c][w.rng.IntN(len(w.deleted[c]))]
			_, err := w.coll(c).ReplaceOne(ctx, bson.D{{Key: "_id", Value: d}}, w.body(w.next), options.Replace().SetUpsert(true))
			w.must(err)
		case op == 8 && len(ids) > 3:
			some := ids[:3]
			_, err := w.coll(c).DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: some}}}})
			w.must(err)
			w.remember(c, some...)
		default:
			_, err := w.coll(c).InsertOne(ctx, append(bson.D{{Key: "_id", Value: w.newID(w.next + 1_000_000)}}, w.body(w.next)...))
			w.must(err)
		}
	}
}

// collectionEvents: drop b and recreate it with some of its old _ids; rename c to d; rename a
// over an existing e.
func (w *workload) collectionEvents(ctx context.Context) {
	old := w.ids(ctx, "b")
	w.must(w.coll("b").Drop(ctx))
	for i, id := range old {
		if i%4 == 0 {
			_, err := w.coll("b").InsertOne(ctx, append(bson.D{{Key: "_id", Value: id}}, w.body(i)...))
			w.must(err)
		}
	}
	w.deleted["b"] = nil
	admin := w.db.Client().Database("admin")
	w.must(admin.RunCommand(ctx, bson.D{{Key: "renameCollection", Value: "shop.c"}, {Key: "to", Value: "shop.d"}}).Err())
	w.deleted["d"], w.deleted["c"] = w.deleted["c"], nil
	for i := 0; i < 20; i++ {
		w.next++
		_, err := w.coll("e").InsertOne(ctx, append(bson.D{{Key: "_id", Value: int32(5_000_000 + i)}}, w.body(w.next)...))
		w.must(err)
	}
	_, err := w.coll("e").DeleteOne(ctx, bson.D{{Key: "_id", Value: int32(5_000_000)}})
	w.must(err)
	w.must(admin.RunCommand(ctx, bson.D{{Key: "renameCollection", Value: "shop.a"}, {Key: "to", Value: "shop.e"}, {Key: "dropTarget", Value: true}}).Err())
	w.deleted["e"], w.deleted["a"] = w.deleted["a"], nil
}

// dump is namespace -> _id key -> document.
type dump map[string]map[apply.IDKey]bson.Raw

func readColl(ctx context.Context, t *testing.T, c *mongo.Collection, into dump, ns string) {
	t.Helper()
	cur, err := c.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if into[ns] == nil {
		into[ns] = map[apply.IDKey]bson.Raw{}
	}
	for cur.Next(ctx) {
		doc := bson.Raw(bytes.Clone(cur.Current))
		into[ns][apply.KeyOf(doc.Lookup("_id"))] = doc
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
}

// snapshot reads every collection of db.
func snapshot(ctx context.Context, t *testing.T, c *mongo.Client, db string) dump {
	t.Helper()
	out := dump{}
	names, err := c.Database(db).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		readColl(ctx, t, c.Database(db).Collection(n), out, db+"."+n)
	}
	return out
}

// snapshotAll reads every collection of every database but admin, local and config.
func snapshotAll(ctx context.Context, t *testing.T, c *mongo.Client) dump {
	t.Helper()
	dbs, err := c.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	out := dump{}
	for _, db := range dbs {
		if db == "admin" || db == "local" || db == "config" {
			continue
		}
		for ns, docs := range snapshot(ctx, t, c, db) {
			out[ns] = docs
		}
	}
	return out
}

// liveOf keeps the namespaces outside the state and side databases.
func liveOf(d dump) dump {
	out := dump{}
	for ns, docs := range d {
		if strings.HasPrefix(ns, apply.DefaultStateDB+".") || strings.HasPrefix(ns, apply.DefaultStateDB+"_intercepted.") {
			continue
		}
		out[ns] = docs
	}
	return out
}

// nonEmpty drops the empty collections (promote drops those the primary no longer has).
func nonEmpty(d dump) dump {
	out := dump{}
	for ns, docs := range d {
		if len(docs) > 0 {
			out[ns] = docs
		}
	}
	return out
}

// reassemble puts the side database back where its documents came from, onto live.
func reassemble(ctx context.Context, t *testing.T, dr *mongo.Client, live dump) dump {
	t.Helper()
	out := dump{}
	for ns, docs := range live {
		out[ns] = docs
	}
	side := dr.Database(apply.DefaultStateDB + "_intercepted")
	add := func(ns string, doc bson.Raw) {
		if out[ns] == nil {
			out[ns] = map[apply.IDKey]bson.Raw{}
		}
		k := apply.KeyOf(doc.Lookup("_id"))
		if _, dup := out[ns][k]; dup {
			t.Errorf("%s %s is both live and in the side database", ns, doc.Lookup("_id"))
		}
		out[ns][k] = doc
	}
	names, err := side.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n == promote.SideCollections {
			continue
		}
		d := dump{}
		readColl(ctx, t, side.Collection(n), d, n)
		for _, doc := range d[n] {
			if n == promote.SideDeletes {
				add(doc.Lookup("db").StringValue()+"."+doc.Lookup("coll").StringValue(), doc.Lookup("doc").Document())
			} else {
				add(n, doc)
			}
		}
	}
	return out
}

func compareAll(want, got dump) string {
	var diffs []string
	nss := map[string]bool{}
	for ns := range want {
		nss[ns] = true
	}
	for ns := range got {
		nss[ns] = true
	}
	for ns := range nss {
		w, g := want[ns], got[ns]
		if (w == nil) != (g == nil) {
			diffs = append(diffs, fmt.Sprintf("%s: %d documents wanted, %d got (collection present: %v, %v)", ns, len(w), len(g), w != nil, g != nil))
			continue
		}
		for k, doc := range w {
			if gd, ok := g[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: missing %s", ns, doc))
			} else if !bytes.Equal(gd, doc) {
				diffs = append(diffs, fmt.Sprintf("%s: differs\n  want %s\n   got %s", ns, doc, gd))
			}
		}
		for k, doc := range g {
			if _, ok := w[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: extra %s", ns, doc))
			}
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 20 {
		diffs = append(diffs[:20], fmt.Sprintf("... %d more", len(diffs)-20))
	}
	return strings.Join(diffs, "\n")
}

// checkArchiveReferences reads, for every moved delete, the archive object it names and checks
// that the object's line for the event holds the same document.
func checkArchiveReferences(ctx context.Context, t *testing.T, dr *mongo.Client, ar *archive.S3) {
	t.Helper()
	side := dr.Database(apply.DefaultStateDB + "_intercepted")
	cur, err := side.Collection(promote.SideDeletes).Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]map[string]archive.Record{}
	n := 0
	for cur.Next(ctx) {
		n++
		key := cur.Current.Lookup("archive", "object").StringValue()
		if objects[key] == nil {
			body, err := ar.Get(ctx, key)
			if err != nil {
				t.Fatalf("archive object %s: %v", key, err)
			}
			lines, err := archive.DecodeObject(body)
			if err != nil {
				t.Fatal(err)
			}
			objects[key] = map[string]archive.Record{}
			for _, l := range lines {
				r, err := archive.ParseLine(l)
				if err != nil {
					t.Fatal(err)
				}
				objects[key][r.EventID] = r
			}
		}
		id := cur.Current.Lookup("_id").StringValue()
		r, ok := objects[key][id]
		if !ok {
			t.Errorf("archive object %s has no line for event %s", key, id)
			continue
		}
		before, err := r.BeforeDocument()
		if err != nil {
			t.Fatal(err)
		}
		if doc := cur.Current.Lookup("doc").Document(); !r.BeforeExact || !bytes.Equal(before, doc) {
			t.Errorf("event %s: archive before (exact %v) %s, side collection %s", id, r.BeforeExact, before, doc)
		}
	}
	if n == 0 {
		t.Error("no intercepted delete in the side database")
	}

	// Each moved side collection names the line of its collection event, which says where DR
	// preserved the collection.
	cur, err = side.Collection(promote.SideCollections).Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	n = 0
	for cur.Next(ctx) {
		n++
		key := cur.Current.Lookup("archive", "object").StringValue()
		body, err := ar.Get(ctx, key)
		if err != nil {
			t.Fatalf("archive object %s: %v", key, err)
		}
		lines, err := archive.DecodeObject(body)
		if err != nil || len(lines) != 1 {
			t.Fatalf("archive object %s: %d lines, %v", key, len(lines), err)
		}
		r, err := archive.ParseLine(lines[0])
		if err != nil {
			t.Fatal(err)
		}
		db, coll := cur.Current.Lookup("db").StringValue(), cur.Current.Lookup("coll").StringValue()
		pa := r.PreservedAs
		if r.EventID != cur.Current.Lookup("eventId").StringValue() || pa == nil || pa.DB != db ||
			(pa.Coll != coll && (pa.Suffix == "" || !strings.HasSuffix(coll, pa.Suffix))) {
			t.Errorf("side collection %s.%s: its archive line %s", db, coll, lines[0])
		}
		if cur.Current.Lookup("state").StringValue() != "moved" {
			t.Errorf("side collection %s.%s: state %s", db, coll, cur.Current.Lookup("state"))
		}
	}
	if n == 0 {
		t.Error("no side collection in the side database")
	}
}
