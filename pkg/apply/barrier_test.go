package apply

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// barrierCopy is the copy of collection event ev that capture publishes to partition p of n.
func barrierCopy(t testing.TB, ev changeevent.Event, p, n int, offset int64) events.KafkaRecord {
	r := record(t, "changevents", int64(p), offset, ev)
	r.Headers = append(r.Headers, map[string]events.JSONNumberBytes{changeevent.HeaderBarrier: events.JSONNumberBytes(strconv.Itoa(n))})
	return r
}

// owner is the partition of n that owns document id of primary database db.
func owner(t testing.TB, db string, id int32, n int) int {
	key, err := changeevent.Key(&changeevent.Event{Operation: changeevent.Delete, NS: changeevent.Namespace{DB: db}, DocumentKey: raw(t, bson.D{{Key: "_id", Value: id}})})
	if err != nil {
		t.Fatal(err)
	}
	return int(changeevent.Partition(key, int32(n)))
}

// idsIn lists the int32 _ids of a fake DR namespace, sorted.
func idsIn(f *fakeDR, ns changeevent.Namespace) []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int32
	for _, d := range f.docs[ns] {
		out = append(out, d.Lookup("_id").Int32())
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func partitionBatch(recs ...events.KafkaRecord) events.KafkaEvent {
	ev := events.KafkaEvent{Records: map[string][]events.KafkaRecord{}}
	for _, r := range recs {
		k := fmt.Sprintf("%s-%d", r.Topic, r.Partition)
		ev.Records[k] = append(ev.Records[k], r)
	}
	return ev
}

// TestDropBarrier: a drop published to three partitions. Each partition moves the documents it
// owns into the side collection when it reaches its copy, independently of the others; a
// document recreated after the drop never overwrites the dropped one; the drop has one line.
func TestDropBarrier(t *testing.T) {
	const n = 3
	env := newEnv(t, Options{})
	for i := range int32(12) {
		env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: "before"}})
	}
	drop := evt(t, changeevent.Drop, fooNS, nil, nil)
	side := changeevent.Namespace{DB: "bar", Coll: "foo.dropped.1658262022-1"}
	owned := map[int][]int32{}
	for i := range int32(12) {
		owned[owner(t, "bar", i, n)] = append(owned[owner(t, "bar", i, n)], i)
	}
	if len(owned[0]) == 0 || len(owned[1]) == 0 || len(owned[2]) == 0 {
		t.Fatalf("ownership %v does not exercise every partition", owned)
	}

	// Partition 1 reaches the drop first: only its documents move.
	if _, err := env.h.Handle(context.Background(), partitionBatch(barrierCopy(t, drop, 1, n, 10))); err != nil {
		t.Fatal(err)
	}
	if got := idsIn(env.dr, side); fmt.Sprint(got) != fmt.Sprint(owned[1]) {
		t.Errorf("after partition 1: side holds %v, want %v", got, owned[1])
	}

	// Partitions 0 and 2 reach it, each followed by a re-created document of its own.
	recreated := owned[0][0]
	again := evt(t, changeevent.Insert, fooNS, recreated, bson.D{{Key: "v", Value: "after"}})
	batch := partitionBatch(barrierCopy(t, drop, 0, n, 20), record(t, "changevents", 0, 21, again), barrierCopy(t, drop, 2, n, 30))
	for range 2 { // and a redelivery
		sum, err := env.h.Handle(context.Background(), batch)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Archived != 0 {
			t.Errorf("the drop was archived again: %+v", sum)
		}
	}
	if got := idsIn(env.dr, side); len(got) != 12 {
		t.Errorf("side holds %v, want all 12 pre-drop documents", got)
	}
	if got := idsIn(env.dr, fooNS); fmt.Sprint(got) != fmt.Sprint([]int32{recreated}) {
		t.Errorf("live collection holds %v, want only the re-created %d", got, recreated)
	}
	if d := extJSON(t, env.dr.doc(side, idOf(t, recreated))); d != fmt.Sprintf(`{"_id":%d,"v":"before"}`, recreated) {
		t.Errorf("the dropped version of %d: %s", recreated, d)
	}
	recs := env.ar.lines(t)
	if len(recs) != 1 || recs[0].Operation != "drop" || recs[0].PreservedAs == nil || *recs[0].PreservedAs != (archive.Preserved{DB: "bar", Coll: side.Coll}) ||
		recs[0].Kafka.Partition != 1 || !recs[0].BeforeExact || string(recs[0].Before) != "null" {
		t.Errorf("lines %+v", recs)
	}
	for p := range n {
		if env.dr.barriers[drop.EventID()+"/"+strconv.Itoa(p)].State != BarrierDone {
			t.Errorf("partition %d has no done marker: %v", p, env.dr.barriers)
		}
	}
}

