package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// ledger accounts for every change event of the watched scope after a fault. The primary's own
// change history is the reference: each of its events must be
//   - applied: an insert, update or replace in a record that a successful apply invocation
//     handled, or
//   - archived: a delete (drop, rename) found in an S3 archive object, or
//   - dead-lettered: its record is in the dead-letter area;
//
// anything else is lost. The counts are what docs/reliability.md reports.
type ledger struct {
	Written       int // change events of the watched scope in the primary's history
	KafkaRecords  int // records of the scope in the topic, redelivered copies included
	Republished   int // KafkaRecords minus distinct events: at-least-once copies
	Applied       int // insert/update/replace events applied by a successful apply invocation
	Archived      int // delete events in the archive
	ArchiveLines  int // lines in the archive objects: one per intercepted event
	ArchiveDups   int // lines beyond one per event (must be 0: the ledger makes lines exactly-once)
	NullBefore    int // delete lines without a before-image (must be 0: DR had every document)
	DeadLettered  int // dead-letter objects (poison records; not events of the scope)
	Lost          int // events of the scope neither applied, archived nor dead-lettered
	DRDuplicates  int // DR documents that exist more than once for one _id (must be 0)
	OutOfScope    int // records in Kafka from another namespace (must be 0)
	DRMismatch    int // primary documents that DR lacks or holds differently (must be 0)
	DRUnexplained int // DR documents that are neither in the primary nor intercepted (must be 0)
}

// historyEvent is one change of the primary's history.
type historyEvent struct {
	token string
	op    changeevent.OperationType
}

// account measures the ledger and reports every broken invariant as a test error: no event
// lost, nothing from outside the scope in Kafka, no duplicate document in DR, and DR equal to the
// primary plus the intercepted (deleted) documents. Call it after settle.
func (h *harness) account() ledger {
	h.t.Helper()
	l, mismatches := h.measure()
	if l.Written != h.written {
		h.t.Errorf("the primary's history of the scope has %d events, the workload made %d", l.Written, h.written)
	}
	if l.Lost > 0 {
		h.t.Errorf("%d of %d change events were lost: neither applied, archived nor dead-lettered", l.Lost, l.Written)
	}
	if l.OutOfScope > 0 {
		h.t.Errorf("%d records of another namespace reached Kafka", l.OutOfScope)
	}
	if l.DRDuplicates > 0 {
		h.t.Errorf("DR holds %d duplicate documents", l.DRDuplicates)
	}
	if l.DRMismatch > 0 {
		h.t.Errorf("%d primary documents are missing from DR or differ, e.g. %v", l.DRMismatch, mismatches)
	}
	if l.DRUnexplained > 0 {
		h.t.Errorf("%d DR documents are neither in the primary nor archived deletes", l.DRUnexplained)
	}
	if l.ArchiveDups > 0 {
		h.t.Errorf("the archive holds %d lines beyond one per intercepted event", l.ArchiveDups)
	}
	if l.NullBefore > 0 {
		h.t.Errorf("%d archived deletes have no before-image, though DR held every document", l.NullBefore)
	}
	return l
}

