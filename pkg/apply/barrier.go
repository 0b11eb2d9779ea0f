package apply

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Collection events (drop, rename, dropDatabase) are barriers. Capture publishes a copy of each
// to every partition of the topic, with the number of partitions N in a header, so that every
// partition meets the event at its place among its own document changes. On reaching the copy in
// partition p, apply has finished everything before it (the earlier segments), then performs p's
// share of the event: it moves, or under an "apply" policy deletes, the DR documents that p owns
// (changeevent.Partition of the document's key with N is p), and records the share as done in a
// marker, <DR_STATE_DB>.barriers {_id: <eventId>/<p>}. Only then do p's later events go on. No
// partition waits for another: each moves only what it owns.
//
// What the event removed from the live namespace is kept, under the archive policy, in a side
// collection of the same database (DocumentDB renames only within a database), named after the
// event's cluster time:
//
//	drop of c                 c.dropped.<T>-<I>
//	rename a -> b             b.dropped.<T>-<I> (the displaced target; a's documents move to b)
//	dropDatabase of d         every collection c of d becomes c.dropped.<T>-<I>
//
// and the event's one archive line names it (preservedAs). With N = 1 (a single-partition
// topic, or a capture that publishes no barrier header) one partition owns every document, and
// whole collections are renamed instead of moved document by document.

// sideSuffix is the name suffix of the side collections of a collection event.
func sideSuffix(ts primitive.Timestamp) string { return fmt.Sprintf(".dropped.%d-%d", ts.T, ts.I) }

// sideCollection matches the names sideSuffix makes: a dropDatabase leaves them where they are.
var sideCollection = regexp.MustCompile(`\.dropped\.[0-9]+-[0-9]+$`)

// SideSuffix is the suffix apply gives the side collections of the collection event at cluster
// time ts (".dropped.<T>-<I>").
func SideSuffix(ts primitive.Timestamp) string { return sideSuffix(ts) }

// IsSideCollection reports whether a collection name is one of those side collections.
func IsSideCollection(coll string) bool { return sideCollection.MatchString(coll) }

// barrier handles one copy of a collection event.
func (b *batch) barrier(ctx context.Context, it *item) error {
	ev := &it.ev
	act := b.h.policy.For(ev.Operation)
	id := ev.EventID() + "/" + strconv.FormatInt(it.at.Partition, 10)
	state, err := b.h.dr.Barrier(ctx, id)
	if err != nil {
		return b.corrupt(fmt.Errorf("read barrier marker %s: %w", id, err))
	}
	preserved, err := b.share(ctx, it, id, state, !act.Apply)
	if err != nil {
		return fmt.Errorf("%s of %s at %s: %w", ev.Operation, ev.NS, it.coords(), err)
	}
	if act.Archive {
		if err := b.archiveCollectionEvent(ctx, it, preserved); err != nil {
			return err
		}
	}
	if err := b.putDeadLetters(ctx); err != nil {
		return err
	}
	return b.advance(ctx, []*item{it}, false)
}

// archiveCollectionEvent archives a collection event's one line, in an object of its own.
func (b *batch) archiveCollectionEvent(ctx context.Context, it *item, preserved *archive.Preserved) error {
	rec, err := archive.NewRecord(&it.ev, it.at, nil)
	if err != nil {
		return err
	}
	rec.PreservedAs = preserved
	body, err := rec.MarshalLine()
	if err != nil {
		return err
	}
	objs, err := b.claimLines(ctx, []*line{{it: it, body: body}})
	if err != nil {
		return err
	}
	if err := b.putObjects(ctx, objs); err != nil {
		return err
	}
	return b.written(ctx, objs)
}

