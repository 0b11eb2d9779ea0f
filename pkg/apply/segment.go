package apply

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"golang.org/x/sync/errgroup"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// A segment is a run of document changes (of one or more partitions) with no collection event
// among them. It is applied in four steps, so that every delete's line holds the document as the
// primary had it at the delete and no read waits on a write:
//
//  1. read: DR's current version of every document the segment updates or deletes, before
//     any write of the segment (one find {_id: {$in}} per namespace and MAX_BULK_OPS ids);
//  2. walk: the events in order, each document's version kept in memory with an exact flag.
//     An insert or replace sets it (exact). An update with a known version applies its
//     updateDescription to it (changeevent.UpdateDescription.ApplyTo), and DR gets the same
//     delta, so DR's server computes what the primary computed. An update of a document DR
//     lacks heals it from the looked-up full document (inexact: updateLookup reads the
//     document when capture reads the event, possibly after later changes). A delete's line
//     takes the current version, rendered once, complete; the document is then absent;
//     With the history on (Options.History), every insert, update, replace and delete (one the
//     delete policy does not archive already) also gets a line with the version it overwrites:
//     the walk's current version before the event, under the same rule and with the same
//     exact flag as a delete's; an insert's is null (exact). A replace then needs DR's version
//     too, and is read in step 1;
//  3. claim the lines in the ledger (ledger.go);
//  4. the DR writes, in order per namespace, while the archive objects are written.
//
// Around them, the applied frontier (Frontier): records it shows applied already are dropped
// first (a redelivery, a consumer-group replay); the segment's offsets are recorded as an intent
// while steps 1 to 3 run (it is durable before step 4) and as applied after step 4, once its dead
// letters are written.

// version is what the walk knows of one document: nil doc is "absent".
type version struct {
	doc   bson.Raw
	exact bool
	note  string // why the version is not proven to be the primary's
}

// docRef names a document in DR.
type docRef struct {
	ns  changeevent.Namespace
	key IDKey
}

// queue is the writes of a segment on one DR namespace, in order, with the item each belongs to.
type queue struct {
	ns     changeevent.Namespace
	writes []Write
	owners []*item
}

func (b *batch) segment(ctx context.Context, all []*item) error {
	items := b.unapplied(all)
	if len(items) == 0 {
		if err := b.putDeadLetters(ctx); err != nil {
			return err
		}
		return b.advance(ctx, all, false)
	}
	// The intent depends only on the records' offsets: it is recorded while the segment is read,
	// walked and claimed, and is durable before any DR write.
	intent := make(chan error, 1)
	if writesDR(items, b.h.policy) {
		go func() { intent <- b.advance(ctx, all, true) }()
	} else {
		intent <- nil
	}
	objs, queues, err := b.prepare(ctx, items)
	if ierr := <-intent; ierr != nil {
		return ierr
	}
	if err != nil {
		return err
	}
	// The lines are durable in the ledger: the DR writes may go out, alongside the PUTs.
	puts := make(chan error, 1)
	go func() { puts <- b.putObjects(ctx, objs) }()
	werr := b.writeQueues(ctx, queues)
	if perr := <-puts; perr != nil {
		return perr
	}
	if werr != nil {
		return werr
	}
	if err := b.revive(ctx, items); err != nil {
		return err
	}
	if err := b.written(ctx, objs); err != nil {
		return err
	}
	// Dead letters of refused writes go out before the frontier passes their records.
	if err := b.putDeadLetters(ctx); err != nil {
		return err
	}
	return b.advance(ctx, all, false)
}

// prepare reads, walks and claims the segment (steps 1 to 3): it returns the archive objects to
// write and the DR writes. It may run alongside the intent's advance: it does not touch the
// frontiers.
func (b *batch) prepare(ctx context.Context, items []*item) ([]object, []*queue, error) {
	var versions map[docRef]*version // nil: not tracked (see tracksVersions)
	if b.tracksVersions(items) {
		var err error
		if versions, err = b.readVersions(ctx, items); err != nil {
			return nil, nil, err
		}
	}
	queues, lines, err := b.walk(items, versions)
	if err != nil {
		return nil, nil, err
	}
	if b.h.opts.History {
		if err := b.h.markHistory(ctx, primaryNamespaces(items), b.start); err != nil {
			return nil, nil, err
		}
	}
	objs, err := b.claimLines(ctx, lines)
	if err != nil {
		return nil, nil, err
	}
	return objs, queues, nil
}