// measure counts the ledger without judging it (TestLedgerDetectsLoss needs the counts of a
// broken pipeline). It also returns a few examples of DR mismatches.
func (h *harness) measure() (ledger, []string) {
	h.t.Helper()
	var l ledger
	history := h.history()
	l.Written = len(history)

	// Kafka: what capture published, by position and by event.
	records := h.readTopic()
	byCoord := map[coord]string{}
	copies := map[string]int{}
	for c, value := range records {
		ev, err := changeevent.Unmarshal(value)
		if err != nil {
			continue // a poison record (the dead-letter test puts some there)
		}
		if ev.NS.DB != watchDB || ev.NS.Coll != watchColl {
			l.OutOfScope++
			continue
		}
		tok := tokenKey(ev.ResumeToken)
		byCoord[c] = tok
		copies[tok]++
		l.KafkaRecords++
	}
	l.Republished = l.KafkaRecords - len(copies)

	// Apply: records of successful invocations. A lean harness did not record them: every
	// record the mapping committed (settle waited for all of them) was handled by a successful
	// invocation.
	applied := map[string]bool{}
	if h.opts.Lean {
		for _, tok := range byCoord {
			applied[tok] = true
		}
	}
	for _, call := range h.applyCalls() {
		if call.err != nil {
			continue
		}
		for _, c := range call.records {
			if tok, ok := byCoord[c]; ok {
				applied[tok] = true
			}
		}
	}

	// The archive: intercepted events and the _ids of the deleted documents.
	archivedTokens, deletedIDs, lines, nullBefore := h.readArchive()
	l.ArchiveLines, l.ArchiveDups, l.NullBefore = lines, lines-len(archivedTokens), nullBefore
	deadTokens, deadObjects := h.readDeadLetters(byCoord)
	l.DeadLettered = deadObjects

	for _, ev := range history {
		switch {
		case ev.op == changeevent.Insert || ev.op == changeevent.Update || ev.op == changeevent.Replace:
			if applied[ev.token] {
				l.Applied++
				continue
			}
		case archivedTokens[ev.token]:
			l.Archived++
			continue
		}
		if deadTokens[ev.token] {
			continue
		}
		l.Lost++
	}
	mismatches := h.compareDR(&l, deletedIDs)
	return l, mismatches
}

// history reads the watched collection's change events from the position taken before the
// test wrote anything, through a change stream of its own.
func (h *harness) history() []historyEvent {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	cs, err := h.primary.Database(watchDB).Collection(watchColl).Watch(ctx, mongo.Pipeline{},
		options.ChangeStream().SetResumeAfter(h.witness).SetMaxAwaitTime(20*time.Millisecond))
	if err != nil {
		h.t.Fatalf("history: %v", err)
	}
	defer cs.Close(context.Background())
	var out []historyEvent
	for cs.TryNext(ctx) {
		var ev struct {
			ID bson.Raw                  `bson:"_id"`
			Op changeevent.OperationType `bson:"operationType"`
		}
		if err := bson.Unmarshal(cs.Current, &ev); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, historyEvent{token: tokenKey(ev.ID), op: ev.Op})
	}
	if err := cs.Err(); err != nil {
		h.t.Fatalf("history: %v", err)
	}
	return out
}

// tokenKey identifies an event by its resume token (its _data string when it has one).
func tokenKey(tok bson.Raw) string {
	if s, ok := tok.Lookup("_data").StringValueOK(); ok {
		return s
	}
	return fmt.Sprintf("%x", []byte(tok))
}

// readTopic reads every record of the topic, by position, straight from Kafka.
func (h *harness) readTopic() map[coord][]byte {
	h.t.Helper()
	cfg, err := kafka.SaramaConfig(kafka.Settings{Brokers: h.brokers, Topic: topic})
	if err != nil {
		h.t.Fatal(err)
	}
	client, err := sarama.NewClient(h.brokers, cfg)
	if err != nil {
		h.t.Fatalf("read topic: %v", err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		h.t.Fatal(err)
	}
	defer consumer.Close()
	out := map[coord][]byte{}
	for p := int32(0); p < partitions; p++ {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			h.t.Fatal(err)
		}
		start, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			h.t.Fatal(err)
		}
		if end <= start {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, start)
		if err != nil {
			h.t.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
	read:
		for {
			select {
			case m := <-pc.Messages():
				out[coord{partition: p, offset: m.Offset}] = m.Value
				if m.Offset >= end-1 {
					break read
				}
			case <-timeout:
				h.t.Fatalf("read topic: partition %d did not reach offset %d", p, end)
			}
		}
		_ = pc.Close()
	}
	return out
}