// share performs partition p's share of a collection event unless its marker says it is done,
// and returns where DR keeps what the event removed (nil when keep is false: the "apply" policy
// deletes it).
func (b *batch) share(ctx context.Context, it *item, id, state string, keep bool) (*archive.Preserved, error) {
	ev := &it.ev
	nsmap := b.h.opts.NamespaceMap
	suffix := sideSuffix(ev.ClusterTime)
	marker := BarrierMarker{ID: id, Op: string(ev.Operation), Partitions: it.partitions}
	var preserved *archive.Preserved
	var do []func() error
	switch ev.Operation {
	case changeevent.Drop:
		from := nsmap.Map(ev.NS)
		side := changeevent.Namespace{DB: from.DB, Coll: from.Coll + suffix}
		marker.NS, preserved = from, &archive.Preserved{DB: side.DB, Coll: side.Coll}
		do = append(do, func() error { return b.removeShare(ctx, it, from, side, ev.NS.DB, keep) })
	case changeevent.Rename:
		from, to := nsmap.Map(ev.NS), nsmap.Map(*ev.To)
		side := changeevent.Namespace{DB: to.DB, Coll: to.Coll + suffix}
		marker.NS, preserved = from, &archive.Preserved{DB: side.DB, Coll: side.Coll}
		if state == "" {
			do = append(do, func() error {
				if err := b.removeShare(ctx, it, to, side, ev.To.DB, keep); err != nil {
					return err
				}
				m := marker
				m.State, m.At = BarrierTargetMoved, b.h.opts.Now().UTC()
				return b.h.dr.SetBarrier(ctx, m)
			})
		}
		do = append(do, func() error { return b.moveShare(ctx, it, from, to, ev.NS.DB) })
	case changeevent.DropDatabase:
		drDB := nsmap.Map(changeevent.Namespace{DB: ev.NS.DB}).DB
		marker.NS, preserved = changeevent.Namespace{DB: drDB}, &archive.Preserved{DB: drDB, Suffix: suffix}
		do = append(do, func() error { return b.dropDatabaseShare(ctx, it, suffix, keep) })
	default:
		return nil, fmt.Errorf("%s is not a collection event", ev.Operation)
	}
	if !keep {
		preserved = nil
	}
	if state == BarrierDone {
		return preserved, nil
	}
	for _, f := range do {
		if err := f(); err != nil {
			return nil, err
		}
	}
	marker.State, marker.At = BarrierDone, b.h.opts.Now().UTC()
	if err := b.h.dr.SetBarrier(ctx, marker); err != nil {
		return nil, fmt.Errorf("write barrier marker %s: %w", id, err)
	}
	b.sum.Barriers++
	b.sum.Applied++
	return preserved, nil
}

// dropDatabaseShare removes p's share of every collection of the database (but the side
// collections of earlier events and system collections).
func (b *batch) dropDatabaseShare(ctx context.Context, it *item, suffix string, keep bool) error {
	list := func(db string) ([]string, error) {
		if db == b.h.dr.StateDB() {
			return nil, nil
		}
		colls, err := b.h.dr.Collections(ctx, db)
		if err != nil {
			return nil, fmt.Errorf("list the collections of %s: %w", db, err)
		}
		out := colls[:0]
		for _, c := range colls {
			if !strings.HasPrefix(c, "system.") && !sideCollection.MatchString(c) {
				out = append(out, c)
			}
		}
		return out, nil
	}
	colls, err := b.h.opts.NamespaceMap.DatabaseCollections(it.ev.NS.DB, list)
	if err != nil {
		return err
	}
	nss := make([]changeevent.Namespace, 0, len(colls))
	for ns := range colls {
		nss = append(nss, ns)
	}
	sort.Slice(nss, func(i, j int) bool { return nss[i].String() < nss[j].String() })
	for _, ns := range nss {
		side := changeevent.Namespace{DB: ns.DB, Coll: ns.Coll + suffix}
		if err := b.removeShare(ctx, it, ns, side, it.ev.NS.DB, keep); err != nil {
			return err
		}
	}
	return nil
}

// removeShare takes p's documents out of ns: into side when keep, else deleted.
func (b *batch) removeShare(ctx context.Context, it *item, ns, side changeevent.Namespace, primaryDB string, keep bool) error {
	// The ledger's delete entries held in ns leave it with the documents (to the side name even
	// when nothing is kept: DR no longer holds them in a live collection).
	if it.partitions == 1 {
		var err error
		if keep {
			err = b.h.dr.Rename(ctx, ns, side) // a source that is gone was moved by an earlier delivery
		} else {
			err = b.h.dr.Drop(ctx, ns)
		}
		if err != nil {
			return err
		}
		return b.moveHeld(ctx, ns, side, nil)
	}
	return b.eachOwned(ctx, it, ns, primaryDB, func(ids []bson.RawValue) error {
		if keep {
			if err := b.copyDocs(ctx, ns, side, ids); err != nil {
				return err
			}
		}
		if err := b.moveHeld(ctx, ns, side, ids); err != nil {
			return err
		}
		return b.deleteDocs(ctx, ns, ids)
	})
}

