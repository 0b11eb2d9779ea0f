package promote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// The side database (Options.SideDB) holds, after promote:
//
//	deletes                 one document per intercepted delete whose version DR held:
//	                        {_id: <eventId>, db, coll (DR namespace it was in), docId,
//	                         clusterTime, archive: {object, seq}, doc: <the document, byte for byte>}
//	<db>.<coll>.dropped.<T>-<I>   each side collection apply made at a drop, rename or
//	                        dropDatabase, its documents copied byte for byte
//	collections             one document per such side collection: {_id: "<db>.<coll>",
//	                         db, coll, eventId, op, eventDB, eventColl, clusterTime,
//	                         archive: {object, seq}, documents}
//
// Every move is a copy (an upsert by _id: repeating it writes the same bytes) followed by the
// removal from the live database, so a run interrupted anywhere is finished by the next one.

// Side database collections.
const (
	SideDeletes     = "deletes"
	SideCollections = "collections"
)

// defaultChunk is how many documents a find or a bulk write of promote covers by default.
const defaultChunk = 1000

type mover struct {
	o Options
	r *Report
}

func (m *mover) side(coll string) *mongo.Collection {
	return m.o.DR.Database(m.o.SideDB).Collection(coll)
}

func (m *mover) live(ns changeevent.Namespace) *mongo.Collection {
	return m.o.DR.Database(ns.DB).Collection(ns.Coll)
}

// deletes moves the intercepted versions held in live collections into SideDeletes.
func (m *mover) deletes(ctx context.Context, p plan) error {
	m.r.Deletes.Intercepted = len(p.deletes)
	for start := 0; start < len(p.deletes); {
		// One namespace per chunk.
		end := start + 1
		for end < len(p.deletes) && end-start < m.o.Chunk && p.deletes[end].ns == p.deletes[start].ns {
			end++
		}
		if err := m.deleteChunk(ctx, p.deletes[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (m *mover) deleteChunk(ctx context.Context, items []intercepted) error {
	ns := items[0].ns
	ids := make(bson.A, len(items))
	for i, it := range items {
		ids[i] = it.entry.DocID
	}
	found := map[apply.IDKey]bson.Raw{}
	cur, err := m.live(ns).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return fmt.Errorf("read the intercepted documents of %s: %w", ns, err)
	}
	for cur.Next(ctx) {
		doc := bson.Raw(bytes.Clone(cur.Current))
		found[apply.KeyOf(doc.Lookup("_id"))] = doc
	}
	if err := errors.Join(cur.Err(), cur.Close(ctx)); err != nil {
		return fmt.Errorf("read the intercepted documents of %s: %w", ns, err)
	}
	var copies []mongo.WriteModel
	var moved bson.A
	var absent []string
	for _, it := range items {
		doc, ok := found[apply.KeyOf(it.entry.DocID)]
		if !ok {
			absent = append(absent, it.entry.EventID)
			continue
		}
		e := it.entry
		w := bson.D{{Key: "_id", Value: e.EventID}, {Key: "db", Value: ns.DB}, {Key: "coll", Value: ns.Coll},
			{Key: "docId", Value: e.DocID}, {Key: "clusterTime", Value: e.ClusterTime},
			{Key: "archive", Value: bson.D{{Key: "object", Value: e.Object}, {Key: "seq", Value: int32(e.Seq)}}},
			{Key: "doc", Value: doc}}
		copies = append(copies, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: e.EventID}}).
			SetReplacement(w).SetUpsert(true))
		moved = append(moved, e.DocID)
	}
	if len(absent) > 0 {
		n, err := m.side(SideDeletes).CountDocuments(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: absent}}}})
		if err != nil {
			return fmt.Errorf("read %s.%s: %w", m.o.SideDB, SideDeletes, err)
		}
		m.r.Deletes.AlreadyMoved += int(n)
		m.r.Deletes.NotInDR += len(absent) - int(n)
	}
	m.r.Deletes.Moved += len(moved)
	if !m.o.Apply || len(moved) == 0 {
		return nil
	}
	if _, err := m.side(SideDeletes).BulkWrite(ctx, copies, options.BulkWrite().SetOrdered(false)); err != nil {
		return fmt.Errorf("copy %d intercepted documents of %s into %s.%s: %w", len(copies), ns, m.o.SideDB, SideDeletes, err)
	}
	if _, err := m.live(ns).DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: moved}}}}); err != nil {
		return fmt.Errorf("remove %d intercepted documents from %s (they are in %s.%s already; run promote again): %w",
			len(moved), ns, m.o.SideDB, SideDeletes, err)
	}
	return nil
}

