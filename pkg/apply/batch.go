package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// batch is the state of one invocation. Records are taken one at a time, partition after
// partition, and turned into pending work per DR namespace (a queue): writes to apply in order,
// and before-image reads for intercepted deletes. Pending work is executed in bulk, and only as
// late as the order of each document's changes allows:
//
//   - a read of document X comes after every earlier write of X: when a delete of X arrives while
//     a write of X is pending, the queue is flushed first;
//   - a write of X comes after the read for an earlier delete of X: a flush executes the pending
//     reads before the pending writes;
//   - and the archive holds that read before the write of X is applied, so that a redelivery,
//     which would read X as written, cannot replace the archived before-image (see persist).
type batch struct {
	h      *Handler
	sum    Summary
	oldest time.Time // earliest cluster time in the batch

	queues     []*queue // in order of first use, so that execution order is deterministic
	queueByNS  map[changeevent.Namespace]*queue
	objects    []*archiveObject
	objectByID map[objectID]*archiveObject
	dead       []deadLetterPut
	// unarchived is set while some before-image has been read but not yet written to the archive.
	unarchived bool
	putMu      sync.Mutex // guards sum.ArchivePuts, counted by parallel puts
}

// queue is the pending work on one DR namespace.
type queue struct {
	ns         changeevent.Namespace
	reads      []pendingRead
	writes     []Write
	writeAt    []archive.Kafka // Kafka coordinates of each write, for logs
	writeIDs   map[IDKey]struct{}
	writeBytes int
	// unarchived holds the _ids whose before-image was read in this batch but is not yet in the
	// archive: a write of one of them waits until the archive holds the image.
	unarchived map[IDKey]struct{}
}

// pendingRead asks for the DR document with _id id as the before-image of an archive line.
type pendingRead struct {
	id   bson.RawValue
	key  IDKey
	line *archiveLine
}

// objectID names one delete archive object: a primary namespace in one partition.
type objectID struct {
	db, coll  string
	topic     string
	partition int64
}

// archiveObject is one delete archive object being built.
type archiveObject struct {
	key   string
	lines []*archiveLine
	dirty bool // lines were added since it was last written
	// existing holds the lines of an object already at key (written by an earlier delivery of
	// this batch), by offset; loaded says whether it was read yet.
	loaded   bool
	existing map[int64][]byte
}

// archiveLine is one intercepted event; before is filled in when its read is executed.
type archiveLine struct {
	ev       changeevent.Event
	at       archive.Kafka
	before   bson.Raw
	rendered []byte
}

type deadLetterPut struct {
	key  string
	body []byte
}

func newBatch(h *Handler) *batch {
	return &batch{
		h:          h,
		sum:        Summary{ByOp: map[string]int{}},
		queueByNS:  map[changeevent.Namespace]*queue{},
		objectByID: map[objectID]*archiveObject{},
	}
}

