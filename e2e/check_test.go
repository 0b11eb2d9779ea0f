package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
	"github.com/docdb-dr/docdb-dr/pkg/verify"
)

// maxDiffs bounds the differences printed per check.
const maxDiffs = 10

// checkDR compares DR with the model, byte for byte: every watched document the primary has,
// at its current version, and every deleted one at the version its last delete removed; nothing
// else, and nothing of the ignored namespaces. It first checks the model against the primary.
func checkDR(ctx context.Context, t *testing.T, p *localrun.Pipeline, w *workload) {
	t.Helper()
	for _, n := range slices.Concat(w.watched, w.others) {
		got := readAll(ctx, t, p.Primary(), n)
		want := map[idKey]bson.Raw{}
		for k, d := range w.models[n].docs {
			if d.current != nil {
				want[k] = d.current
			}
		}
		if diffs := compare(want, got); len(diffs) > 0 {
			t.Fatalf("the workload's model of the primary's %s is wrong (a bug in the test):\n%s", n, join(diffs))
		}
	}

	wantColls := map[string][]string{}
	for _, n := range w.watched {
		want := map[idKey]bson.Raw{}
		for k, d := range w.models[n].docs {
			if d.current != nil {
				want[k] = d.current
			} else {
				want[k] = d.beforeLastDel
			}
		}
		if len(want) > 0 {
			wantColls[n.db] = append(wantColls[n.db], n.coll)
		}
		got := readAll(ctx, t, p.DR(), n)
		if diffs := compare(want, got); len(diffs) > 0 {
			t.Errorf("DR %s differs from the primary plus the intercepted documents (%d expected, %d in DR):\n%s", n, len(want), len(got), join(diffs))
		}
	}

	// Only the watched namespaces exist in DR.
	dbs, err := p.DR().ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var gotDBs, wantDBs []string
	for _, db := range dbs {
		if db != "admin" && db != "config" && db != "local" && db != p.ApplyConfig().StateDB {
			gotDBs = append(gotDBs, db)
		}
	}
	for db, colls := range wantColls {
		wantDBs = append(wantDBs, db)
		got, err := p.DR().Database(db).ListCollectionNames(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(got)
		sort.Strings(colls)
		if !slices.Equal(got, colls) {
			t.Errorf("DR database %s has collections %v, want %v", db, got, colls)
		}
	}
	sort.Strings(gotDBs)
	sort.Strings(wantDBs)
	if !slices.Equal(gotDBs, wantDBs) {
		t.Errorf("DR has databases %v, want %v", gotDBs, wantDBs)
	}
}

// readAll returns every document of a namespace, raw, by _id.
func readAll(ctx context.Context, t *testing.T, c *mongo.Client, n ns) map[idKey]bson.Raw {
	t.Helper()
	cur, err := c.Database(n.db).Collection(n.coll).Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	out := map[idKey]bson.Raw{}
	for cur.Next(ctx) {
		doc := slices.Clone(cur.Current)
		out[keyOf(doc.Lookup("_id"))] = doc
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// compare lists the differences between two sets of documents, at most maxDiffs.
func compare(want, got map[idKey]bson.Raw) []string {
	var diffs []string
	keys := make([]idKey, 0, len(want)+len(got))
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		w, inWant := want[k]
		g, inGot := got[k]
		var d string
		switch {
		case !inGot:
			d = "missing:    " + ext(w)
		case !inWant:
			d = "unexpected: " + ext(g)
		case !bytes.Equal(w, g):
			d = "differs:    want " + ext(w) + "\n                 got  " + ext(g)
		default:
			continue
		}
		if len(diffs) == maxDiffs {
			return append(diffs, "...")
		}
		diffs = append(diffs, d)
	}
	return diffs
}

func ext(doc bson.Raw) string {
	b, err := bson.MarshalExtJSON(doc, true, false)
	if err != nil {
		return doc.String()
	}
	return string(b)
}

func join(lines []string) string {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// kafkaDelete is one delete record in the topic.
type kafkaDelete struct {
	at      archive.Kafka
	ns      ns
	eventID string // the same delete event published twice has the same one
}

// archiveCounts is the oracle's verdict on the archive, for the log and docs/reliability.md.
type archiveCounts struct {
	lines, events      int // archive lines; delete events the workload made on watched collections
	missing, duplicate int // events with no line; events with more than one
	null, wrong        int // lines whose before is null; lines whose before is not the version deleted
	inexact            int // lines marked beforeExact: false
	inexactNotes       map[string]int
	republished        int // delete records in Kafka beyond one per event (capture's replays)
}

// checkArchive is the archive's oracle. It checks the archive against the primary's own history
// as the workload recorded it: every delete the workload made on a watched collection has
// exactly one line (by eventId), whose before is byte for byte the version that delete removed;
// no line for anything else. Kafka is read too: its delete events are exactly the workload's, so
// a line for an event Kafka never held is caught, and the republished copies capture left
// after crashes are counted.
func checkArchive(ctx context.Context, t *testing.T, p *localrun.Pipeline, w *workload, st *devstack.Stack) archiveCounts {
	t.Helper()
	deletes, records := readTopic(t, st, w)
	lines := readArchive(ctx, t, p, w)

	watched := map[ns]bool{}
	for _, n := range w.watched {
		watched[n] = true
	}
	kafkaEvents := map[string]bool{}
	for _, d := range deletes {
		kafkaEvents[d.eventID] = true
	}
	c := archiveCounts{lines: len(lines), republished: len(deletes) - len(kafkaEvents), inexactNotes: map[string]int{}}
	for _, n := range w.watched {
		c.events += w.deletes[n]
	}

	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	perEvent := map[string]int{}
	type docKey struct {
		n  ns
		id idKey
	}
	perDoc := map[docKey][]archive.Record{}
	for _, r := range lines {
		n := ns{r.DB, r.Coll}
		if r.Operation != "delete" || !watched[n] {
			problem("archived a %s on %s, which the workload never made on a watched collection", r.Operation, n)
			continue
		}
		perEvent[r.EventID]++
		if !kafkaEvents[r.EventID] {
			problem("archived delete event %s is not in Kafka", r.EventID)
		}
		id, err := r.IDValue()
		if err != nil {
			t.Fatalf("line %s: %v", r.EventID, err)
		}
		k := docKey{n, keyOf(id)}
		perDoc[k] = append(perDoc[k], r)
	}
	for ev, k := range perEvent {
		if k > 1 {
			c.duplicate++
			problem("event %s has %d lines", ev, k)
		}
	}
	for ev := range kafkaEvents {
		if perEvent[ev] == 0 {
			c.missing++
			problem("delete event %s (in Kafka) has no archive line", ev)
		}
	}
	if len(kafkaEvents) != c.events {
		problem("Kafka holds %d distinct delete events, the workload made %d on watched collections", len(kafkaEvents), c.events)
	}

	// The before-images: a document's lines in cluster-time order are its deletes in the order
	// the workload made them (one _id is deleted at most once per cluster time).
	for _, n := range w.watched {
		for k, d := range w.models[n].docs {
			got := perDoc[docKey{n, k}]
			slices.SortFunc(got, func(a, b archive.Record) int {
				ta, _ := a.ClusterTimestamp()
				tb, _ := b.ClusterTimestamp()
				return ta.Compare(tb)
			})
			got = slices.CompactFunc(got, func(a, b archive.Record) bool { return a.EventID == b.EventID })
			if len(got) != len(d.deletedVersions) {
				problem("%s %s: deleted %d times, %d distinct lines", n, ext(bson.Raw(idDoc(d.id))), len(d.deletedVersions), len(got))
				continue
			}
			for i, r := range got {
				before, err := r.BeforeDocument()
				if err != nil {
					t.Fatalf("line %s: %v", r.EventID, err)
				}
				if !r.BeforeExact {
					c.inexact++
					c.inexactNotes[r.BeforeNote]++
				}
				switch {
				case before == nil:
					c.null++
					problem("event %s (%s delete %d of %s): before is null (%s), the version deleted was %s", r.EventID, n, i+1, ext(idDoc(d.id)), r.BeforeNote, ext(d.deletedVersions[i]))
				case !bytes.Equal(before, d.deletedVersions[i]):
					c.wrong++
					problem("event %s (%s delete %d of %s, exact %v): before is %s, the version deleted was %s", r.EventID, n, i+1, ext(idDoc(d.id)), r.BeforeExact, ext(before), ext(d.deletedVersions[i]))
				}
			}
		}
	}
	sort.Strings(problems)
	if len(problems) > maxDiffs {
		problems = append(problems[:maxDiffs], fmt.Sprintf("... (%d in all)", len(problems)))
	}
	if len(problems) > 0 {
		t.Errorf("archive versus the primary's history:\n%s", join(problems))
	}
	t.Logf("archive: %d lines for %d delete events: %d missing, %d duplicate, %d null, %d wrong, %d inexact before-images; Kafka: %d delete records (%d republished by capture after crashes), %d records in all",
		c.lines, c.events, c.missing, c.duplicate, c.null, c.wrong, c.inexact, len(deletes), c.republished, records)
	for note, k := range c.inexactNotes {
		t.Logf("  inexact (%d): %s", k, note)
	}
	return c
}

// readArchive returns every line of the delete archive under the databases the workload wrote,
// read the way restore and verify read it.
func readArchive(ctx context.Context, t *testing.T, p *localrun.Pipeline, w *workload) []archive.Record {
	t.Helper()
	reader := restore.ArchiveReader{Store: p.Archive(), Layout: archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}}
	var lines []archive.Record
	seenDBs := map[string]bool{}
	for _, n := range slices.Concat(w.watched, w.others) {
		if seenDBs[n.db] {
			continue
		}
		seenDBs[n.db] = true
		err := reader.Records(ctx, n.db, "", time.Time{}, time.Time{}, func(r archive.Record) error {
			lines = append(lines, r)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return lines
}

// idDoc wraps an _id in a document, for printing.
func idDoc(id bson.RawValue) bson.Raw {
	doc, _ := bson.Marshal(bson.D{{Key: "_id", Value: id}})
	return doc
}

// readTopic reads the whole topic, checks that every record belongs to a watched namespace
// (capture must never publish anything else), and returns its delete records and the number of
// records.
func readTopic(t *testing.T, st *devstack.Stack, w *workload) ([]kafkaDelete, int) {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Consumer.MaxWaitTime = 50 * time.Millisecond
	client, err := sarama.NewClient(st.KafkaBrokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	parts, err := client.Partitions(st.Topic)
	if err != nil {
		t.Fatal(err)
	}
	watched := map[ns]bool{}
	for _, n := range w.watched {
		watched[n] = true
	}
	var deletes []kafkaDelete
	records := 0
	for _, part := range parts {
		end, err := client.GetOffset(st.Topic, part, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		start, err := client.GetOffset(st.Topic, part, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		if start >= end {
			continue
		}
		pc, err := consumer.ConsumePartition(st.Topic, part, start)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
		for offset := start; offset < end; {
			select {
			case m := <-pc.Messages():
				offset = m.Offset + 1
				records++
				ev, err := changeevent.Unmarshal(m.Value)
				if err != nil {
					t.Fatalf("record %d/%d: %v", part, m.Offset, err)
				}
				n := ns{ev.NS.DB, ev.NS.Coll}
				if !watched[n] {
					t.Errorf("capture published a %s on %s, which is not watched", ev.Operation, n)
				}
				if ev.Operation == changeevent.Delete {
					deletes = append(deletes, kafkaDelete{
						at:      archive.Kafka{Topic: st.Topic, Partition: int64(part), Offset: m.Offset},
						ns:      n,
						eventID: ev.EventID(),
					})
				}
			case err := <-pc.Errors():
				t.Fatal(err)
			case <-timeout:
				t.Fatalf("reading partition %d: stuck before offset %d of %d", part, offset, end)
			}
		}
		_ = pc.Close()
	}
	return deletes, records
}

// checkRestore is the restore round trip: every intercepted delete of the run is restored from
// DR (restore.Run, what `docdbdr restore --apply` does) into a fresh, empty primary, which must
// then hold, byte for byte, the version each delete removed for every document still deleted,
// and DR's copy of the live version for a document written again after its delete (restore
// copies DR's version, and DR follows the primary).
func checkRestore(ctx context.Context, t *testing.T, p *localrun.Pipeline, w *workload) {
	t.Helper()
	_, fresh := mongotest.Start(t, mongoserver.Options{})
	reader := restore.ArchiveReader{Store: p.Archive(), Layout: archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}}
	restored := 0
	for _, n := range w.watched {
		rep, err := restore.Run(ctx, restore.Options{Primary: fresh, DR: p.DR(), Archive: reader,
			Select: restore.Selection{DB: n.db, Coll: n.coll}, Apply: true, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
		if err != nil {
			t.Fatalf("restore %s: %v", n, err)
		}
		want := map[idKey]bson.Raw{}
		for k, d := range w.models[n].docs {
			switch {
			case len(d.deletedVersions) == 0:
			case d.current == nil:
				want[k] = d.deletedVersions[len(d.deletedVersions)-1]
			default:
				want[k] = d.current
			}
		}
		if diffs := compare(want, readAll(ctx, t, fresh, n)); len(diffs) > 0 {
			t.Errorf("restoring %s's intercepted deletes into a fresh primary (%d restored):\n%s", n, rep.Restored, join(diffs))
		}
		restored += rep.Restored
	}
	t.Logf("restore round trip: %d documents restored into a fresh primary, byte for byte", restored)
}

// checkVerifyArchive runs the operator's archive check (docdbdr verify --archive) over the run:
// it must agree with the oracle, from the primary's change stream and the archive alone.
func checkVerifyArchive(ctx context.Context, t *testing.T, p *localrun.Pipeline, c archiveCounts, started time.Time) {
	t.Helper()
	reader := restore.ArchiveReader{Store: p.Archive(), Layout: archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}}
	rep, err := verify.CheckArchive(ctx, verify.ArchiveOptions{Primary: p.Primary(), Scope: p.Scope(), Archive: reader,
		Since: started.Add(-time.Second), Settle: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != c.events || rep.Lines != c.lines || rep.Missing != c.missing || rep.Duplicated != c.duplicate ||
		rep.NullBefore != c.null || rep.Inexact != c.inexact || rep.InFlight != 0 || rep.Unknown != 0 {
		t.Errorf("verify --archive disagrees with the oracle: %+v, oracle %+v", rep, c)
	}
}
