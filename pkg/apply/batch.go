package apply

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// batch is the state of one invocation. It runs in four stages:
//
//  1. recovery: archive objects that the ledger holds as pending for this batch's partitions (a
//     crash after a claim) are written first (ledger.go);
//  2. decoding: every record becomes an event, or a dead letter;
//  3. the plan: each partition's records are cut at its collection events (barriers) into
//     segments; segment k of every partition is walked together (segment.go), then every
//     partition's k-th barrier is performed (barrier.go), and so on. A partition's records are
//     thus handled in offset order, and partitions never wait for each other: documents of
//     different partitions are different documents (a document's key fixes its partition);
//  4. dead letters are written.
type batch struct {
	h      *Handler
	sum    Summary
	oldest time.Time // earliest cluster time in the batch
	start  time.Time // when the invocation started (the since of new history markers)
	claim  string    // this invocation's claim id, in the keys of the objects it claims

	// archived holds the event ids whose line this invocation claimed or found in the ledger:
	// a second copy of the same event in the batch (a republished tail, another partition's
	// barrier copy) adds no line.
	archived map[string]bool
	// frontiers are the applied frontiers of the batch's partitions, by topic, partition and
	// primary namespace (see Frontier).
	frontiers map[frontierKey]*Frontier
	// namespaces are the DR namespaces of the batch's events, for errors; lastNS the latest added.
	namespaces map[string]bool
	lastNS     changeevent.Namespace
	hasLastNS  bool
	dead       []deadLetterPut
	putMu      sync.Mutex // guards sum.ArchivePuts, counted by parallel puts
	writeMu    sync.Mutex // guards what the concurrent write lanes record: sum, dead (see bulk)
	pre        *statePrefetch
}

type frontierKey struct {
	topic     string
	partition int64
}

// item is one decoded record.
type item struct {
	rec *events.KafkaRecord
	at  archive.Kafka
	ev  changeevent.Event
	// partitions is, for a collection event, the number of partitions its copies were
	// published to (the barrier header; 1 without it).
	partitions int
	// replay, when set, says why the record may be applied onto a document that already holds
	// later changes (a redelivery after an interrupted write, a republished copy): the versions
	// it produces are not proven.
	replay string
	// dead is set for a record that was dead-lettered at decoding: it only holds its place in
	// the partition's offsets.
	dead bool
	// For a document change: its _id and the document in DR (the mapped namespace, KeyOf(_id)).
	id  bson.RawValue
	ref docRef
}

func (it *item) coords() string {
	return fmt.Sprintf("%s-%d@%d", it.at.Topic, it.at.Partition, it.at.Offset)
}

// isBarrier reports whether the item is a collection event, which cuts its partition's records.
func (it *item) isBarrier() bool { return !it.dead && !it.ev.Operation.IsDocumentChange() }

type deadLetterPut struct {
	key  string
	body []byte
}

func newBatch(h *Handler) *batch {
	return &batch{
		h:          h,
		sum:        Summary{ByOp: map[string]int{}},
		claim:      h.claimID(),
		archived:   map[string]bool{},
		frontiers:  map[frontierKey]*Frontier{},
		namespaces: map[string]bool{},
	}
}