// readArchive returns the resume tokens of every archived event, the _id keys of the archived
// deletes, the number of lines, and the number of delete lines whose before is null or is not a
// version of the line's document.
func (h *harness) readArchive() (tokens map[string]bool, deletedIDs map[apply.IDKey]bool, lines, nullBefore int) {
	h.t.Helper()
	tokens, deletedIDs = map[string]bool{}, map[apply.IDKey]bool{}
	keys, err := h.archive.List(h.ctx, prefix+"deletes/")
	if err != nil {
		h.t.Fatalf("list archive: %v", err)
	}
	for _, key := range keys {
		body, err := h.archive.Get(h.ctx, key)
		if err != nil {
			h.t.Fatal(err)
		}
		objLines, err := archive.DecodeObject(body)
		if err != nil {
			h.t.Fatalf("%s: %v", key, err)
		}
		lines += len(objLines)
		for _, line := range objLines {
			rec, err := archive.ParseLine(line)
			if err != nil {
				h.t.Fatalf("%s: %v", key, err)
			}
			var tok bson.Raw
			if err := bson.UnmarshalExtJSON(rec.ResumeToken, true, &tok); err != nil {
				h.t.Fatalf("%s: resume token %s: %v", key, rec.ResumeToken, err)
			}
			tokens[tokenKey(tok)] = true
			if rec.Operation == string(changeevent.Delete) {
				id, err := rec.IDValue()
				if err != nil {
					h.t.Fatal(err)
				}
				deletedIDs[apply.KeyOf(id)] = true
				before, err := rec.BeforeDocument()
				if err != nil {
					h.t.Fatalf("%s: %v", key, err)
				}
				if before == nil || !before.Lookup("_id").Equal(id) {
					nullBefore++
				}
			}
		}
	}
	return tokens, deletedIDs, lines, nullBefore
}

// readDeadLetters returns the events whose records were dead-lettered and the number of
// dead-letter objects.
func (h *harness) readDeadLetters(byCoord map[coord]string) (map[string]bool, int) {
	h.t.Helper()
	keys, err := h.archive.List(h.ctx, prefix+"deadletter/")
	if err != nil {
		h.t.Fatalf("list dead letters: %v", err)
	}
	tokens := map[string]bool{}
	for _, key := range keys {
		body, err := h.archive.Get(h.ctx, key)
		if err != nil {
			h.t.Fatal(err)
		}
		var dl archive.DeadLetter
		if err := json.Unmarshal(body, &dl); err != nil {
			h.t.Fatalf("%s: %v", key, err)
		}
		if tok, ok := byCoord[coord{partition: int32(dl.Kafka.Partition), offset: dl.Kafka.Offset}]; ok {
			tokens[tok] = true
		}
	}
	return tokens, len(keys)
}

// compareDR counts the differences between DR and the primary: every primary document must be
// in DR byte for byte, and every other DR document must have been deleted in the primary and
// archived (intercepted); no _id may be in DR twice.
func (h *harness) compareDR(l *ledger, deletedIDs map[apply.IDKey]bool) (examples []string) {
	h.t.Helper()
	primary := h.documents(h.primary)
	dr := h.documents(h.dr)
	seen := map[apply.IDKey]int{}
	drByKey := map[apply.IDKey]bson.Raw{}
	for _, d := range dr {
		seen[d.key]++
		drByKey[d.key] = d.raw
	}
	for _, n := range seen {
		if n > 1 {
			l.DRDuplicates += n - 1
		}
	}
	inPrimary := map[apply.IDKey]bool{}
	for _, d := range primary {
		inPrimary[d.key] = true
		got, ok := drByKey[d.key]
		if !ok || !bytes.Equal(got, d.raw) {
			l.DRMismatch++
			if len(examples) < 3 {
				examples = append(examples, fmt.Sprintf("primary %s, DR %s", d.raw, got))
			}
		}
	}
	for key := range seen {
		if !inPrimary[key] && !deletedIDs[key] {
			l.DRUnexplained++
		}
	}
	return examples
}

type keyedDoc struct {
	key apply.IDKey
	raw bson.Raw
}

// documents returns every document of the watched collection, sorted by _id key.
func (h *harness) documents(c *mongo.Client) []keyedDoc {
	h.t.Helper()
	cur, err := c.Database(watchDB).Collection(watchColl).Find(h.ctx, bson.D{})
	if err != nil {
		h.t.Fatal(err)
	}
	defer cur.Close(h.ctx)
	var out []keyedDoc
	for cur.Next(h.ctx) {
		raw := append(bson.Raw(nil), cur.Current...)
		out = append(out, keyedDoc{key: apply.KeyOf(raw.Lookup("_id")), raw: raw})
	}
	if err := cur.Err(); err != nil {
		h.t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}