// tracksVersions reports whether the walk needs the documents' versions: only an update, a
// delete or a history line reads one. A segment of inserts and replaces alone (the bulk of a
// load) skips the reads and the bookkeeping.
func (b *batch) tracksVersions(items []*item) bool {
	if b.h.opts.History {
		return true
	}
	for _, it := range items {
		if op := it.ev.Operation; op == changeevent.Update || op == changeevent.Delete {
			return true
		}
	}
	return false
}

// writesDR reports whether the segment's items may write to DR: any insert, replace or update,
// or a delete the policy applies. (An update of a document DR lacks may end up writing nothing:
// its intent is then recorded for nothing, which only marks a redelivery as a replay.)
func writesDR(items []*item, policy Policy) bool {
	for _, it := range items {
		switch it.ev.Operation {
		case changeevent.Insert, changeevent.Replace, changeevent.Update:
			return true
		case changeevent.Delete:
			if policy.Delete.Apply {
				return true
			}
		}
	}
	return false
}

// revive marks, after the segment's writes, the ledger's delete entries held in the DR
// namespace of every document the segment inserted again and did not delete after: DR's copy is the primary's live version now,
// not an intercepted one (docdbdr promote leaves it in place). Marking after the writes and
// before the frontier passes the records means an interrupted segment, applied again, marks
// again; the mark is idempotent.
func (b *batch) revive(ctx context.Context, items []*item) error {
	if !b.h.policy.For(changeevent.Delete).Archive {
		return nil // no delete has a ledger entry
	}
	// lastDelete is the position of each deleted document's last delete in the segment; most
	// segments have none, and then every inserted document is revived.
	var lastDelete map[docRef]int
	for i, it := range items {
		if !it.dead && it.ev.Operation == changeevent.Delete {
			if lastDelete == nil {
				lastDelete = map[docRef]int{}
			}
			lastDelete[it.ref] = i
		}
	}
	byNS := map[changeevent.Namespace][]bson.RawValue{}
	var nss []changeevent.Namespace
	for i, it := range items {
		if it.dead || it.ev.Operation != changeevent.Insert {
			continue
		}
		if last, ok := lastDelete[it.ref]; ok && last > i {
			continue // deleted again after this insert
		}
		if byNS[it.ref.ns] == nil {
			nss = append(nss, it.ref.ns)
		}
		// An _id inserted twice (a replayed copy) is listed twice: the mark is idempotent.
		byNS[it.ref.ns] = append(byNS[it.ref.ns], it.id)
	}
	for _, ns := range nss {
		all := byNS[ns]
		for start := 0; start < len(all); start += b.h.opts.MaxBulkOps {
			if err := b.h.dr.Revived(ctx, ns, all[start:min(start+b.h.opts.MaxBulkOps, len(all))]); err != nil {
				return fmt.Errorf("mark the re-inserted documents of %s revived in the ledger: %w", ns, err)
			}
		}
	}
	return nil
}

// primaryNamespaces lists the primary namespaces of the items, in order of first appearance.
func primaryNamespaces(items []*item) []changeevent.Namespace {
	seen := map[changeevent.Namespace]bool{}
	var out []changeevent.Namespace
	for _, it := range items {
		if !seen[it.ev.NS] {
			seen[it.ev.NS] = true
			out = append(out, it.ev.NS)
		}
	}
	return out
}

// unapplied drops the records that the applied frontier shows were applied already (a
// redelivery, a consumer-group replay) and those dead-lettered at decoding, and marks those that
// may be applied onto later changes.
func (b *batch) unapplied(items []*item) []*item {
	out := items[:0:0]
	for _, it := range items {
		if it.dead {
			continue
		}
		f := b.frontiers[frontierKey{topic: it.at.Topic, partition: it.at.Partition}]
		ns, ct := it.ev.NS, it.ev.ClusterTime
		switch {
		case f == nil:
		case f.applied(it.at.Offset, ns, ct):
			b.sum.AlreadyApplied++
			continue
		case f.inFlight(it.at.Offset):
			it.replay = "applied again after an interrupted write at " + it.coords() + ": DR may already have held later changes of the document"
		case f.ClusterTimes[ns].After(ct):
			it.replay = "the event at " + it.coords() + " (a republished copy) was applied onto a version with later changes"
		}
		out = append(out, it)
	}
	return out
}

