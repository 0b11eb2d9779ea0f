package apply

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// orderDR records the order of the frontier writes and the DR writes of a fakeDR.
type orderDR struct {
	*fakeDR
	mu    sync.Mutex
	order []string
}

func (o *orderDR) note(s string) {
	o.mu.Lock()
	o.order = append(o.order, s)
	o.mu.Unlock()
}

func (o *orderDR) SetFrontiers(ctx context.Context, fs []Frontier) error {
	kind := "applied"
	for _, f := range fs {
		if f.IntentHigh >= f.IntentLow {
			kind = "intent"
		}
	}
	// Slow, so that a segment that did not wait for its intent would write first.
	time.Sleep(20 * time.Millisecond)
	err := o.fakeDR.SetFrontiers(ctx, fs)
	o.note(kind) // once it is durable
	return err
}

func (o *orderDR) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	o.note("bulk")
	return o.fakeDR.BulkWrite(ctx, ns, writes)
}

// TestIntentIsDurableBeforeTheWrites: the segment's intent is recorded while the segment is
// read, walked and claimed, but always before its first DR write, and not at all for a segment
// that writes nothing to DR (deletes the policy only archives).
func TestIntentIsDurableBeforeTheWrites(t *testing.T) {
	ins := func(i int32) changeevent.Event {
		return evt(t, changeevent.Insert, fooNS, i, bson.D{{Key: "x", Value: i}})
	}
	del := func(i int32) changeevent.Event { return evt(t, changeevent.Delete, fooNS, i, nil) }
	tests := []struct {
		name, policy string
		evs          []changeevent.Event
		want         []string
	}{
		{"inserts", "", []changeevent.Event{ins(1), ins(2), ins(3)}, []string{"intent", "bulk", "applied"}},
		{"archived deletes", "", []changeevent.Event{del(1), del(2)}, []string{"applied"}},
		{"applied deletes", "delete=apply", []changeevent.Event{del(1), del(2)}, []string{"intent", "bulk", "applied"}},
		{"inserts and archived deletes", "", []changeevent.Event{ins(4), del(1)}, []string{"intent", "bulk", "applied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy
			if tt.policy != "" {
				var err error
				if p, err = ParsePolicy(tt.policy); err != nil {
					t.Fatal(err)
				}
			}
			dr := &orderDR{fakeDR: newFakeDR()}
			dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}})
			dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(2)}})
			h, err := New(dr, newFakeArchive(), Options{Policy: &p, Logger: discardLogger(), Metrics: &bytes.Buffer{}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.Handle(context.Background(), batchOf(t, tt.evs...)); err != nil {
				t.Fatal(err)
			}
			assertStrings(t, "frontier and DR writes", dr.order, tt.want)
		})
	}
}

// TestFencePrefixes: what the fence keeps of the decodings is the decodings of the records it
// keeps.
func TestFencePrefixes(t *testing.T) {
	parts := [][]events.KafkaRecord{
		{{Partition: 0, Offset: 1}, {Partition: 0, Offset: 2}},
		{{Partition: 1, Offset: 1}, {Partition: 1, Offset: 2}, {Partition: 1, Offset: 3}},
		{{Partition: 2, Offset: 1}, {Partition: 2, Offset: 2}},
	}
	ds := make([][]decoded, len(parts))
	for p, recs := range parts {
		for _, r := range recs {
			ds[p] = append(ds[p], decoded{err: fmt.Errorf("%d@%d", r.Partition, r.Offset)})
		}
	}
	tests := []struct {
		name string
		ends map[int64]int64 // the fence
		want int             // partitions kept
	}{
		{"all kept", map[int64]int64{0: 9, 1: 9, 2: 9}, 3},
		{"none kept", map[int64]int64{}, 0},
		{"a partition cut", map[int64]int64{0: 9, 2: 9}, 2},
		{"prefixes", map[int64]int64{0: 2, 1: 3}, 2},
		{"the first cut, the last shortened", map[int64]int64{1: 9, 2: 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, _ := (&Fence{Ends: tt.ends}).before(parts)
			kept, got := prefixes(parts, n), prefixes(ds, n)
			if len(kept) != tt.want || len(got) != len(kept) {
				t.Fatalf("%d partitions of records and %d of decodings, want %d", len(kept), len(got), tt.want)
			}
			for k, recs := range kept {
				if len(got[k]) != len(recs) {
					t.Fatalf("partition %d: %d decodings, want %d", k, len(got[k]), len(recs))
				}
				for i, r := range recs {
					if want := fmt.Sprintf("%d@%d", r.Partition, r.Offset); got[k][i].err.Error() != want {
						t.Errorf("kept[%d][%d] is the decoding of %s, want %s", k, i, got[k][i].err, want)
					}
				}
			}
		})
	}
}