// TestBarrierMoveIsResumable: a move interrupted part way is finished by the redelivery, and
// nothing after the barrier is applied before the marker exists.
func TestBarrierMoveIsResumable(t *testing.T) {
	const n = 2
	env := newEnv(t, Options{})
	for i := range int32(20) {
		env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: i}})
	}
	drop := evt(t, changeevent.Drop, fooNS, nil, nil)
	after := evt(t, changeevent.Insert, fooNS, int32(100), bson.D{})
	batch := partitionBatch(barrierCopy(t, drop, 0, n, 5), record(t, "changevents", 0, 6, after))
	deletes := 0
	env.dr.refuse = func(_ changeevent.Namespace, w Write) *WriteError {
		if w.Kind == DeleteOne {
			if deletes++; deletes == 3 {
				return &WriteError{Code: 10107, Message: "not primary"} // transient: the batch fails
			}
		}
		return nil
	}
	if _, err := env.h.Handle(context.Background(), batch); err == nil {
		t.Fatal("the interrupted move did not fail the batch")
	}
	if env.dr.doc(fooNS, idOf(t, int32(100))) != nil {
		t.Fatal("a write after the barrier was applied before the barrier was done")
	}
	env.dr.refuse = nil
	if _, err := env.h.Handle(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	side := changeevent.Namespace{DB: "bar", Coll: "foo.dropped.1658262022-1"}
	var mine []int32
	for i := range int32(20) {
		if owner(t, "bar", i, n) == 0 {
			mine = append(mine, i)
		}
	}
	if got := idsIn(env.dr, side); fmt.Sprint(got) != fmt.Sprint(mine) {
		t.Errorf("side %v, want partition 0's %v", got, mine)
	}
	if env.dr.doc(fooNS, idOf(t, int32(100))) == nil {
		t.Error("the insert after the barrier was not applied")
	}
}

// TestRenameBarrier: rename a -> b over an existing b, in two partitions: each moves its
// documents of b aside, then its documents of a into b.
func TestRenameBarrier(t *testing.T) {
	const n = 2
	env := newEnv(t, Options{})
	a, b := fooNS, changeevent.Namespace{DB: "bar", Coll: "foo_renamed"}
	for i := range int32(8) {
		env.dr.put(t, a, bson.D{{Key: "_id", Value: i}, {Key: "from", Value: "a"}})
		env.dr.put(t, b, bson.D{{Key: "_id", Value: i + 4}, {Key: "from", Value: "b"}})
	}
	ren := evt(t, changeevent.Rename, a, nil, nil)
	if _, err := env.h.Handle(context.Background(), partitionBatch(barrierCopy(t, ren, 0, n, 1), barrierCopy(t, ren, 1, n, 1))); err != nil {
		t.Fatal(err)
	}
	side := changeevent.Namespace{DB: "bar", Coll: "foo_renamed.dropped.1658262022-1"}
	if got := idsIn(env.dr, a); len(got) != 0 {
		t.Errorf("source still holds %v", got)
	}
	if got := idsIn(env.dr, b); fmt.Sprint(got) != "[0 1 2 3 4 5 6 7]" {
		t.Errorf("target holds %v", got)
	}
	for i := range int32(8) {
		if d := extJSON(t, env.dr.doc(b, idOf(t, i))); !strings.Contains(d, `"from":"a"`) {
			t.Errorf("target %d is %s", i, d)
		}
	}
	if got := idsIn(env.dr, side); fmt.Sprint(got) != "[4 5 6 7 8 9 10 11]" {
		t.Errorf("displaced target kept as %v", got)
	}
	recs := env.ar.lines(t)
	if len(recs) != 1 || recs[0].To == nil || recs[0].To.Coll != "foo_renamed" || recs[0].PreservedAs == nil || recs[0].PreservedAs.Coll != side.Coll {
		t.Errorf("lines %+v", recs)
	}
}