// liveDatabases are DR's databases other than the system ones, the state and the side
// database.
func (m *mover) liveDatabases(ctx context.Context) ([]string, error) {
	names, err := m.o.DR.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("list DR's databases: %w", err)
	}
	var out []string
	for _, n := range names {
		switch n {
		case "admin", "local", "config", m.o.StateDB, m.o.SideDB:
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// sideCollections moves every side collection apply made (<coll>.dropped.<T>-<I>) out of the
// live databases.
func (m *mover) sideCollections(ctx context.Context, p plan) error {
	// Side collections moved by an earlier run.
	n, err := m.side(SideCollections).CountDocuments(ctx, bson.D{{Key: "state", Value: "moved"}})
	if err != nil {
		return fmt.Errorf("read %s.%s: %w", m.o.SideDB, SideCollections, err)
	}
	m.r.AlreadyMovedCollections = int(n)
	dbs, err := m.liveDatabases(ctx)
	if err != nil {
		return err
	}
	for _, db := range dbs {
		colls, err := m.o.DR.Database(db).ListCollectionNames(ctx, bson.D{})
		if err != nil {
			return fmt.Errorf("list the collections of DR database %s: %w", db, err)
		}
		for _, c := range colls {
			if !apply.IsSideCollection(c) {
				continue
			}
			suffix := c[strings.LastIndex(c, ".dropped."):]
			e, ok := p.events[suffix]
			if !ok {
				return fmt.Errorf("side collection %s.%s has no collection event at %s in the ledger: promote does not guess its archive reference", db, c, suffix)
			}
			if err := m.sideCollection(ctx, changeevent.Namespace{DB: db, Coll: c}, e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *mover) sideCollection(ctx context.Context, ns changeevent.Namespace, e apply.LedgerEntry) error {
	target := m.side(ns.DB + "." + ns.Coll)
	cs := CollectionMove{From: ns.String(), To: m.o.SideDB + "." + ns.DB + "." + ns.Coll, EventID: e.EventID, Op: e.Op, Object: e.Object}
	catalog := func(state string, docs int) error {
		d := bson.D{{Key: "db", Value: ns.DB}, {Key: "coll", Value: ns.Coll}, {Key: "eventId", Value: e.EventID},
			{Key: "op", Value: e.Op}, {Key: "eventDB", Value: e.DB}, {Key: "eventColl", Value: e.Coll},
			{Key: "clusterTime", Value: e.ClusterTime},
			{Key: "archive", Value: bson.D{{Key: "object", Value: e.Object}, {Key: "seq", Value: int32(e.Seq)}}},
			{Key: "documents", Value: int64(docs)}, {Key: "state", Value: state}}
		_, err := m.side(SideCollections).ReplaceOne(ctx, bson.D{{Key: "_id", Value: ns.String()}}, d, options.Replace().SetUpsert(true))
		if err != nil {
			return fmt.Errorf("record side collection %s in %s.%s: %w", ns, m.o.SideDB, SideCollections, err)
		}
		return nil
	}
	cur, err := m.live(ns).Find(ctx, bson.D{}, options.Find().SetBatchSize(int32(m.o.Chunk)))
	if err != nil {
		return fmt.Errorf("read side collection %s: %w", ns, err)
	}
	defer cur.Close(ctx)
	if m.o.Apply {
		if err := catalog("copying", 0); err != nil {
			return err
		}
	}
	var batch []mongo.WriteModel
	flush := func() error {
		if len(batch) == 0 || !m.o.Apply {
			batch = batch[:0]
			return nil
		}
		if _, err := target.BulkWrite(ctx, batch, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("copy side collection %s into %s: %w", ns, cs.To, err)
		}
		batch = batch[:0]
		return nil
	}
	for cur.Next(ctx) {
		doc := bson.Raw(bytes.Clone(cur.Current))
		batch = append(batch, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: doc.Lookup("_id")}}).
			SetReplacement(doc).SetUpsert(true))
		cs.Documents++
		if len(batch) == m.o.Chunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("read side collection %s: %w", ns, err)
	}
	if err := flush(); err != nil {
		return err
	}
	m.r.Collections = append(m.r.Collections, cs)
	if !m.o.Apply {
		return nil
	}
	if err := catalog("moved", cs.Documents); err != nil {
		return err
	}
	if err := m.live(ns).Drop(ctx); err != nil {
		return fmt.Errorf("drop side collection %s (copied into %s already; run promote again): %w", ns, cs.To, err)
	}
	return nil
}

// goneCollections drops the live collections the primary no longer has (dropped or renamed
// away at their last collection event, or in a dropped database, with no intercepted delete
// after) once they are empty: apply moved their documents aside one by one and left the
// collection behind.
func (m *mover) goneCollections(ctx context.Context, p plan) error {
	candidates := map[changeevent.Namespace]bool{}
	for _, g := range p.gone {
		candidates[g.ns] = true
	}
	for db := range p.goneDBs {
		colls, err := m.o.DR.Database(db).ListCollectionNames(ctx, bson.D{})
		if err != nil {
			return fmt.Errorf("list the collections of DR database %s: %w", db, err)
		}
		for _, c := range colls {
			ns := changeevent.Namespace{DB: db, Coll: c}
			if !p.present[ns] && !apply.IsSideCollection(c) && !strings.HasPrefix(c, "system.") {
				candidates[ns] = true
			}
		}
	}
	for ns := range candidates {
		colls, err := m.o.DR.Database(ns.DB).ListCollectionNames(ctx, bson.D{{Key: "name", Value: ns.Coll}})
		if err != nil {
			return fmt.Errorf("list the collections of DR database %s: %w", ns.DB, err)
		}
		if len(colls) == 0 {
			continue
		}
		n, err := m.live(ns).CountDocuments(ctx, bson.D{})
		if err != nil {
			return fmt.Errorf("count %s: %w", ns, err)
		}
		if n > 0 {
			continue // recreated in the primary: live
		}
		m.r.DroppedEmpty = append(m.r.DroppedEmpty, ns.String())
		if m.o.Apply {
			if err := m.live(ns).Drop(ctx); err != nil {
				return fmt.Errorf("drop the empty collection %s: %w", ns, err)
			}
		}
	}
	return nil
}