// revivalOrderDR notes, for each _id, the order of its DR writes and its revived marks.
type revivalOrderDR struct {
	*fakeDR
	mu    sync.Mutex
	calls int
	wrote map[IDKey]int // the call of the document's last write
	early []string      // revived marks sent before the document's last write
}

func (o *revivalOrderDR) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	res, err := o.fakeDR.BulkWrite(ctx, ns, writes)
	o.mu.Lock()
	o.calls++
	for _, w := range writes {
		o.wrote[KeyOf(w.ID)] = o.calls
	}
	o.mu.Unlock()
	return res, err
}

func (o *revivalOrderDR) Revived(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) error {
	o.mu.Lock()
	o.calls++
	for _, id := range ids {
		if _, ok := o.wrote[KeyOf(id)]; !ok {
			o.early = append(o.early, id.String())
		}
	}
	o.mu.Unlock()
	return o.fakeDR.Revived(ctx, ns, ids)
}

// TestRevivalsFollowTheirWrites: in a segment written in lanes, each re-inserted document's
// delete entry is marked revived, and only after the document's write; a document the segment
// deletes again is not revived.
func TestRevivalsFollowTheirWrites(t *testing.T) {
	const docs = 400 // enough writes for lanes
	dr := &revivalOrderDR{fakeDR: newFakeDR(), wrote: map[IDKey]int{}}
	h, err := New(dr, newFakeArchive(), Options{Logger: discardLogger(), Metrics: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	h.claimID = func() string { return "claim" }
	tick := uint32(0)
	event := func(op changeevent.OperationType, i int, full bson.D) changeevent.Event {
		tick++
		e := evt(t, op, fooNS, int32(i), full)
		e.ClusterTime.I = tick
		retoken(t, &e)
		return e
	}
	var inserts, deletes, again []changeevent.Event
	for i := range docs {
		inserts = append(inserts, event(changeevent.Insert, i, bson.D{{Key: "v", Value: int32(0)}}))
	}
	for i := range docs {
		deletes = append(deletes, event(changeevent.Delete, i, nil))
	}
	for i := range docs {
		again = append(again, event(changeevent.Insert, i, bson.D{{Key: "v", Value: int32(1)}}))
	}
	deletedAgain := event(changeevent.Delete, 7, nil)
	again = append(again, deletedAgain)
	for _, evs := range [][]changeevent.Event{inserts, deletes} {
		if _, err := h.Handle(context.Background(), batchOf(t, evs...)); err != nil {
			t.Fatal(err)
		}
	}
	clear(dr.wrote)
	if _, err := h.Handle(context.Background(), batchOf(t, again...)); err != nil {
		t.Fatal(err)
	}
	if len(dr.early) > 0 {
		t.Errorf("%d documents marked revived before their write, such as %s", len(dr.early), dr.early[0])
	}
	for i, d := range deletes {
		e, ok := dr.ledger[d.EventID()]
		if !ok {
			t.Fatalf("delete %d has no ledger entry", i)
		}
		if want := i != 7; e.Revived != want {
			t.Errorf("delete of %d: revived %v, want %v", i, e.Revived, want)
		}
	}
	if e := dr.ledger[deletedAgain.EventID()]; e.Revived {
		t.Errorf("the last delete of 7 is revived")
	}
}
