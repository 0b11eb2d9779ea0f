package verify

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// lineArchive is an archive of prepared lines.
type lineArchive []archive.Record

func (a lineArchive) Records(_ context.Context, db, _ string, _, _ time.Time, fn func(archive.Record) error) error {
	for _, r := range a {
		if r.DB == db {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestCheckArchive(t *testing.T) {
	ctx := context.Background()
	primary := newCluster(t)
	sc := scope.Scope{DB: "shop", Collections: []string{"orders"}}
	if err := docdb.EnableChangeStreams(ctx, primary, sc); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-2 * time.Second)
	coll := primary.Database("shop").Collection("orders")
	history, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer history.Close(ctx)
	var befores []bson.Raw
	for i := range 4 {
		doc := bson.D{{Key: "_id", Value: int32(i)}, {Key: "v", Value: i}}
		if _, err := coll.InsertOne(ctx, doc); err != nil {
			t.Fatal(err)
		}
		b, _ := bson.Marshal(doc)
		befores = append(befores, b)
	}
	for i := range 4 {
		if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: int32(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := primary.Database("shop").Collection("audit").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	var deletes []changeevent.Event
	for len(deletes) < 4 && history.Next(ctx) {
		ev, err := changeevent.FromChangeStream(history.Current)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Operation == changeevent.Delete {
			deletes = append(deletes, ev)
		}
	}
	line := func(i int, before bson.Raw, exact bool) archive.Record {
		t.Helper()
		r, err := archive.NewRecord(&deletes[i], archive.Kafka{Topic: "t", Offset: int64(i)}, before)
		if err != nil {
			t.Fatal(err)
		}
		r.BeforeExact = exact && before != nil
		return r
	}
	other := line(0, befores[0], true)
	other.Coll, other.EventID = "audit", "0000" // another collection of the database: not the scope's
	unknown := line(0, befores[0], true)
	unknown.EventID = "ffff"

	tests := []struct {
		name   string
		lines  lineArchive
		settle time.Duration
		want   ArchiveReport // the counts only
	}{
		{"each once, exact", lineArchive{line(0, befores[0], true), line(1, befores[1], true), line(2, befores[2], true), line(3, befores[3], true), other},
			time.Nanosecond, ArchiveReport{Events: 4, Lines: 4}},
		{"missing, duplicated, null, unknown", lineArchive{line(0, befores[0], true), line(2, befores[2], true), line(2, befores[2], true), line(3, nil, false), unknown},
			time.Nanosecond, ArchiveReport{Events: 4, Lines: 5, Missing: 1, Duplicated: 1, NullBefore: 1, Unknown: 1}},
		{"inexact", lineArchive{line(0, befores[0], false), line(1, befores[1], true), line(2, befores[2], true), line(3, befores[3], true)},
			time.Nanosecond, ArchiveReport{Events: 4, Lines: 4, Inexact: 1}},
		{"too recent to judge", lineArchive{line(0, befores[0], true)}, time.Hour, ArchiveReport{Events: 4, Lines: 1, InFlight: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := CheckArchive(ctx, ArchiveOptions{Primary: primary, Scope: sc, Archive: tc.lines, Since: since, Settle: tc.settle})
			if err != nil {
				t.Fatal(err)
			}
			got := ArchiveReport{Events: rep.Events, Lines: rep.Lines, Missing: rep.Missing, Duplicated: rep.Duplicated,
				NullBefore: rep.NullBefore, Inexact: rep.Inexact, InFlight: rep.InFlight, Unknown: rep.Unknown}
			if got.Events != tc.want.Events || got.Lines != tc.want.Lines || got.Missing != tc.want.Missing || got.Duplicated != tc.want.Duplicated ||
				got.NullBefore != tc.want.NullBefore || got.Inexact != tc.want.Inexact || got.InFlight != tc.want.InFlight || got.Unknown != tc.want.Unknown {
				t.Errorf("counts = %+v\nwant     %+v", got, tc.want)
			}
			problems := tc.want.Missing+tc.want.Duplicated+tc.want.NullBefore+tc.want.Inexact > 0
			if rep.HasProblems() != problems || len(rep.Problems) != tc.want.Missing+tc.want.Duplicated+tc.want.NullBefore+tc.want.Inexact {
				t.Errorf("HasProblems = %v with %d listed, want %v", rep.HasProblems(), len(rep.Problems), problems)
			}
			for _, p := range rep.Problems {
				if p.EventID == "" || p.NS != "shop.orders" || !slices.Contains([]string{"missing", "duplicated", "null before", "inexact before"}, p.Kind) {
					t.Errorf("problem %+v does not name its event", p)
				}
			}
		})
	}

	if _, err := CheckArchive(ctx, ArchiveOptions{Primary: primary, Scope: sc, Archive: lineArchive{}}); err == nil {
		t.Error("CheckArchive without a start time succeeded")
	}
}