// run handles the batch.
func (b *batch) run(ctx context.Context, partitions [][]events.KafkaRecord) error {
	if len(partitions) == 0 {
		return nil
	}
	for _, recs := range partitions {
		b.sum.Records += len(recs)
	}
	// The pending ledger entries and the applied frontiers depend only on the batch's partitions:
	// they are read alongside the fence and the decoding.
	b.pre = b.h.prefetchState(ctx, partitions)
	defer b.pre.wait()
	// The records are decoded while the fence is read: decoding reads nothing of DR.
	decodings := make(chan [][]decoded, 1)
	go func() { decodings <- b.h.decodeAll(ctx, partitions) }()
	// A promoted DR takes nothing after the fence (see Fence).
	fence, err := b.h.dr.Fence(ctx)
	ds := <-decodings
	if err != nil {
		b.peekNamespaces(partitions)
		return b.onNamespaces(b.corrupt(fmt.Errorf("read the fence %s.%s: %w", b.h.dr.StateDB(), FenceCollection, err)))
	}
	var fenced int
	if fence != nil {
		var kept []int
		if kept, fenced = fence.before(partitions); fenced > 0 {
			partitions, ds = prefixes(partitions, kept), prefixes(ds, kept)
			b.pre.wait()
			b.pre = nil // read for partitions the fence cut: read again for those it kept
			b.sum.Fenced = fenced
			b.h.log.Warn("records after the fence of a promoted DR are not applied", slog.Int("records", fenced),
				slog.Time("promotedAt", fence.PromotedAt))
		}
	}
	if err := b.runUnfenced(ctx, partitions, ds); err != nil {
		return err
	}
	if fenced > 0 {
		return fmt.Errorf("%w: %d records of this batch (DR promoted at %s); disable the event source mapping",
			ErrFenced, fenced, fence.PromotedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// runUnfenced handles the batch's records that the fence lets through, ds[p][i] being
// partitions[p][i]'s decoding.
func (b *batch) runUnfenced(ctx context.Context, partitions [][]events.KafkaRecord, ds [][]decoded) error {
	if len(partitions) == 0 {
		return nil
	}
	items := make([][]*item, 0, len(partitions))
	for p, recs := range partitions {
		its := make([]*item, 0, len(recs))
		for i := range recs {
			it, err := b.decode(&recs[i], &ds[p][i])
			if err != nil {
				return err
			}
			its = append(its, it)
		}
		items = append(items, its)
	}
	// The state database comes first: objects left pending, and what was applied already.
	if err := b.h.ensureState(ctx); err != nil {
		return b.onNamespaces(err)
	}
	if err := b.recover(ctx, partitions); err != nil {
		return b.onNamespaces(err)
	}
	if err := b.loadFrontiers(ctx, partitions); err != nil {
		return b.onNamespaces(err)
	}
	for _, st := range plan(items) {
		var err error
		if st.barrier != nil {
			err = b.barrier(ctx, st.barrier)
		} else {
			err = b.segment(ctx, st.docs)
		}
		if err != nil {
			return err
		}
	}
	return b.putDeadLetters(ctx)
}

// peekNamespaces notes the namespaces of records not decoded yet, best effort, for an error met
// before decoding (reading the fence): an operator still sees what is held up.
func (b *batch) peekNamespaces(partitions [][]events.KafkaRecord) {
	for _, recs := range partitions {
		for i := range recs {
			v, err := base64.StdEncoding.DecodeString(recs[i].Value)
			if err != nil {
				continue
			}
			db, err1 := bson.Raw(v).LookupErr("ns", "db")
			coll, err2 := bson.Raw(v).LookupErr("ns", "coll")
			d, ok1 := db.StringValueOK()
			c, ok2 := coll.StringValueOK()
			if err1 == nil && err2 == nil && ok1 && ok2 {
				b.namespaces[b.h.opts.NamespaceMap.Map(changeevent.Namespace{DB: d, Coll: c}).String()] = true
			}
		}
	}
}

// onNamespaces says, in an error of the state database, which namespaces the batch was to write:
// an operator sees what is held up.
func (b *batch) onNamespaces(err error) error {
	if len(b.namespaces) == 0 {
		return err
	}
	nss := slices.Sorted(maps.Keys(b.namespaces))
	if len(nss) > 5 {
		nss = append(nss[:5], "...")
	}
	return fmt.Errorf("writing %s: %w", strings.Join(nss, ", "), err)
}

// decode turns a record and its decoding into an item; a poison record is dead-lettered and
// gives a dead item.
func (b *batch) decode(r *events.KafkaRecord, d *decoded) (*item, error) {
	it, err := &d.it, d.err
	ev := &it.ev
	it.rec, it.at, it.partitions = r, archive.Kafka{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}, 1
	if err == nil && it.isBarrier() {
		it.partitions, err = barrierPartitions(r)
	}
	var p *poison
	if errors.As(err, &p) {
		it.dead = true
		return it, b.addDeadLetter(r, p.reason)
	}
	if err != nil {
		return nil, fmt.Errorf("%s-%d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	ns := b.h.opts.NamespaceMap.Map(ev.NS)
	if ev.Operation.IsDocumentChange() {
		it.id, _ = ev.ID() // validated by decode
		it.ref = docRef{ns: ns, key: KeyOf(it.id)}
	}
	if !b.hasLastNS || ns != b.lastNS { // records of one namespace mostly come in runs
		b.namespaces[ns.String()] = true
		b.lastNS, b.hasLastNS = ns, true
	}
	b.sum.ByOp[string(ev.Operation)]++
	if t := changeevent.Time(ev.ClusterTime); b.oldest.IsZero() || t.Before(b.oldest) {
		b.oldest = t
	}
	return it, nil
}

// step is one stage of the plan: a segment of document changes, or one barrier.
type step struct {
	docs    []*item
	barrier *item
}

// plan orders the batch (see batch): segment k of every partition, then barrier k of each.
func plan(parts [][]*item) []step {
	pos := make([]int, len(parts))
	var steps []step
	for {
		var seg, bars []*item
		for pi, p := range parts {
			for pos[pi] < len(p) && !p[pos[pi]].isBarrier() {
				seg = append(seg, p[pos[pi]])
				pos[pi]++
			}
			if pos[pi] < len(p) {
				bars = append(bars, p[pos[pi]])
				pos[pi]++
			}
		}
		if len(seg) == 0 && len(bars) == 0 {
			return steps
		}
		if len(seg) > 0 {
			steps = append(steps, step{docs: seg})
		}
		for _, it := range bars {
			steps = append(steps, step{barrier: it})
		}
	}
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

// statePrefetch holds the reads of apply's state that depend only on which partitions a batch
// holds: its pending ledger entries and its applied frontiers, by topic. They are sent at the
// start of the batch and waited for where they are used (recover, loadFrontiers).
type statePrefetch struct {
	wg        sync.WaitGroup
	pending   map[string]stateRead[[]LedgerEntry]
	frontiers map[string]stateRead[[]Frontier]
}

type stateRead[T any] struct {
	v   T
	err error
}

// prefetchState starts the state reads of the partitions; nil (read when needed) before the
// state database is prepared, whose first preparation must come before any read of it.
func (h *Handler) prefetchState(ctx context.Context, parts [][]events.KafkaRecord) *statePrefetch {
	h.stateMu.Lock()
	ready := h.stateReady
	h.stateMu.Unlock()
	if !ready || len(parts) == 0 {
		return nil
	}
	tps := topicPartitions(parts)
	pre := &statePrefetch{pending: map[string]stateRead[[]LedgerEntry]{}, frontiers: map[string]stateRead[[]Frontier]{}}
	pre.wg.Go(func() {
		for topic, ps := range tps {
			v, err := h.dr.Pending(ctx, topic, ps)
			pre.pending[topic] = stateRead[[]LedgerEntry]{v, err}
		}
	})
	pre.wg.Go(func() {
		for topic, ps := range tps {
			v, err := h.dr.Frontiers(ctx, topic, ps)
			pre.frontiers[topic] = stateRead[[]Frontier]{v, err}
		}
	})
	return pre
}

// wait returns once the reads are done (nil: at once).
func (p *statePrefetch) wait() {
	if p != nil {
		p.wg.Wait()
	}
}

// readPending returns the pending ledger entries of the partitions ps of topic.
func (b *batch) readPending(ctx context.Context, topic string, ps []int64) ([]LedgerEntry, error) {
	if b.pre != nil {
		b.pre.wait()
		if r, ok := b.pre.pending[topic]; ok {
			return r.v, r.err
		}
	}
	return b.h.dr.Pending(ctx, topic, ps)
}

// readFrontiers returns the applied frontiers of the partitions ps of topic.
func (b *batch) readFrontiers(ctx context.Context, topic string, ps []int64) ([]Frontier, error) {
	if b.pre != nil {
		b.pre.wait()
		if r, ok := b.pre.frontiers[topic]; ok {
			return r.v, r.err
		}
	}
	return b.h.dr.Frontiers(ctx, topic, ps)
}

// loadFrontiers reads the applied frontiers of the batch's partitions.
func (b *batch) loadFrontiers(ctx context.Context, parts [][]events.KafkaRecord) error {
	for topic, ps := range topicPartitions(parts) {
		fs, err := b.readFrontiers(ctx, topic, ps)
		if err != nil {
			return b.corrupt(fmt.Errorf("read the applied frontiers of %s %v: %w", topic, ps, err))
		}
		for i := range fs {
			f := fs[i]
			b.frontiers[frontierKey{topic: f.Topic, partition: f.Partition}] = &f
		}
	}
	return nil
}

// putDeadLetters writes the dead letters so far (conditional writes: a redelivery finds them).
func (b *batch) putDeadLetters(ctx context.Context) error {
	defer func() { b.dead = b.dead[:0] }()
	puts := make([]func(context.Context) error, 0, len(b.dead))
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

// topicPartitions lists the partitions of each topic in the batch, sorted.
func topicPartitions(parts [][]events.KafkaRecord) map[string][]int64 {
	out := map[string][]int64{}
	for _, recs := range parts {
		out[recs[0].Topic] = append(out[recs[0].Topic], recs[0].Partition)
	}
	for _, ps := range out {
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	}
	return out
}