// moveShare moves p's documents of from into to (a rename's source).
func (b *batch) moveShare(ctx context.Context, it *item, from, to changeevent.Namespace, primaryDB string) error {
	if it.partitions == 1 {
		err := b.h.dr.Rename(ctx, from, to)
		if err == nil {
			return b.moveHeld(ctx, from, to, nil)
		}
		if !errors.Is(err, ErrNamespaceExists) {
			return err
		}
		// The target exists again (with a capture that publishes no barrier header, documents of
		// other partitions may have been written to it): move the documents instead.
	}
	return b.eachOwned(ctx, it, from, primaryDB, func(ids []bson.RawValue) error {
		if err := b.copyDocs(ctx, from, to, ids); err != nil {
			return err
		}
		if err := b.moveHeld(ctx, from, to, ids); err != nil {
			return err
		}
		return b.deleteDocs(ctx, from, ids)
	})
}

// moveHeld moves the ledger's delete entries along with DR's copies (ids nil: the whole
// collection), after the copy and before the delete, so that a share interrupted in between and
// done again by the redelivery still moves them.
func (b *batch) moveHeld(ctx context.Context, from, to changeevent.Namespace, ids []bson.RawValue) error {
	if !b.h.policy.For(changeevent.Delete).Archive {
		return nil // no delete has a ledger entry
	}
	if err := b.h.dr.MoveHeld(ctx, from, to, ids); err != nil {
		return fmt.Errorf("move the ledger's delete entries held in %s to %s: %w", from, to, err)
	}
	return nil
}

// eachOwned calls fn with the _ids of the documents of ns that partition p owns, a batch at a
// time: the partition of the key "<primaryDB>|<_id>" among N is p.
func (b *batch) eachOwned(ctx context.Context, it *item, ns changeevent.Namespace, primaryDB string, fn func([]bson.RawValue) error) error {
	n, p := int32(it.partitions), int32(it.at.Partition)
	return b.h.dr.ScanIDs(ctx, ns, func(ids []bson.RawValue) error {
		var owned []bson.RawValue
		for _, id := range ids {
			key, err := changeevent.Key(&changeevent.Event{Operation: changeevent.Delete, NS: changeevent.Namespace{DB: primaryDB},
				DocumentKey: bson.Raw(bsoncore.NewDocumentBuilder().AppendValue("_id", bsoncore.Value{Type: id.Type, Data: id.Value}).Build())})
			if err != nil {
				return err
			}
			if n == 1 || changeevent.Partition(key, n) == p {
				owned = append(owned, id)
			}
		}
		if len(owned) == 0 {
			return nil
		}
		return fn(owned)
	})
}

// copyDocs writes the documents with the given _ids of from into to, byte for byte.
func (b *batch) copyDocs(ctx context.Context, from, to changeevent.Namespace, ids []bson.RawValue) error {
	docs, err := b.h.dr.FindByIDs(ctx, from, ids)
	if err != nil {
		return fmt.Errorf("read %d documents of %s: %w", len(ids), from, err)
	}
	var writes []Write
	for _, id := range ids {
		if d := docs[KeyOf(id)]; d != nil {
			writes = append(writes, replaceWrites(id, d)...)
		}
	}
	if _, err := b.h.dr.BulkWrite(ctx, to, writes); err != nil {
		return fmt.Errorf("copy %d documents from %s to %s: %w", len(docs), from, to, err)
	}
	b.sum.MovedDocuments += len(docs)
	return nil
}

func (b *batch) deleteDocs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) error {
	writes := make([]Write, len(ids))
	for i, id := range ids {
		writes[i] = Write{Kind: DeleteOne, ID: id}
	}
	if _, err := b.h.dr.BulkWrite(ctx, ns, writes); err != nil {
		return fmt.Errorf("delete %d documents of %s: %w", len(ids), ns, err)
	}
	return nil
}
