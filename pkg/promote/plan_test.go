package promote

import (
	"fmt"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

func idVal(t *testing.T, v int32) bson.RawValue {
	t.Helper()
	typ, b, err := bson.MarshalValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return bson.RawValue{Type: typ, Value: b}
}

func TestMakePlan(t *testing.T) {
	ts := func(i uint32) primitive.Timestamp { return primitive.Timestamp{T: 1700000000, I: i} }
	del := func(coll string, id int32, i uint32, revived bool) apply.LedgerEntry {
		return apply.LedgerEntry{EventID: fmt.Sprintf("del-%s-%d-%d", coll, id, i), DB: "shop", Coll: coll, Op: "delete",
			DocID: idVal(t, id), ClusterTime: ts(i), Revived: revived}
	}
	coll := func(op, c string, i uint32) apply.LedgerEntry {
		return apply.LedgerEntry{EventID: fmt.Sprintf("%s-%s-%d", op, c, i), DB: "shop", Coll: c, Op: op, ClusterTime: ts(i)}
	}
	rename := func(from, to string, i uint32) apply.LedgerEntry {
		e := coll("rename", from, i)
		e.To = changeevent.Namespace{DB: "shop", Coll: to}
		return e
	}
	heldDel := func(coll string, id int32, i uint32, held string, revived bool) apply.LedgerEntry {
		e := del(coll, id, i, revived)
		e.Held = changeevent.Namespace{DB: "shop_dr", Coll: held}
		return e
	}
	dropDB := apply.LedgerEntry{EventID: "dropdb", DB: "shop", Op: "dropDatabase", ClusterTime: ts(50)}
	tests := []struct {
		name    string
		entries []apply.LedgerEntry
		nsmap   string
		held    []string // "<DR ns>/<eventId>"
		gone    []string
		goneDBs []string
	}{
		{name: "a delete is held where it happened", entries: []apply.LedgerEntry{del("a", 1, 1, false)},
			held: []string{"shop.a/del-a-1-1"}},
		{name: "a revived delete is live", entries: []apply.LedgerEntry{del("a", 1, 1, true)}},
		{name: "the latest delete of an _id is the version held",
			entries: []apply.LedgerEntry{del("a", 1, 3, false), del("a", 1, 1, true)}, held: []string{"shop.a/del-a-1-3"}},
		{name: "a revival after the last delete", entries: []apply.LedgerEntry{del("a", 1, 1, true), del("a", 1, 3, true)}},
		{name: "a drop takes the collection's held versions aside",
			entries: []apply.LedgerEntry{del("a", 1, 1, false), coll("drop", "a", 2)}, gone: []string{"shop.a"}},
		{name: "a delete after the drop is in the recreated collection",
			entries: []apply.LedgerEntry{del("a", 1, 1, false), coll("drop", "a", 2), del("a", 2, 3, false)},
			held:    []string{"shop.a/del-a-2-3"}},
		{name: "a rename carries the source's held versions into the target",
			entries: []apply.LedgerEntry{del("a", 1, 1, false), rename("a", "b", 2)},
			held:    []string{"shop.b/del-a-1-1"}, gone: []string{"shop.a"}},
		{name: "a rename displaces the target's held versions",
			entries: []apply.LedgerEntry{del("b", 1, 1, false), rename("a", "b", 2)}, gone: []string{"shop.a"}},
		{name: "renamed twice", entries: []apply.LedgerEntry{del("a", 1, 1, false), rename("a", "b", 2), rename("b", "c", 3)},
			held: []string{"shop.c/del-a-1-1"}, gone: []string{"shop.a", "shop.b"}},
		{name: "dropDatabase", entries: []apply.LedgerEntry{del("a", 1, 1, false), del("b", 1, 2, false), dropDB},
			gone: []string{"shop.a", "shop.b"}, goneDBs: []string{"shop"}},
		{name: "a version history line is not an interception", entries: []apply.LedgerEntry{func() apply.LedgerEntry {
			e := del("a", 1, 1, false)
			e.History = true
			return e
		}()}},
		{name: "held: where apply says", entries: []apply.LedgerEntry{heldDel("a", 1, 1, "b", false)}, held: []string{"shop_dr.b/del-a-1-1"}},
		{name: "held in a side collection", entries: []apply.LedgerEntry{heldDel("a", 1, 1, "a.dropped.1700000000-2", false)}},
		{name: "held: the latest delete in the namespace wins",
			entries: []apply.LedgerEntry{heldDel("a", 1, 3, "b", true), heldDel("b", 1, 1, "b", false), heldDel("b", 2, 4, "b", false), heldDel("b", 2, 2, "b", true)},
			held:    []string{"shop_dr.b/del-b-2-4"}},
		{name: "the namespace map places the held versions", nsmap: "shop=shop_dr",
			entries: []apply.LedgerEntry{del("a", 1, 1, false), coll("drop", "b", 2)},
			held:    []string{"shop_dr.a/del-a-1-1"}, gone: []string{"shop_dr.b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := apply.ParseNamespaceMap(tc.nsmap)
			if err != nil {
				t.Fatal(err)
			}
			p := makePlan(tc.entries, m)
			var held, gone, dbs []string
			for _, d := range p.deletes {
				held = append(held, d.ns.String()+"/"+d.entry.EventID)
			}
			for _, g := range p.gone {
				gone = append(gone, g.ns.String())
			}
			for db := range p.goneDBs {
				dbs = append(dbs, db)
			}
			slices.Sort(dbs)
			if !slices.Equal(held, tc.held) || !slices.Equal(gone, tc.gone) || !slices.Equal(dbs, tc.goneDBs) {
				t.Errorf("held %v gone %v goneDBs %v\nwant held %v gone %v goneDBs %v", held, gone, dbs, tc.held, tc.gone, tc.goneDBs)
			}
			for _, e := range tc.entries {
				if e.Op != "delete" {
					if got := p.events[apply.SideSuffix(e.ClusterTime)]; got.EventID != e.EventID {
						t.Errorf("side suffix %s names %q, want %q", apply.SideSuffix(e.ClusterTime), got.EventID, e.EventID)
					}
				}
			}
		})
	}
}