// TestDropDatabaseBarrier: every collection of the database but side collections (of earlier
// events) and the state database is moved aside, per partition.
func TestDropDatabaseBarrier(t *testing.T) {
	const n = 2
	env := newEnv(t, Options{})
	colls := []string{"foo", "exa", "foo.dropped.1-1"}
	for _, c := range colls {
		for i := range int32(6) {
			env.dr.put(t, changeevent.Namespace{DB: "bar", Coll: c}, bson.D{{Key: "_id", Value: i}})
		}
	}
	env.dr.put(t, changeevent.Namespace{DB: DefaultStateDB, Coll: "archived"}, bson.D{{Key: "_id", Value: int32(1)}})
	dd := evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil)
	if _, err := env.h.Handle(context.Background(), partitionBatch(barrierCopy(t, dd, 0, n, 1), barrierCopy(t, dd, 1, n, 1))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"foo", "exa"} {
		if got := idsIn(env.dr, changeevent.Namespace{DB: "bar", Coll: c}); len(got) != 0 {
			t.Errorf("%s still holds %v", c, got)
		}
		if got := idsIn(env.dr, changeevent.Namespace{DB: "bar", Coll: c + ".dropped.1658262022-1"}); len(got) != 6 {
			t.Errorf("%s kept as %v", c, got)
		}
	}
	if got := idsIn(env.dr, changeevent.Namespace{DB: "bar", Coll: "foo.dropped.1-1"}); len(got) != 6 {
		t.Errorf("an earlier side collection was moved: %v", got)
	}
	recs := env.ar.lines(t)
	if len(recs) != 1 || recs[0].Coll != "" || *recs[0].PreservedAs != (archive.Preserved{DB: "bar", Suffix: ".dropped.1658262022-1"}) {
		t.Errorf("lines %+v", recs)
	}
}

// TestDropBarrierApplyPolicy: under drop=apply each partition deletes its documents.
func TestDropBarrierApplyPolicy(t *testing.T) {
	const n = 2
	p, _ := ParsePolicy("drop=apply")
	env := newEnv(t, Options{Policy: &p})
	for i := range int32(10) {
		env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: i}})
	}
	drop := evt(t, changeevent.Drop, fooNS, nil, nil)
	if _, err := env.h.Handle(context.Background(), partitionBatch(barrierCopy(t, drop, 1, n, 1))); err != nil {
		t.Fatal(err)
	}
	for _, id := range idsIn(env.dr, fooNS) {
		if owner(t, "bar", id, n) == 1 {
			t.Errorf("partition 1's document %d survived its share of the drop", id)
		}
	}
	if len(idsIn(env.dr, fooNS)) == 0 || len(env.ar.lines(t)) != 0 {
		t.Errorf("partition 0's documents went too, or the drop was archived: %v", idsIn(env.dr, fooNS))
	}
}

// TestBarrierNeedsNoOtherPartition: a partition's later events are applied as soon as its own
// share is done, with the other partitions' copies not delivered yet.
func TestBarrierNeedsNoOtherPartition(t *testing.T) {
	env := newEnv(t, Options{})
	drop := evt(t, changeevent.Drop, fooNS, nil, nil)
	after := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})
	sum, err := env.h.Handle(context.Background(), partitionBatch(barrierCopy(t, drop, 2, 3, 1), record(t, "changevents", 2, 2, after)))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Barriers != 1 || env.dr.doc(fooNS, idOf(t, int32(1))) == nil {
		t.Errorf("summary %+v", sum)
	}
}
