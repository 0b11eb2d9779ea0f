package e2e

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
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
		if db != "admin" && db != "config" && db != "local" {
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
	at    archive.Kafka
	ns    ns
	event string // the resume token: the same delete event published twice has the same one
}

// checkArchive checks the archive against the topic and the workload: each delete record in
// Kafka is archived exactly once (by Kafka coordinates), the archived events are exactly the
// workload's delete events on watched collections (by resume token), and nothing else is
// archived. When capture replayed deletes after a crash, Kafka holds them twice and so does the
// archive, at different coordinates: at-least-once, deduplicated by readers.
func checkArchive(ctx context.Context, t *testing.T, p *localrun.Pipeline, w *workload, st *devstack.Stack) {
	t.Helper()
	deletes, records := readTopic(t, st, w)

	layout := archive.Layout{Prefix: p.ApplyConfig().Archive.Prefix}
	var lines []archive.Record
	seenDBs := map[string]bool{}
	for _, n := range slices.Concat(w.watched, w.others) {
		if seenDBs[n.db] {
			continue
		}
		seenDBs[n.db] = true
		keys, err := p.Archive().List(ctx, layout.DeletesPrefix(n.db, ""))
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			body, err := p.Archive().Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			ls, err := archive.DecodeObject(body)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			for _, l := range ls {
				r, err := archive.ParseLine(l)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				lines = append(lines, r)
			}
		}
	}

	watched := map[ns]bool{}
	for _, n := range w.watched {
		watched[n] = true
	}
	byCoord := map[archive.Kafka]int{}
	archivedEvents := map[string]bool{}
	for _, r := range lines {
		if r.Operation != "delete" || !watched[ns{r.DB, r.Coll}] {
			t.Errorf("archived a %s on %s.%s, which the workload never made on a watched collection", r.Operation, r.DB, r.Coll)
		}
		byCoord[r.Kafka]++
		archivedEvents[string(r.ResumeToken)] = true
	}
	kafkaCoords := map[archive.Kafka]bool{}
	kafkaEvents := map[string]bool{}
	for _, d := range deletes {
		kafkaCoords[d.at] = true
		kafkaEvents[d.event] = true
	}
	var problems []string
	for at, n := range byCoord {
		if n != 1 {
			problems = append(problems, fmt.Sprintf("Kafka record %+v archived %d times", at, n))
		}
		if !kafkaCoords[at] {
			problems = append(problems, fmt.Sprintf("archived record at %+v is not a delete record in Kafka", at))
		}
	}
	for at := range kafkaCoords {
		if byCoord[at] == 0 {
			problems = append(problems, fmt.Sprintf("delete record at %+v was never archived", at))
		}
	}
	sort.Strings(problems)
	if len(problems) > maxDiffs {
		problems = append(problems[:maxDiffs], "...")
	}
	if len(problems) > 0 {
		t.Errorf("archive versus Kafka:\n%s", join(problems))
	}

	wantEvents := 0
	for _, n := range w.watched {
		wantEvents += w.deletes[n]
	}
	if len(kafkaEvents) != wantEvents {
		t.Errorf("Kafka holds %d distinct delete events, the workload made %d on watched collections", len(kafkaEvents), wantEvents)
	}
	if len(archivedEvents) != wantEvents {
		t.Errorf("the archive holds %d distinct delete events, the workload made %d on watched collections", len(archivedEvents), wantEvents)
	}
	for ev := range archivedEvents {
		if !kafkaEvents[ev] {
			t.Errorf("archived delete event %s is not in Kafka", ev)
		}
	}
	if len(lines) != len(deletes) {
		t.Errorf("the archive holds %d lines, Kafka %d delete records", len(lines), len(deletes))
	}
	t.Logf("archive: %d lines = %d delete records in Kafka = %d delete events + %d replayed by capture after crashes; %d Kafka records in all",
		len(lines), len(deletes), wantEvents, len(deletes)-wantEvents, records)
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
						at:    archive.Kafka{Topic: st.Topic, Partition: int64(part), Offset: m.Offset},
						ns:    n,
						event: resumeTokenJSON(t, ev.ResumeToken),
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

// resumeTokenJSON renders a resume token as the archive does (canonical Extended JSON).
func resumeTokenJSON(t *testing.T, tok bson.Raw) string {
	js, err := bson.MarshalExtJSON(tok, true, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}