// advance records a step's records in the applied frontiers of their partitions: as in flight
// before its writes (intent), as applied after them. The applied range grows when the step's
// offsets join it, and starts again at them when they do not (the records in between are then
// not known to be applied, and would be applied if they came again).
func (b *batch) advance(ctx context.Context, items []*item, intent bool) error {
	type span struct {
		low, high int64
		cts       map[changeevent.Namespace]primitive.Timestamp
	}
	spans := map[frontierKey]*span{}
	var order []frontierKey
	for _, it := range items {
		k := frontierKey{topic: it.at.Topic, partition: it.at.Partition}
		sp := spans[k]
		if sp == nil {
			sp = &span{low: it.at.Offset, high: it.at.Offset, cts: map[changeevent.Namespace]primitive.Timestamp{}}
			spans[k] = sp
			order = append(order, k)
		}
		sp.low, sp.high = min(sp.low, it.at.Offset), max(sp.high, it.at.Offset)
		if !it.dead && it.ev.ClusterTime.After(sp.cts[it.ev.NS]) {
			sp.cts[it.ev.NS] = it.ev.ClusterTime
		}
	}
	now := b.h.opts.Now().UTC()
	var fs []Frontier
	for _, k := range order {
		sp := spans[k]
		f := Frontier{Topic: k.topic, Partition: k.partition, Low: 0, High: -1, IntentLow: 0, IntentHigh: -1,
			ClusterTimes: map[changeevent.Namespace]primitive.Timestamp{}, At: now}
		old := b.frontiers[k]
		if old != nil {
			f.Low, f.High = old.Low, old.High
			maps.Copy(f.ClusterTimes, old.ClusterTimes)
		}
		if intent {
			f.IntentLow, f.IntentHigh = sp.low, sp.high
		} else {
			if f.High >= f.Low && sp.low <= f.High+1 && sp.high >= f.Low-1 {
				f.Low, f.High = min(f.Low, sp.low), max(f.High, sp.high)
			} else {
				f.Low, f.High = sp.low, sp.high
			}
			for ns, ct := range sp.cts {
				if ct.After(f.ClusterTimes[ns]) {
					f.ClusterTimes[ns] = ct
				}
			}
			if old != nil && old.IntentHigh < old.IntentLow && old.Low == f.Low && old.High == f.High && maps.Equal(old.ClusterTimes, f.ClusterTimes) {
				continue // a replay of what the frontier holds: nothing to record
			}
		}
		fs = append(fs, f)
	}
	if len(fs) == 0 {
		return nil
	}
	if err := b.h.dr.SetFrontiers(ctx, fs); err != nil {
		return fmt.Errorf("record the applied frontiers: %w", err)
	}
	for i := range fs {
		b.frontiers[frontierKey{topic: fs[i].Topic, partition: fs[i].Partition}] = &fs[i]
	}
	return nil
}

// readVersions reads DR's version of every document that the segment updates or deletes (or,
// with the history on, replaces) before any insert or replace of it in the segment sets it.
func (b *batch) readVersions(ctx context.Context, items []*item) (map[docRef]*version, error) {
	seen := map[docRef]bool{}
	replayed := map[docRef]string{}
	var order []changeevent.Namespace
	want := map[changeevent.Namespace][]bson.RawValue{}
	for _, it := range items {
		ns, id, ref := it.ref.ns, it.id, it.ref
		if seen[ref] {
			continue
		}
		seen[ref] = true
		if it.replay != "" {
			replayed[ref] = it.replay
		}
		// With the history on, a replace's line needs the version it overwrites too.
		if op := it.ev.Operation; op == changeevent.Update || op == changeevent.Delete || (op == changeevent.Replace && b.h.opts.History) {
			if _, ok := want[ns]; !ok {
				order = append(order, ns)
			}
			want[ns] = append(want[ns], id)
		}
	}
	versions := make(map[docRef]*version, len(seen))
	for _, ns := range order {
		ids := want[ns]
		for start := 0; start < len(ids); start += b.h.opts.MaxBulkOps {
			chunk := ids[start:min(start+b.h.opts.MaxBulkOps, len(ids))]
			docs, err := b.h.dr.FindByIDs(ctx, ns, chunk)
			if err != nil {
				return nil, fmt.Errorf("read %d documents of %s: %w", len(chunk), ns, err)
			}
			for _, id := range chunk {
				ref := docRef{ns: ns, key: KeyOf(id)}
				note := replayed[ref]
				versions[ref] = &version{doc: docs[ref.key], exact: note == "", note: note}
			}
		}
	}
	return versions, nil
}

