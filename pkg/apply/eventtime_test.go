package apply

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestEventTimeArchive runs a random workload (inserts, operator updates, replaces, deletes and
// re-inserts of the same _ids) on an embedded primary, reads its change stream afterwards with
// fullDocument: updateLookup (so every looked-up document is from the end of the workload: the
// future, for most events), spreads the events over three partitions by their keys as capture
// does, and applies them in batches of random sizes, some delivered twice, to an embedded DR. It
// checks the guarantees of docs/apply.md against the workload's own record of what it did:
//
//   - DR holds the primary's final documents byte for byte (deleted ones kept as they were);
//   - every delete is archived exactly once, with the document exactly as the workload saw it
//     just before deleting it, beforeExact true;
//   - no line is inexact or missing: DR started in sync, so every version is known.
func TestEventTimeArchive(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { eventTimeRun(t, seed, false) })
	}
}

// TestEventTimeHistory is TestEventTimeArchive with the version history on (Options.History),
// and checks in addition that every insert, update and replace has exactly one history line
// whose before is the document exactly as the workload saw it just before that event (null for
// an insert), beforeExact true, whatever the redeliveries.
func TestEventTimeHistory(t *testing.T) {
	for seed := range uint64(2) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { eventTimeRun(t, seed, true) })
	}
}

func eventTimeRun(t *testing.T, seed uint64, history bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, 11))
	primary, dr := mongotest.Client(t), mongotest.Client(t)
	pc := primary.Database("bar").Collection("foo")

	// The workload, with its own record of each document just before each delete.
	stream, err := pc.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetFullDocument(options.UpdateLookup))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close(ctx)
	deleted := map[string]bson.Raw{} // resume token (as ext JSON) of the delete -> pre-image
	var deletes []bson.Raw           // pre-images in order, matched to events below
	var pres []bson.Raw              // every event's pre-image in order (nil for an insert)
	preOf := map[string]bson.Raw{}   // resume token of an insert, update or replace -> pre-image
	read := func(filter bson.D) bson.Raw {
		pre, err := pc.FindOne(ctx, filter).Raw()
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Clone(pre)
	}
	live := map[int32]bool{}
	const ids = 15
	ops := 0
	for ops < 400 {
		id := int32(rng.IntN(ids))
		filter := bson.D{{Key: "_id", Value: id}}
		if !live[id] {
			doc := bson.D{{Key: "_id", Value: id}, {Key: "v", Value: int32(rng.IntN(9))}, {Key: "arr", Value: bson.A{int32(1), int32(2)}},
				{Key: "sub", Value: bson.D{{Key: "k", Value: "x"}}}}
			if _, err := pc.InsertOne(ctx, doc); err != nil {
				t.Fatal(err)
			}
			live[id] = true
			pres = append(pres, nil)
			ops++
			continue
		}
		switch k := rng.IntN(10); {
		case k < 6:
			pre := read(filter)
			if res, err := pc.UpdateOne(ctx, filter, randomOperatorUpdate(rng)); err == nil && res.ModifiedCount > 0 {
				pres = append(pres, pre)
				ops++
			}
		case k < 7:
			pre := read(filter)
			if _, err := pc.ReplaceOne(ctx, filter, bson.D{{Key: "r", Value: int32(rng.IntN(100))}, {Key: "arr", Value: bson.A{}}}); err != nil {
				t.Fatal(err)
			}
			pres = append(pres, pre)
			ops++
		default:
			pre := read(filter)
			if _, err := pc.DeleteOne(ctx, filter); err != nil {
				t.Fatal(err)
			}
			pres = append(pres, pre)
			deletes = append(deletes, pre)
			live[id] = false
			ops++
		}
	}

	// The change stream, read afterwards: every updateLookup sees the final state.
	var recs [3][]events.KafkaRecord
	future, deleteIdx := 0, 0
	for n := 0; n < ops; n++ {
		if !stream.Next(ctx) {
			t.Fatalf("change stream ended after %d of %d events: %v", n, ops, stream.Err())
		}
		ev, err := changeevent.FromChangeStream(stream.Current)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Operation == changeevent.Delete {
			deleted[string(ev.ResumeToken)] = deletes[deleteIdx]
			deleteIdx++
		} else {
			preOf[string(ev.ResumeToken)] = pres[n]
		}
		if ev.Operation == changeevent.Update && ev.FullDocument != nil {
			future++
		}
		key, _ := changeevent.Key(&ev)
		p := changeevent.Partition(key, 3)
		recs[p] = append(recs[p], record(t, "changevents", int64(p), int64(len(recs[p])), ev))
	}
	if future == 0 || len(deleted) < 20 {
		t.Fatalf("weak workload: %d updates with a looked-up document, %d deletes", future, len(deleted))
	}

	// Apply in batches of random sizes; some delivered twice.
	ar := newFakeArchive()
	h, err := New(NewMongoWriter(dr), ar, Options{Logger: discardLogger(), ArchivePrefix: "docdbdr/", History: history})
	if err != nil {
		t.Fatal(err)
	}
	var pos [3]int
	var total Summary
	for pos[0] < len(recs[0]) || pos[1] < len(recs[1]) || pos[2] < len(recs[2]) {
		batch := events.KafkaEvent{Records: map[string][]events.KafkaRecord{}}
		for p := range 3 {
			n := min(rng.IntN(25), len(recs[p])-pos[p])
			if n > 0 {
				batch.Records["changevents-"+strconv.Itoa(p)] = recs[p][pos[p] : pos[p]+n]
				pos[p] += n
			}
		}
		for range 1 + rng.IntN(2) {
			sum, err := h.Handle(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			total.Archived += sum.Archived
			total.HistoryLines += sum.HistoryLines
			total.BeforeInexact += sum.BeforeInexact
			total.BeforeMissing += sum.BeforeMissing
		}
	}

	// DR holds the primary's documents byte for byte, and the ones deleted since.
	cur, err := pc.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for cur.Next(ctx) {
		got := findRaw(t, dr, fooNS, cur.Current.Lookup("_id"))
		if !bytes.Equal(got, cur.Current) {
			t.Errorf("DR document\n got %s\nwant %s", extJSON(t, got), extJSON(t, cur.Current))
		}
	}
	// Every delete once, with the version the workload deleted.
	seen := map[string]bool{}
	for _, r := range ar.lines(t) {
		var tok bson.Raw
		if err := bson.UnmarshalExtJSON(r.ResumeToken, true, &tok); err != nil {
			t.Fatal(err)
		}
		want, ok := deleted[string(tok)]
		if !ok {
			t.Errorf("line for an event that was not a delete: %+v", r)
			continue
		}
		if seen[string(tok)] {
			t.Errorf("delete archived twice: %s", r.EventID)
		}
		seen[string(tok)] = true
		before, err := r.BeforeDocument()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, want) || !r.BeforeExact {
			t.Errorf("delete %s: before (exact %t, %s)\n got %s\nwant %s", r.EventID, r.BeforeExact, r.BeforeNote, extJSON(t, before), extJSON(t, want))
		}
	}
	if len(seen) != len(deleted) || total.Archived-total.HistoryLines != len(deleted) || total.BeforeInexact != 0 || total.BeforeMissing != 0 {
		t.Errorf("%d of %d deletes archived; summary archived %d (history %d), inexact %d, missing %d", len(seen), len(deleted),
			total.Archived, total.HistoryLines, total.BeforeInexact, total.BeforeMissing)
	}
	// The version history: one line per insert, update and replace, with the version the
	// workload saw just before it.
	want := 0
	if history {
		want = len(preOf)
	}
	hseen := map[string]bool{}
	for _, r := range ar.historyLines(t) {
		var tok bson.Raw
		if err := bson.UnmarshalExtJSON(r.ResumeToken, true, &tok); err != nil {
			t.Fatal(err)
		}
		pre, ok := preOf[string(tok)]
		if !ok {
			t.Errorf("history line for an event that is not an insert, update or replace: %+v", r)
			continue
		}
		if hseen[string(tok)] {
			t.Errorf("history line written twice: %s %s", r.Operation, r.EventID)
		}
		hseen[string(tok)] = true
		before, err := r.BeforeDocument()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, pre) || !r.BeforeExact {
			t.Errorf("%s %s: before (exact %t, %s)\n got %s\nwant %s", r.Operation, r.EventID, r.BeforeExact, r.BeforeNote,
				extJSON(t, before), extJSON(t, pre))
		}
	}
	if len(hseen) != want || total.HistoryLines != want {
		t.Errorf("%d history lines (summary %d), want one per insert, update and replace: %d", len(hseen), total.HistoryLines, want)
	}
	t.Logf("%d events, %d deletes, %d updates with a looked-up document", ops, len(deleted), future)
}

