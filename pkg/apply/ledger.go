package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Exactly one archive line per intercepted event. The ledger (<DR_STATE_DB>.archived) holds one
// entry per event id, so:
//
//  1. lines whose event is in the ledger already are dropped: archived once;
//  2. the rest are grouped into objects and claimed with one unordered insert of pending
//     entries that carry the lines; an entry that already exists (a duplicate key) was claimed
//     by someone else, and its line leaves our object;
//  3. only then do the DR writes go out: a write that changes a before-image can no longer
//     lose it, as the line is durable in DR;
//  4. each object is written with a conditional PUT (If-None-Match: *): never an overwrite;
//  5. its entries are marked written and lose their lines.
//
// A crash between any two steps is repaired by the next delivery of the partition: recover
// writes every object whose entries are still pending, from the stored lines in order.

// line is one rendered archive line, complete before it is rendered.
type line struct {
	it      *item
	body    []byte
	docID   bson.RawValue // deletes: the document's _id
	missing bool          // before is null: DR had no version of the document
	inexact bool          // before could not be proven to be the version at the event
	history bool          // a version history line (ARCHIVE_HISTORY), in a history/ object
}

// object is an archive object claimed by this invocation: its key, and its lines in order with
// their event ids.
type object struct {
	key   string
	lines [][]byte
	ids   []string
}

// maxObjectBytes bounds the lines of one object (a new object is started beyond it).
const maxObjectBytes = 64 << 20