// walk computes the segment's writes and lines (see segment). versions is nil when the segment
// has no event that reads a version (tracksVersions).
func (b *batch) walk(items []*item, versions map[docRef]*version) ([]*queue, []*line, error) {
	var queues []*queue
	byNS := map[changeevent.Namespace]*queue{}
	perNS := map[changeevent.Namespace]int{}
	for _, it := range items {
		perNS[it.ref.ns]++
	}
	enqueue := func(ns changeevent.Namespace, it *item, ws []Write) {
		if len(ws) == 0 {
			return
		}
		q := byNS[ns]
		if q == nil {
			q = &queue{ns: ns, writes: make([]Write, 0, perNS[ns]), owners: make([]*item, 0, perNS[ns])}
			byNS[ns] = q
			queues = append(queues, q)
		}
		for _, w := range ws {
			q.writes = append(q.writes, w)
			q.owners = append(q.owners, it)
		}
	}
	var lines []*line
	var missing []string // coordinates of updates of documents DR lacks, for the log
	for _, it := range items {
		ev := &it.ev
		ns, id, ref := it.ref.ns, it.id, it.ref
		cur := versions[ref]
		if b.h.opts.History && (ev.Operation != changeevent.Delete || !b.h.policy.Delete.Archive) {
			l, err := b.historyLine(it, id, cur)
			if err != nil {
				return nil, nil, err
			}
			lines = append(lines, l)
		}
		switch ev.Operation {
		case changeevent.Insert, changeevent.Replace:
			enqueue(ns, it, replaceWrites(id, ev.FullDocument))
			if versions != nil {
				versions[ref] = &version{doc: ev.FullDocument, exact: true}
			}

		case changeevent.Update:
			next, ws, err := b.update(it, id, cur)
			if err != nil {
				return nil, nil, err
			}
			if next == nil {
				b.sum.MissingDocumentUpdates++
				if len(missing) < 20 {
					missing = append(missing, it.coords())
				}
				continue
			}
			if it.replay != "" {
				next.exact, next.note = false, it.replay
			}
			enqueue(ns, it, ws)
			versions[ref] = next

		case changeevent.Delete:
			act := b.h.policy.Delete
			if act.Archive {
				l, err := b.deleteLine(it, id, cur)
				if err != nil {
					return nil, nil, err
				}
				lines = append(lines, l)
			}
			if act.Apply {
				enqueue(ns, it, []Write{{Kind: DeleteOne, ID: id}})
			}
			versions[ref] = &version{exact: true}
		}
	}
	if len(missing) > 0 {
		b.h.log.Warn("updates of documents DR does not have, and without a full document to heal them: not applied",
			slog.Int("missing", b.sum.MissingDocumentUpdates), slog.Any("updateRecords", missing))
	}
	return queues, lines, nil
}

