package promote

import (
	"sort"

	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// The plan is computed from apply's ledger alone (<DR_STATE_DB>.archived), which holds one
// entry per intercepted event with its namespace, _id, cluster time and archive object. A
// delete's entry also says where DR holds its copy now (held: apply moves it along when a
// barrier moves the copy) and whether the primary inserted the _id again there (revived). The
// version DR holds of a document in a namespace is that of the latest delete held there; it is
// intercepted unless that delete is revived, and live unless the namespace is a side collection.
//
// Entries written before apply recorded held are placed by replaying the entries in cluster
// time order, which also tells which namespaces the primary no longer has:
//
//   - delete of x in c, not revived: DR's copy of x in c is the version at the delete (it
//     replaces an earlier held version of x: DR's copy was overwritten by the re-insert that
//     came between);
//   - delete of x in c, revived: the primary inserted x again, DR's copy is live;
//   - drop of c: every held version of c went into the side collection c.dropped.<T>-<I> with
//     the rest of c (apply moved the collection aside at the barrier);
//   - rename a -> b: b's held versions went into b.dropped.<T>-<I> (the displaced target), a's
//     moved with a's documents into b;
//   - dropDatabase of d: the drop rule for every collection of d.
//
// What is held at the end is the set of intercepted versions in the live collections.

// intercepted is one intercepted version held in a live DR collection.
type intercepted struct {
	ns    changeevent.Namespace // the DR namespace holding it now
	entry apply.LedgerEntry     // its delete's ledger entry (namespace where it was deleted)
}

// gone is a namespace that the last collection event touching it removed from the primary
// (dropped, renamed away, its database dropped), with that event's cluster time.
type gone struct {
	ns changeevent.Namespace // DR namespace
	at primitive.Timestamp
}

// plan is what promote has to do.
type plan struct {
	deletes []intercepted
	// events maps a side-collection suffix (".dropped.<T>-<I>") to the ledger entry of the
	// collection event that made it: the archive reference of the side collections.
	events map[string]apply.LedgerEntry
	// gone are the namespaces removed from the primary at the last collection event on them,
	// with no intercepted delete after it: if DR's collection is empty after promote, the
	// primary has no such collection and it is dropped.
	gone []gone
	// goneDBs are the DR databases whose primary database was dropped at their last
	// dropDatabase, and present the DR namespaces known to exist in the primary after it (an
	// intercepted delete came later): an empty collection of a gone database that is not
	// present is dropped too.
	goneDBs map[string]primitive.Timestamp
	present map[changeevent.Namespace]bool
}

// makePlan replays the ledger entries.
func makePlan(entries []apply.LedgerEntry, m apply.NamespaceMap) plan {
	sorted := append([]apply.LedgerEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].ClusterTime, sorted[j].ClusterTime
		if a != b {
			return b.After(a)
		}
		return sorted[i].EventID < sorted[j].EventID
	})
	held := map[changeevent.Namespace]map[apply.IDKey]apply.LedgerEntry{}
	fate := map[changeevent.Namespace]*primitive.Timestamp{} // nil: present again
	events := map[string]apply.LedgerEntry{}
	goneDBs := map[string]primitive.Timestamp{}
	dropDB := func(db string, at primitive.Timestamp) {
		goneDBs[db] = at
		for ns := range held {
			if ns.DB == db {
				delete(held, ns)
			}
		}
		for ns := range fate {
			if ns.DB == db {
				fate[ns] = &at
			}
		}
	}
	type heldKey struct {
		ns  changeevent.Namespace
		key apply.IDKey
	}
	latest := map[heldKey]apply.LedgerEntry{} // entries with held: the latest per namespace and _id
	for _, e := range sorted {
		if e.History {
			continue // a version history line (ARCHIVE_HISTORY): not an interception
		}
		ns := changeevent.Namespace{DB: e.DB, Coll: e.Coll}
		switch changeevent.OperationType(e.Op) {
		case changeevent.Delete:
			fate[ns] = nil
			if e.Held.DB != "" {
				latest[heldKey{ns: e.Held, key: apply.KeyOf(e.DocID)}] = e // sorted: later ones win
				continue
			}
			if e.Revived {
				delete(held[ns], apply.KeyOf(e.DocID))
				continue
			}
			if held[ns] == nil {
				held[ns] = map[apply.IDKey]apply.LedgerEntry{}
			}
			held[ns][apply.KeyOf(e.DocID)] = e
		case changeevent.Drop:
			events[apply.SideSuffix(e.ClusterTime)] = e
			delete(held, ns)
			at := e.ClusterTime
			fate[ns] = &at
		case changeevent.Rename:
			events[apply.SideSuffix(e.ClusterTime)] = e
			delete(held, e.To)
			if h := held[ns]; h != nil {
				held[e.To] = h
			}
			delete(held, ns)
			at := e.ClusterTime
			fate[ns] = &at
			fate[e.To] = nil
		case changeevent.DropDatabase:
			events[apply.SideSuffix(e.ClusterTime)] = e
			dropDB(e.DB, e.ClusterTime)
		}
	}
	p := plan{events: events, goneDBs: map[string]primitive.Timestamp{}, present: map[changeevent.Namespace]bool{}}
	for db, at := range goneDBs {
		p.goneDBs[m.Map(changeevent.Namespace{DB: db}).DB] = at
	}
	nss := make([]changeevent.Namespace, 0, len(held))
	for ns := range held {
		nss = append(nss, ns)
	}
	sort.Slice(nss, func(i, j int) bool { return nss[i].String() < nss[j].String() })
	for k, e := range latest {
		if e.Revived || apply.IsSideCollection(k.ns.Coll) {
			continue
		}
		p.deletes = append(p.deletes, intercepted{ns: k.ns, entry: e})
	}
	for _, ns := range nss {
		keys := make([]apply.IDKey, 0, len(held[ns]))
		for k := range held[ns] {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		for _, k := range keys {
			p.deletes = append(p.deletes, intercepted{ns: m.Map(ns), entry: held[ns][k]})
		}
	}
	sort.SliceStable(p.deletes, func(i, j int) bool {
		a, b := p.deletes[i], p.deletes[j]
		if a.ns != b.ns {
			return a.ns.String() < b.ns.String()
		}
		return apply.KeyOf(a.entry.DocID) < apply.KeyOf(b.entry.DocID)
	})
	for ns, at := range fate {
		switch {
		case at == nil:
			p.present[m.Map(ns)] = true
		case ns.Coll != "":
			p.gone = append(p.gone, gone{ns: m.Map(ns), at: *at})
		}
	}
	sort.Slice(p.gone, func(i, j int) bool { return p.gone[i].ns.String() < p.gone[j].ns.String() })
	return p
}