// claimLines drops the lines already archived, groups the rest into objects (one per primary
// namespace and partition, in batch order), and claims them in the ledger. It returns the
// objects to write.
func (b *batch) claimLines(ctx context.Context, lines []*line) ([]object, error) {
	var fresh []*line
	var ids []string
	for _, l := range lines {
		id := l.it.ev.EventID()
		if b.archived[id] {
			b.sum.AlreadyArchived++
			continue
		}
		b.archived[id] = true
		fresh = append(fresh, l)
		ids = append(ids, id)
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	known := map[string]bool{}
	for start := 0; start < len(ids); start += b.h.opts.MaxBulkOps {
		k, err := b.h.dr.Archived(ctx, ids[start:min(start+b.h.opts.MaxBulkOps, len(ids))])
		if err != nil {
			return nil, fmt.Errorf("read the archive ledger: %w", err)
		}
		maps.Copy(known, k)
	}

	type groupKey struct {
		ns        changeevent.Namespace
		topic     string
		partition int64
		history   bool
	}
	type group struct {
		key   string
		lines int
		bytes int
	}
	var entries []LedgerEntry
	var owners []*line
	groups := map[groupKey]*group{}
	now := b.h.opts.Now().UTC()
	for _, l := range fresh {
		ev := &l.it.ev
		if known[ev.EventID()] {
			b.sum.AlreadyArchived++
			continue
		}
		gk := groupKey{ns: ev.NS, topic: l.it.at.Topic, partition: l.it.at.Partition, history: l.history}
		g := groups[gk]
		if g == nil || g.bytes+len(l.body) > maxObjectBytes {
			// The object is named after its first line (and this invocation's claim id).
			key := b.h.layout.ArchiveObject(ev.NS, ev.ClusterTime, ev.EventID(), b.claim)
			if l.history {
				key = b.h.layout.HistoryObject(ev.NS, ev.ClusterTime, ev.EventID(), b.claim)
			}
			g = &group{key: key}
			groups[gk] = g
		}
		entries = append(entries, LedgerEntry{
			EventID: ev.EventID(), DB: ev.NS.DB, Coll: ev.NS.Coll, Op: string(ev.Operation), To: renameTarget(ev), DocID: l.docID, Held: held(l), History: l.history,
			ClusterTime: ev.ClusterTime, Object: g.key, Seq: g.lines, State: StatePending, Line: l.body,
			Topic: l.it.at.Topic, Partition: l.it.at.Partition, Offset: l.it.at.Offset, At: now,
		})
		g.lines++
		g.bytes += len(l.body)
		owners = append(owners, l)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	taken, err := b.h.dr.Claim(ctx, entries)
	if err != nil {
		return nil, fmt.Errorf("claim %d archive lines in the ledger: %w", len(entries), err)
	}
	byKey := map[string]*object{}
	var order []string
	for i := range entries {
		e, l := &entries[i], owners[i]
		if taken[e.EventID] {
			b.sum.AlreadyArchived++
			continue
		}
		obj := byKey[e.Object]
		if obj == nil {
			obj = &object{key: e.Object}
			byKey[e.Object] = obj
			order = append(order, e.Object)
		}
		obj.lines = append(obj.lines, l.body)
		obj.ids = append(obj.ids, e.EventID)
		b.countLine(l)
	}
	objs := make([]object, 0, len(order))
	for _, k := range order {
		objs = append(objs, *byKey[k])
	}
	return objs, nil
}

// held is where DR holds a delete's copy: the DR namespace of the document (a history line
// names no copy DR keeps).
func held(l *line) changeevent.Namespace {
	if l.docID.Type == 0 || l.history {
		return changeevent.Namespace{}
	}
	return l.it.ref.ns
}

// renameTarget is a rename's target, the zero namespace for any other event.
func renameTarget(ev *changeevent.Event) changeevent.Namespace {
	if ev.Operation == changeevent.Rename && ev.To != nil {
		return *ev.To
	}
	return changeevent.Namespace{}
}

// countLine counts a line this invocation archived.
func (b *batch) countLine(l *line) {
	b.sum.Archived++
	if l.history {
		b.sum.HistoryLines++
	}
	switch {
	case l.missing:
		b.sum.BeforeMissing++
		b.h.log.Warn(string(l.it.ev.Operation)+" archived without a before-image: DR had no version of the document",
			slog.String("namespace", l.it.ev.NS.String()), slog.String("record", l.it.coords()),
			slog.String("eventId", l.it.ev.EventID()), slog.Bool("history", l.history))
	case l.inexact:
		b.sum.BeforeInexact++
	}
}

// putObjects writes the objects (in parallel, conditional writes).
func (b *batch) putObjects(ctx context.Context, objs []object) error {
	puts := make([]func(context.Context) error, 0, len(objs))
	for _, o := range objs {
		puts = append(puts, func(ctx context.Context) error {
			body, err := archive.EncodeObject(o.lines)
			if err != nil {
				return err
			}
			if err := b.h.archive.Put(ctx, o.key, body); err != nil {
				return fmt.Errorf("write archive object: %w", err)
			}
			b.countPut()
			return nil
		})
	}
	return b.parallel(ctx, puts)
}

// written marks the objects' ledger entries written.
func (b *batch) written(ctx context.Context, objs []object) error {
	if len(objs) == 0 {
		return nil
	}
	var ids []string
	for _, o := range objs {
		ids = append(ids, o.ids...)
	}
	for start := 0; start < len(ids); start += b.h.opts.MaxBulkOps {
		if err := b.h.dr.Written(ctx, ids[start:min(start+b.h.opts.MaxBulkOps, len(ids))]); err != nil {
			return fmt.Errorf("mark %d archive objects written in the ledger: %w", len(objs), err)
		}
	}
	b.sum.ArchiveObjects += len(objs)
	return nil
}

// recover writes the objects whose ledger entries are still pending for the batch's partitions:
// the claims of an invocation that stopped before its objects were written or marked. Each is
// rebuilt from its stored lines in seq order, the bytes its claimer would have written, and
// written conditionally (an object that is there already is left as it is).
func (b *batch) recover(ctx context.Context, parts [][]events.KafkaRecord) error {
	for topic, ps := range topicPartitions(parts) {
		pending, err := b.readPending(ctx, topic, ps)
		if err != nil {
			return b.corrupt(fmt.Errorf("read pending archive lines of %s %v: %w", topic, ps, err))
		}
		if len(pending) == 0 {
			continue
		}
		sort.Slice(pending, func(i, j int) bool {
			if pending[i].Object != pending[j].Object {
				return pending[i].Object < pending[j].Object
			}
			return pending[i].Seq < pending[j].Seq
		})
		var objs []object
		for _, e := range pending {
			if len(objs) == 0 || objs[len(objs)-1].key != e.Object {
				objs = append(objs, object{key: e.Object})
			}
			objs[len(objs)-1].lines = append(objs[len(objs)-1].lines, e.Line)
			objs[len(objs)-1].ids = append(objs[len(objs)-1].ids, e.EventID)
		}
		if err := b.putObjects(ctx, objs); err != nil {
			return err
		}
		if err := b.written(ctx, objs); err != nil {
			return err
		}
		b.sum.RecoveredObjects += len(objs)
		b.h.log.Info("wrote archive objects left pending by an earlier invocation", slog.String("topic", topic),
			slog.Any("partitions", ps), slog.Int("objects", len(objs)), slog.Int("lines", len(pending)))
	}
	return nil
}

// corrupt counts an error about unreadable state (CorruptState) and returns it.
func (b *batch) corrupt(err error) error {
	if errors.Is(err, ErrCorruptState) {
		b.sum.CorruptState++
	}
	return err
}