// update returns the version after an update event and its DR writes; a nil version means DR
// has no version and the event carries no full document: nothing can be written.
func (b *batch) update(it *item, id bson.RawValue, cur *version) (*version, []Write, error) {
	ev := &it.ev
	ud := ev.UpdateDescription
	if cur == nil || cur.doc == nil {
		if ev.FullDocument == nil {
			return nil, nil, nil
		}
		return &version{doc: ev.FullDocument, note: "DR had no version of the document; healed from the update at " +
			it.coords() + " with its updateLookup document"}, replaceWrites(id, ev.FullDocument), nil
	}
	if ud == nil {
		return &version{doc: ev.FullDocument, note: "the update at " + it.coords() +
			" has no updateDescription; version from its updateLookup document"}, replaceWrites(id, ev.FullDocument), nil
	}
	post, err := ud.ApplyTo(cur.doc)
	switch {
	case err == nil:
		ws, err := deltaWrites(id, ud)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", it.coords(), err)
		}
		return &version{doc: post, exact: cur.exact, note: cur.note}, ws, nil
	case !errors.Is(err, changeevent.ErrInapplicable):
		return nil, nil, fmt.Errorf("%s: %w", it.coords(), err)
	case ev.FullDocument != nil:
		return &version{doc: ev.FullDocument, note: "the update at " + it.coords() + " does not apply to the known version (" +
			err.Error() + "); version from its updateLookup document"}, replaceWrites(id, ev.FullDocument), nil
	default:
		ws, derr := deltaWrites(id, ud)
		if derr != nil {
			return nil, nil, fmt.Errorf("%s: %w", it.coords(), derr)
		}
		return &version{doc: cur.doc, note: "the update at " + it.coords() + " does not apply to the known version (" +
			err.Error() + "); version from before it"}, ws, nil
	}
}

// historyLine renders the version history line of a document change (ARCHIVE_HISTORY=on): the
// version the event overwrites, under the same event-time rule as a delete's before-image. An
// insert's is null and exact: the primary had no document with its _id just before it.
func (b *batch) historyLine(it *item, id bson.RawValue, cur *version) (*line, error) {
	l := &line{it: it, docID: id, history: true}
	var before bson.Raw
	if cur != nil && it.ev.Operation != changeevent.Insert {
		before = cur.doc
	}
	rec, err := archive.NewRecord(&it.ev, it.at, before)
	if err != nil {
		return nil, fmt.Errorf("archive the version before the %s at %s: %w", it.ev.Operation, it.coords(), err)
	}
	switch {
	case it.ev.Operation == changeevent.Insert:
		rec.BeforeExact = true
	case before == nil:
		l.missing = true
		rec.BeforeExact, rec.BeforeNote = false, "DR had no version of the document at the "+string(it.ev.Operation)
	case !cur.exact:
		l.inexact = true
		rec.BeforeExact, rec.BeforeNote = false, cur.note
	}
	if l.body, err = rec.MarshalLine(); err != nil {
		return nil, err
	}
	return l, nil
}

// deleteLine renders a delete's line with the current version as its before-image.
func (b *batch) deleteLine(it *item, id bson.RawValue, cur *version) (*line, error) {
	l := &line{it: it, docID: id}
	var before bson.Raw
	if cur != nil {
		before = cur.doc
	}
	rec, err := archive.NewRecord(&it.ev, it.at, before)
	if err != nil {
		return nil, fmt.Errorf("archive the delete at %s: %w", it.coords(), err)
	}
	switch {
	case before == nil:
		l.missing = true
		rec.BeforeExact, rec.BeforeNote = false, "DR had no version of the document at the delete"
	case !cur.exact:
		l.inexact = true
		rec.BeforeExact, rec.BeforeNote = false, cur.note
	}
	if l.body, err = rec.MarshalLine(); err != nil {
		return nil, err
	}
	return l, nil
}

// Write lanes: a namespace's queue of at least 2 × minLaneWrites writes is split into up to
// maxWriteLanes lanes by document, and the lanes (and namespaces) of a segment of at least
// 2 × minLaneWrites writes are written concurrently, each in order. Every write of one document
// falls in one lane, in the queue's order, so each document sees its changes in the order the
// primary made them; writes of different documents commute (a unique secondary index on DR is a
// known limit, docs/apply.md). While DR executes one lane's bulk write, the driver encodes the
// next one's: on the embedded server, which runs one write command at a time, that overlap is
// the gain; a real cluster also runs the commands in parallel.
const (
	maxWriteLanes = 4
	minLaneWrites = 100
)

// writeQueues sends each queue's writes in order, in bulks of at most MAX_BULK_OPS writes and
// MaxBulkBytes, the lanes of a large queue concurrently (see maxWriteLanes). A write DR refuses
// for ever dead-letters its record (with the server's error) and the writes after it go on; any
// other error fails the batch (once the lanes under way have returned).
func (b *batch) writeQueues(ctx context.Context, queues []*queue) error {
	var lanes []*queue
	total := 0
	for _, q := range queues {
		lanes = append(lanes, q.lanes(min(maxWriteLanes, len(q.writes)/minLaneWrites))...)
		total += len(q.writes)
	}
	if total < 2*minLaneWrites {
		// A small segment goes one queue after the other: concurrency would gain nothing.
		for _, q := range lanes {
			if err := b.writeQueue(ctx, q); err != nil {
				return err
			}
		}
		return nil
	}
	var g errgroup.Group
	g.SetLimit(maxWriteLanes)
	for _, l := range lanes {
		g.Go(func() error { return b.writeQueue(ctx, l) })
	}
	return g.Wait()
}