// run takes every record, then executes what is still pending and writes the archive.
func (b *batch) run(ctx context.Context, partitions [][]events.KafkaRecord) error {
	for _, recs := range partitions {
		for i := range recs {
			r := &recs[i]
			b.sum.Records++
			ev, err := b.h.decode(ctx, r)
			if err == nil {
				err = b.add(ctx, r, &ev)
			}
			var p *poison
			if errors.As(err, &p) {
				if err := b.addDeadLetter(r, p.reason); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("%s-%d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
			}
		}
	}
	return b.finish(ctx)
}

// add takes one decoded event.
func (b *batch) add(ctx context.Context, r *events.KafkaRecord, ev *changeevent.Event) error {
	at := archive.Kafka{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	op := ev.Operation
	var writes []Write
	if op == changeevent.Insert || op == changeevent.Replace || op == changeevent.Update {
		var err error
		if writes, err = documentWrites(ev); err != nil {
			return poisoned("%v", err)
		}
	}
	b.sum.ByOp[string(op)]++
	if t := changeevent.Time(ev.ClusterTime); b.oldest.IsZero() || t.Before(b.oldest) {
		b.oldest = t
	}

	switch op {
	case changeevent.Insert, changeevent.Replace, changeevent.Update:
		q := b.queue(b.h.opts.NamespaceMap.Map(ev.NS))
		for _, w := range writes {
			if err := b.write(ctx, q, w, at); err != nil {
				return err
			}
		}
	case changeevent.Delete:
		id, err := ev.ID()
		if err != nil {
			return poisoned("%v", err)
		}
		q := b.queue(b.h.opts.NamespaceMap.Map(ev.NS))
		act := b.h.policy.Delete
		if act.Archive {
			if err := b.read(ctx, q, id, b.archiveLine(ev, at)); err != nil {
				return err
			}
		}
		if act.Apply {
			return b.write(ctx, q, Write{Kind: DeleteOne, ID: id}, at)
		}
	case changeevent.Drop, changeevent.Rename, changeevent.DropDatabase:
		act := b.h.policy.For(op)
		if act.Archive {
			b.archiveLine(ev, at)
		}
		if act.Apply {
			return b.command(ctx, ev)
		}
	}
	return nil
}

func (b *batch) queue(ns changeevent.Namespace) *queue {
	q := b.queueByNS[ns]
	if q == nil {
		q = &queue{ns: ns, writeIDs: map[IDKey]struct{}{}, unarchived: map[IDKey]struct{}{}}
		b.queueByNS[ns] = q
		b.queues = append(b.queues, q)
	}
	return q
}

// archiveLine adds an intercepted event to its archive object.
func (b *batch) archiveLine(ev *changeevent.Event, at archive.Kafka) *archiveLine {
	id := objectID{db: ev.NS.DB, coll: ev.NS.Coll, topic: at.Topic, partition: at.Partition}
	obj := b.objectByID[id]
	if obj == nil {
		key := b.h.layout.DeleteObject(ev.NS.DB, ev.NS.Coll, changeevent.Time(ev.ClusterTime), at.Topic, at.Partition, at.Offset)
		obj = &archiveObject{key: key}
		b.objectByID[id] = obj
		b.objects = append(b.objects, obj)
	}
	line := &archiveLine{ev: *ev, at: at}
	obj.lines = append(obj.lines, line)
	obj.dirty = true
	b.sum.Archived++
	return line
}

func (b *batch) addDeadLetter(r *events.KafkaRecord, reason string) error {
	body, err := deadLetter(r, reason).Marshal()
	if err != nil {
		return err
	}
	b.sum.DeadLettered++
	b.sum.ByOp["poison"]++
	b.dead = append(b.dead, deadLetterPut{key: b.h.layout.DeadLetter(r.Timestamp.Time, r.Topic, r.Partition, r.Offset), body: body})
	b.h.log.Warn("dead-lettering record", slog.String("topic", r.Topic), slog.Int64("partition", r.Partition),
		slog.Int64("offset", r.Offset), slog.String("reason", reason))
	return nil
}

// read queues the before-image read of document id for line.
func (b *batch) read(ctx context.Context, q *queue, id bson.RawValue, line *archiveLine) error {
	key := KeyOf(id)
	if _, pending := q.writeIDs[key]; pending {
		// The delete must see the pending write of the same document.
		if err := b.flush(ctx, q); err != nil {
			return err
		}
	}
	q.reads = append(q.reads, pendingRead{id: id, key: key, line: line})
	if len(q.reads) >= b.h.opts.MaxBulkOps {
		return b.resolve(ctx, q)
	}
	return nil
}

// write queues one DR write, flushing first when the bulk is full.
func (b *batch) write(ctx context.Context, q *queue, w Write, at archive.Kafka) error {
	if len(q.writes) > 0 && (len(q.writes) >= b.h.opts.MaxBulkOps || q.writeBytes+w.size() > b.h.opts.MaxBulkBytes) {
		if err := b.flush(ctx, q); err != nil {
			return err
		}
	}
	q.writes = append(q.writes, w)
	q.writeAt = append(q.writeAt, at)
	q.writeIDs[KeyOf(w.ID)] = struct{}{}
	q.writeBytes += w.size()
	return nil
}

// resolve executes a queue's pending before-image reads. Reading now is always in order: a write
// of the same document that is still pending was queued after the delete (see read).
func (b *batch) resolve(ctx context.Context, q *queue) error {
	if len(q.reads) == 0 {
		return nil
	}
	ids := make([]bson.RawValue, 0, len(q.reads))
	seen := make(map[IDKey]bool, len(q.reads))
	for _, r := range q.reads {
		if !seen[r.key] {
			seen[r.key] = true
			ids = append(ids, r.id)
		}
	}
	found := make(map[IDKey]bson.Raw, len(ids))
	for start := 0; start < len(ids); start += b.h.opts.MaxBulkOps {
		chunk := ids[start:min(start+b.h.opts.MaxBulkOps, len(ids))]
		docs, err := b.h.dr.FindByIDs(ctx, q.ns, chunk)
		if err != nil {
			return fmt.Errorf("read before-images of %d documents in %s: %w", len(chunk), q.ns, err)
		}
		for k, d := range docs {
			found[k] = d
		}
	}
	for _, r := range q.reads {
		r.line.before = found[r.key]
		q.unarchived[r.key] = struct{}{}
	}
	b.unarchived = true
	q.reads = q.reads[:0]
	return nil
}

// flush executes a queue's pending reads, then its pending writes as one ordered bulk write.
func (b *batch) flush(ctx context.Context, q *queue) error {
	if err := b.resolve(ctx, q); err != nil {
		return err
	}
	if len(q.writes) == 0 {
		return nil
	}
	if overlaps(q.writeIDs, q.unarchived) {
		if err := b.persist(ctx); err != nil {
			return err
		}
	}
	res, err := b.h.dr.BulkWrite(ctx, q.ns, q.writes)
	if err != nil {
		return fmt.Errorf("bulk write of %d operations to %s: %w", len(q.writes), q.ns, err)
	}
	b.sum.Applied += len(q.writes)
	b.countMissing(q, res)

	q.writes, q.writeAt = q.writes[:0], q.writeAt[:0]
	clear(q.writeIDs)
	q.writeBytes = 0
	return nil
}

// countMissing finds update operations that matched no document. A bulk result has only totals:
// every ReplaceOne either matched or upserted, so what the UpdateOnes matched is the rest.
func (b *batch) countMissing(q *queue, res BulkResult) {
	var replaces, updates int64
	var at []string
	for i, w := range q.writes {
		switch w.Kind {
		case ReplaceOne:
			replaces++
		case UpdateOne:
			updates++
			if len(at) < 20 {
				at = append(at, fmt.Sprintf("%s-%d@%d", q.writeAt[i].Topic, q.writeAt[i].Partition, q.writeAt[i].Offset))
			}
		}
	}
	missing := updates - (res.Matched + res.Upserted - replaces)
	if updates == 0 || missing <= 0 {
		return
	}
	b.sum.MissingDocumentUpdates += int(missing)
	b.h.log.Warn("updates matched no document in DR", slog.String("namespace", q.ns.String()),
		slog.Int64("missing", missing), slog.Int64("updates", updates), slog.Any("updateRecords", at))
}

// command applies a drop, rename or dropDatabase to DR. Everything pending is executed first, and
// every before-image read so far is archived, as the command may remove those documents.
func (b *batch) command(ctx context.Context, ev *changeevent.Event) error {
	for _, q := range b.queues {
		if err := b.flush(ctx, q); err != nil {
			return err
		}
	}
	if b.unarchived {
		if err := b.persist(ctx); err != nil {
			return err
		}
	}
	nsmap := b.h.opts.NamespaceMap
	var err error
	switch ev.Operation {
	case changeevent.Drop:
		err = b.h.dr.Drop(ctx, nsmap.Map(ev.NS))
	case changeevent.DropDatabase:
		err = b.h.dr.Drop(ctx, nsmap.Map(changeevent.Namespace{DB: ev.NS.DB}))
	case changeevent.Rename:
		err = b.h.dr.Rename(ctx, nsmap.Map(ev.NS), nsmap.Map(*ev.To))
	}
	if err != nil {
		return fmt.Errorf("%s %s in DR: %w", ev.Operation, ev.NS, err)
	}
	b.sum.Applied++
	return nil
}

// persist writes every archive object that changed, after executing every pending read so that
// no line is written without its before-image. It is called before a write that would change a
// document whose before-image is not archived yet, and at the end of the batch.
func (b *batch) persist(ctx context.Context) error {
	for _, q := range b.queues {
		if err := b.resolve(ctx, q); err != nil {
			return err
		}
	}
	var puts []func(context.Context) error
	for _, obj := range b.objects {
		if obj.dirty {
			puts = append(puts, func(ctx context.Context) error { return b.putObject(ctx, obj) })
		}
	}
	if err := b.parallel(ctx, puts); err != nil {
		return err
	}
	for _, q := range b.queues {
		clear(q.unarchived)
	}
	b.unarchived = false
	return nil
}

// finish executes everything pending, then writes the archive objects and the dead letters.
func (b *batch) finish(ctx context.Context) error {
	for _, q := range b.queues {
		if err := b.flush(ctx, q); err != nil {
			return err
		}
	}
	if err := b.persist(ctx); err != nil {
		return err
	}
	var puts []func(context.Context) error
	for _, d := range b.dead {
		puts = append(puts, func(ctx context.Context) error {
			if err := b.h.archive.Put(ctx, d.key, d.body); err != nil {
				return fmt.Errorf("write dead letter: %w", err)
			}
			b.countPut()
			return nil
		})
	}
	return b.parallel(ctx, puts)
}

func (b *batch) countPut() {
	b.putMu.Lock()
	b.sum.ArchivePuts++
	b.putMu.Unlock()
}

// parallel runs fns, at most PutParallelism at a time, and returns the first error.
func (b *batch) parallel(ctx context.Context, fns []func(context.Context) error) error {
	if len(fns) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, b.h.opts.PutParallelism)
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if errs[i] = fn(ctx); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

// putObject writes one delete archive object. Its lines are merged with those of an object
// already at the key, which an earlier delivery of this batch wrote: for a record in both, the
// line written first is kept, because its before-image was read before any write of this
// batch reached DR, where a redelivery would read DR after those writes.
func (b *batch) putObject(ctx context.Context, obj *archiveObject) error {
	if !obj.loaded {
		existing, err := b.existingLines(ctx, obj.key)
		if err != nil {
			return err
		}
		obj.existing, obj.loaded = existing, true
	}
	byOffset := make(map[int64][]byte, len(obj.lines)+len(obj.existing))
	for off, l := range obj.existing {
		byOffset[off] = l
	}
	kept := 0
	for _, l := range obj.lines {
		if l.rendered == nil {
			rec, err := archive.NewRecord(&l.ev, l.at, l.before)
			if err != nil {
				return fmt.Errorf("archive %s at offset %d: %w", l.ev.Operation, l.at.Offset, err)
			}
			if l.rendered, err = rec.MarshalLine(); err != nil {
				return err
			}
		}
		if old, ok := obj.existing[l.at.Offset]; ok {
			if !bytes.Equal(old, l.rendered) {
				kept++
			}
			continue
		}
		byOffset[l.at.Offset] = l.rendered
	}
	if kept > 0 {
		b.h.log.Info("archive object already held records of this batch; kept the lines written first",
			slog.String("key", obj.key), slog.Int("differing", kept))
	}
	offsets := make([]int64, 0, len(byOffset))
	for off := range byOffset {
		offsets = append(offsets, off)
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })
	lines := make([][]byte, len(offsets))
	for i, off := range offsets {
		lines[i] = byOffset[off]
	}
	body, err := archive.EncodeObject(lines)
	if err != nil {
		return err
	}
	if err := b.h.archive.Put(ctx, obj.key, body); err != nil {
		return fmt.Errorf("write delete archive: %w", err)
	}
	obj.dirty = false
	b.countPut()
	return nil
}

// existingLines reads the lines of the object at key, by offset; none when there is no object.
// An object that cannot be decoded is logged and replaced.
func (b *batch) existingLines(ctx context.Context, key string) (map[int64][]byte, error) {
	body, err := b.h.archive.Get(ctx, key)
	if errors.Is(err, archive.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read delete archive before overwriting it: %w", err)
	}
	lines, err := archive.DecodeObject(body)
	if err != nil {
		b.h.log.Warn("replacing unreadable archive object", slog.String("key", key), slog.String("error", err.Error()))
		return nil, nil
	}
	existing := make(map[int64][]byte, len(lines))
	for _, l := range lines {
		at, err := archive.LineKafka(l)
		if err != nil {
			b.h.log.Warn("dropping unreadable line of archive object", slog.String("key", key), slog.String("error", err.Error()))
			continue
		}
		existing[at.Offset] = l
	}
	return existing, nil
}

// overlaps reports whether two key sets share a key.
func overlaps(a, b map[IDKey]struct{}) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	for k := range a {
		if _, ok := b[k]; ok {
			return true
		}
	}
	return false
}
