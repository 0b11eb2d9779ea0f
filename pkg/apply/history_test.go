package apply

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// historyWorkload is one document's life in one batch: DR holds {_id: 1, a: 1}; an update whose
// looked-up document is from the future (a: 99), a replace, an update, a delete, and an insert
// of another document. want is each history line's before, in order (nil: null).
func historyWorkload(t *testing.T) (evs []changeevent.Event, want []bson.Raw) {
	u1 := update(t, fooNS, int32(1), bson.D{{Key: "a", Value: int32(2)}}, nil, nil)
	u1.FullDocument = raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(99)}})
	retoken(t, &u1)
	rep := evt(t, changeevent.Replace, fooNS, int32(1), bson.D{{Key: "b", Value: "x"}})
	u2 := update(t, fooNS, int32(1), bson.D{{Key: "c", Value: true}}, []string{"b"}, nil)
	del := evt(t, changeevent.Delete, fooNS, int32(1), nil)
	ins := evt(t, changeevent.Insert, fooNS, int32(2), bson.D{{Key: "z", Value: int32(0)}})
	return []changeevent.Event{u1, rep, u2, del, ins}, []bson.Raw{
		raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(1)}}), // before u1: DR's version, not the lookup's
		raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(2)}}), // before the replace
		raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "b", Value: "x"}}),      // before u2
		nil, // the insert
	}
}

func befores(t *testing.T, recs []archive.Record) (ops []string, docs []bson.Raw) {
	t.Helper()
	for _, r := range recs {
		d, err := r.BeforeDocument()
		if err != nil {
			t.Fatal(err)
		}
		ops, docs = append(ops, r.Operation), append(docs, d)
	}
	return ops, docs
}

// TestHistoryLines: with the history on, every update, replace and insert has one line in a
// history/ object whose before is the version the event overwrote (event time: DR's version and
// the walk, never the looked-up document), exact; the delete keeps its one line in deletes/.
func TestHistoryLines(t *testing.T) {
	env := newEnv(t, Options{History: true})
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(1)}})
	evs, want := historyWorkload(t)
	sum, err := env.h.Handle(context.Background(), batchOf(t, evs...))
	if err != nil {
		t.Fatal(err)
	}
	hist := env.ar.historyLines(t)
	ops, got := befores(t, hist)
	if strings.Join(ops, ",") != "update,replace,update,insert" {
		t.Fatalf("history operations = %v", ops)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) || !hist[i].BeforeExact || hist[i].BeforeNote != "" {
			t.Errorf("line %d (%s): before %s exact %t %q, want %s", i, ops[i], got[i], hist[i].BeforeExact, hist[i].BeforeNote, want[i])
		}
	}
	for _, k := range env.ar.keys("docdbdr/history/") {
		if !strings.HasPrefix(k, "docdbdr/history/db=bar/coll=foo/dt=2022-07-19/") {
			t.Errorf("history object outside its layout: %s", k)
		}
	}
	dels := env.ar.lines(t)
	_, dbefore := befores(t, dels)
	if len(dels) != 1 || dels[0].Operation != "delete" ||
		!bytes.Equal(dbefore[0], raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "c", Value: true}})) {
		t.Errorf("delete archive = %+v", dels)
	}
	if sum.Archived != 5 || sum.HistoryLines != 4 {
		t.Errorf("archived %d, history lines %d; want 5 and 4", sum.Archived, sum.HistoryLines)
	}
	if since, ok := env.dr.history[fooNS]; !ok || !since.Equal(fixedNow) {
		t.Errorf("history marker of %s = %v (%t), want %v", fooNS, since, ok, fixedNow)
	}
}