// randomOperatorUpdate is one to three update operators on the workload's fields.
func randomOperatorUpdate(rng *rand.Rand) bson.D {
	choices := []bson.E{
		{Key: "$set", Value: bson.D{{Key: "v", Value: int32(rng.IntN(50))}}},
		{Key: "$set", Value: bson.D{{Key: "n" + strconv.Itoa(rng.IntN(4)), Value: "new"}}},
		{Key: "$set", Value: bson.D{{Key: "sub.k" + strconv.Itoa(rng.IntN(2)), Value: rng.Float64()}}},
		{Key: "$set", Value: bson.D{{Key: "arr." + strconv.Itoa(rng.IntN(4)), Value: int32(7)}}},
		{Key: "$unset", Value: bson.D{{Key: "n" + strconv.Itoa(rng.IntN(4)), Value: ""}}},
		{Key: "$inc", Value: bson.D{{Key: "v", Value: int32(1)}}},
		{Key: "$push", Value: bson.D{{Key: "arr", Value: int32(rng.IntN(9))}}},
		{Key: "$pop", Value: bson.D{{Key: "arr", Value: int32(1)}}},
		{Key: "$rename", Value: bson.D{{Key: "v", Value: "w"}}},
	}
	var u bson.D
	used := map[string]bool{}
	for range 1 + rng.IntN(3) {
		c := choices[rng.IntN(len(choices))]
		field := c.Value.(bson.D)[0].Key[:1]
		if used[c.Key] || used[field] {
			continue
		}
		used[c.Key], used[field] = true, true
		u = append(u, c)
	}
	return u
}
