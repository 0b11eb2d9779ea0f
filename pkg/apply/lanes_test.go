package apply

import (
	"context"
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestQueueLanes checks how a queue is split into write lanes: every write once, each
// document's writes in one lane and in the queue's order.
func TestQueueLanes(t *testing.T) {
	// 300 documents with 1 to 3 writes each, interleaved as a batch interleaves them.
	q := &queue{ns: fooNS}
	items := make([]*item, 300)
	for i := range items {
		id := idOf(t, int32(i))
		items[i] = &item{id: id, ref: docRef{ns: fooNS, key: KeyOf(id)}}
	}
	for round := range 3 {
		for i, it := range items {
			if i%3 >= round {
				q.writes = append(q.writes, Write{Kind: UpdateOne, ID: it.id, Doc: raw(t, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: round}}}})})
				q.owners = append(q.owners, it)
			}
		}
	}
	for _, n := range []int{0, 1, 2, 4} {
		t.Run(fmt.Sprintf("%d lanes", n), func(t *testing.T) {
			lanes := q.lanes(n)
			if want := max(n, 1); len(lanes) != want {
				t.Fatalf("%d lanes, want %d", len(lanes), want)
			}
			laneOfDoc := map[*item]int{}
			next := map[*item]int{} // the round of the document's next write
			total := 0
			for l, lane := range lanes {
				if lane.ns != q.ns || len(lane.writes) != len(lane.owners) {
					t.Fatalf("lane %d: namespace %s, %d writes and %d owners", l, lane.ns, len(lane.writes), len(lane.owners))
				}
				if n >= 2 && len(lane.writes) < len(q.writes)/(2*n) {
					t.Errorf("lane %d holds %d of %d writes: the documents are not spread", l, len(lane.writes), len(q.writes))
				}
				for i, it := range lane.owners {
					if at, seen := laneOfDoc[it]; seen && at != l {
						t.Fatalf("document %s has writes in lanes %d and %d", it.ref.key, at, l)
					}
					laneOfDoc[it] = l
					round, _ := lane.writes[i].Doc.Lookup("$set", "v").Int32OK()
					if int(round) != next[it] {
						t.Fatalf("lane %d: document %s gets its write %d before its write %d", l, it.ref.key, round, next[it])
					}
					next[it]++
					total++
				}
			}
			if total != len(q.writes) {
				t.Errorf("the lanes hold %d writes, the queue %d", total, len(q.writes))
			}
		})
	}
}

// TestLanesKeepEachDocumentsOrder applies, in one batch, an insert and five updates of each of
// 199 documents, interleaved: enough writes for the segment to go out in concurrent lanes. DR
// must end with each document's last version, and a refused write must dead-letter its record
// alone.
func TestLanesKeepEachDocumentsOrder(t *testing.T) {
	env := newEnv(t, Options{})
	const docs, updates = 199, 5
	var evs []changeevent.Event
	tick := uint32(0)
	add := func(e changeevent.Event) {
		tick++
		e.ClusterTime.I = tick
		retoken(t, &e)
		evs = append(evs, e)
	}
	for i := range docs {
		add(evt(t, changeevent.Insert, fooNS, int32(i), bson.D{{Key: "v", Value: int32(0)}}))
	}
	for u := 1; u <= updates; u++ {
		for i := range docs {
			add(update(t, fooNS, int32(i), bson.D{{Key: "v", Value: int32(u)}}, nil, nil))
		}
	}
	env.dr.refuse = func(_ changeevent.Namespace, w Write) *WriteError {
		if id, _ := w.ID.Int32OK(); id == 7 && w.Kind == UpdateOne && w.Doc.Lookup("$set", "v").Int32() == 3 {
			return &WriteError{Code: 2, Message: "refused for the test"}
		}
		return nil
	}
	sum, err := env.h.Handle(context.Background(), batchOf(t, evs...))
	if err != nil {
		t.Fatal(err)
	}
	if len(env.dr.bulks) < 2 {
		t.Errorf("%d bulk writes: the segment did not go out in lanes", len(env.dr.bulks))
	}
	if sum.DeadLettered != 1 || sum.Applied != len(evs)-1 {
		t.Errorf("applied %d and dead-lettered %d, want %d and 1", sum.Applied, sum.DeadLettered, len(evs)-1)
	}
	for i := range docs {
		d := env.dr.doc(fooNS, idOf(t, int32(i)))
		if got, ok := d.Lookup("v").Int32OK(); !ok || got != updates {
			t.Errorf("document %d: v = %v, want %d (its last update)", i, d.Lookup("v"), updates)
		}
	}
}