// TestHistoryExactlyOnce: a redelivery, a crash after the claim (the PUT failed), and a
// redelivery to a Handler whose applied frontier was lost all leave one history line per event.
func TestHistoryExactlyOnce(t *testing.T) {
	env := newEnv(t, Options{History: true})
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(1)}})
	evs, want := historyWorkload(t)
	batch := batchOf(t, evs...)
	ctx := context.Background()

	env.ar.failPut = func(k string) error {
		if strings.Contains(k, "/history/") {
			return errBoom
		}
		return nil
	}
	if _, err := env.h.Handle(ctx, batch); err == nil {
		t.Fatal("a failed history PUT did not fail the batch")
	}
	env.ar.failPut = nil
	for range 2 {
		if _, err := env.h.Handle(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	clear(env.dr.frontiers) // as if the frontier was lost: the records are walked again
	h2, err := New(env.dr, env.ar, Options{History: true, ArchivePrefix: "docdbdr/", Logger: discardLogger(), Now: env.h.opts.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}

	hist := env.ar.historyLines(t)
	ids := map[string]int{}
	for _, r := range hist {
		ids[r.EventID]++
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s has %d history lines", id, n)
		}
	}
	_, got := befores(t, hist)
	if len(got) != len(want) {
		t.Fatalf("%d history lines, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("line %d: before %s, want %s", i, got[i], want[i])
		}
	}
}

// TestHistoryOff: the default archives no history, reads nothing for a replace, and removes the
// history markers (restore --as-of then refuses every time).
func TestHistoryOff(t *testing.T) {
	for _, on := range []bool{false, true} {
		env := newEnv(t, Options{History: on})
		env.dr.history[fooNS] = fixedNow.Add(-1)
		rep := evt(t, changeevent.Replace, fooNS, int32(1), bson.D{{Key: "b", Value: "x"}})
		if _, err := env.h.Handle(context.Background(), batchOf(t, rep)); err != nil {
			t.Fatal(err)
		}
		finds := 0
		for _, c := range env.dr.calls {
			if strings.HasPrefix(c, "find ") {
				finds++
			}
		}
		keys := env.ar.keys("docdbdr/history/")
		_, marked := env.dr.history[fooNS]
		switch {
		case !on && (len(keys) != 0 || finds != 0 || marked):
			t.Errorf("history off: %d history objects, %d reads, marker kept %t; want none", len(keys), finds, marked)
		case on && (len(keys) != 1 || finds != 1 || !marked):
			t.Errorf("history on: %d history objects, %d reads, marker %t; want 1, 1, true", len(keys), finds, marked)
		}
	}
}

// TestHistoryDeleteApplied: under delete=apply no delete line is written, so the delete's
// before-image goes into the history; under the archive policy it stays in deletes/ only.
func TestHistoryDeleteApplied(t *testing.T) {
	for _, tc := range []struct {
		policy       Policy
		history, del int
	}{
		{DefaultPolicy, 0, 1},
		{Policy{Delete: ActionApply, Drop: ActionArchive, Rename: ActionArchive, DropDatabase: ActionArchive}, 1, 0},
		{Policy{Delete: ActionApplyAndArchive, Drop: ActionArchive, Rename: ActionArchive, DropDatabase: ActionArchive}, 0, 1},
	} {
		env := newEnv(t, Options{History: true, Policy: &tc.policy})
		doc := raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(1)}})
		env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: int32(1)}})
		if _, err := env.h.Handle(context.Background(), batchOf(t, evt(t, changeevent.Delete, fooNS, int32(1), nil))); err != nil {
			t.Fatal(err)
		}
		hist, dels := env.ar.historyLines(t), env.ar.lines(t)
		if len(hist) != tc.history || len(dels) != tc.del {
			t.Errorf("delete=%s: %d history lines, %d delete lines; want %d, %d", tc.policy.Delete, len(hist), len(dels), tc.history, tc.del)
			continue
		}
		_, got := befores(t, slices.Concat(hist, dels))
		if !bytes.Equal(got[0], doc) {
			t.Errorf("delete=%s: before %s, want %s", tc.policy.Delete, got[0], doc)
		}
	}
}