// lanes splits q into n queues by document (n < 2: q itself), each holding its documents'
// writes in q's order.
func (q *queue) lanes(n int) []*queue {
	if n < 2 {
		return []*queue{q}
	}
	out := make([]*queue, n)
	for i := range out {
		out[i] = &queue{ns: q.ns, writes: make([]Write, 0, len(q.writes)/n+8), owners: make([]*item, 0, len(q.writes)/n+8)}
	}
	for i, w := range q.writes {
		l := out[laneOf(q.owners[i].ref.key, n)]
		l.writes = append(l.writes, w)
		l.owners = append(l.owners, q.owners[i])
	}
	return out
}

// laneOf is the lane of a document: a hash of its key, modulo n. The seed is the process's:
// lanes need only be the same within one segment.
func laneOf(key IDKey, n int) int {
	return int(maphash.String(laneSeed, string(key)) % uint64(n))
}

var laneSeed = maphash.MakeSeed()

// writeQueue sends one queue's writes in order (see writeQueues).
func (b *batch) writeQueue(ctx context.Context, q *queue) error {
	for start := 0; start < len(q.writes); {
		end, bytes := start, 0
		for end < len(q.writes) && end-start < b.h.opts.MaxBulkOps &&
			(end == start || bytes+q.writes[end].size() <= b.h.opts.MaxBulkBytes) {
			bytes += q.writes[end].size()
			end++
		}
		next, err := b.bulk(ctx, q, start, end)
		if err != nil {
			return err
		}
		start = next
	}
	return nil
}

// bulk writes q.writes[start:end] and returns where to go on: end, or, when DR refused a write
// for ever, the first write after the refused record's writes.
func (b *batch) bulk(ctx context.Context, q *queue, start, end int) (int, error) {
	writes := q.writes[start:end]
	res, err := b.h.dr.BulkWrite(ctx, q.ns, writes)
	b.writeMu.Lock() // lanes are written concurrently: their bookkeeping goes one at a time
	defer b.writeMu.Unlock()
	if err == nil {
		b.sum.Applied += len(writes)
		b.countMissing(q, start, end, res)
		return end, nil
	}
	we, permanent := permanentWriteError(err)
	if !permanent {
		return 0, fmt.Errorf("bulk write of %d operations to %s: %w", len(writes), q.ns, err)
	}
	bad := start + we.Index
	b.sum.Applied += we.Index
	owner := q.owners[bad]
	what := q.writes[bad].Kind.String()
	if bad+1 < len(q.writes) && q.owners[bad+1] == owner && q.writes[bad+1].Kind == InsertOne {
		what = "replacement (a delete then an insert: the document has a top-level $-prefixed field)"
	}
	reason := fmt.Sprintf("DR refused the %s of %s (server error %d: %s)", what, q.ns, we.Code, we.Message)
	if err := b.addDeadLetter(owner.rec, reason); err != nil {
		return 0, err
	}
	b.sum.ByOp[string(owner.ev.Operation)]-- // counted as "poison" now
	next := bad + 1
	for next < len(q.writes) && q.owners[next] == owner {
		next++ // the record's other writes (a truncation's $set, an insert after its delete)
	}
	return next, nil
}

// countMissing finds update operations that matched no document: DR lost a document between the
// read and the write (or a write before it was refused). A bulk result has only totals: every
// ReplaceOne either matched or upserted, so what the UpdateOnes matched is the rest.
func (b *batch) countMissing(q *queue, start, end int, res BulkResult) {
	var replaces, updates int64
	var at []string
	for i := start; i < end; i++ {
		switch q.writes[i].Kind {
		case ReplaceOne:
			replaces++
		case UpdateOne:
			updates++
			if len(at) < 20 {
				at = append(at, q.owners[i].coords())
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
