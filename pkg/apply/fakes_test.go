package apply

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// fakeDR is an in-memory DR cluster. ReplaceOne and DeleteOne change its documents; UpdateOne only
// reports whether it matched (the update language is exercised against a real server in
// mongo_test.go). Every call is logged for comparison.
type fakeDR struct {
	docs  map[changeevent.Namespace]map[IDKey]bson.Raw
	calls []string
	bulks [][]Write
	// failBulk, when set, fails a bulk write; applyThenFail applies it first.
	failBulk      error
	applyThenFail bool
	failFind      error
}

func newFakeDR() *fakeDR { return &fakeDR{docs: map[changeevent.Namespace]map[IDKey]bson.Raw{}} }

func (f *fakeDR) coll(ns changeevent.Namespace) map[IDKey]bson.Raw {
	if f.docs[ns] == nil {
		f.docs[ns] = map[IDKey]bson.Raw{}
	}
	return f.docs[ns]
}

func (f *fakeDR) BulkWrite(_ context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	f.calls = append(f.calls, fmt.Sprintf("bulk %s %d", ns, len(writes)))
	f.bulks = append(f.bulks, append([]Write(nil), writes...))
	if f.failBulk != nil && !f.applyThenFail {
		return BulkResult{}, f.failBulk
	}
	var res BulkResult
	c := f.coll(ns)
	for _, w := range writes {
		k := KeyOf(w.ID)
		_, exists := c[k]
		switch w.Kind {
		case ReplaceOne:
			if exists {
				res.Matched++
			} else {
				res.Upserted++
			}
			c[k] = bytes.Clone(w.Doc)
		case UpdateOne:
			if exists {
				res.Matched++
			}
		case DeleteOne:
			if exists {
				res.Deleted++
				delete(c, k)
			}
		}
	}
	return res, f.failBulk
}

func (f *fakeDR) FindByIDs(_ context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error) {
	f.calls = append(f.calls, fmt.Sprintf("find %s %d", ns, len(ids)))
	if f.failFind != nil {
		return nil, f.failFind
	}
	out := map[IDKey]bson.Raw{}
	for _, id := range ids {
		if d, ok := f.coll(ns)[KeyOf(id)]; ok {
			out[KeyOf(id)] = d
		}
	}
	return out, nil
}

func (f *fakeDR) Drop(_ context.Context, ns changeevent.Namespace) error {
	f.calls = append(f.calls, "drop "+ns.String())
	delete(f.docs, ns)
	return nil
}

func (f *fakeDR) Rename(_ context.Context, from, to changeevent.Namespace) error {
	f.calls = append(f.calls, "rename "+from.String()+" "+to.String())
	f.docs[to] = f.docs[from]
	delete(f.docs, from)
	return nil
}

// fakeArchive is an in-memory object store.
type fakeArchive struct {
	mu      sync.Mutex
	objects map[string][]byte
	puts    int
	gets    int
	failPut func(key string) error
	failGet error
}

func newFakeArchive() *fakeArchive { return &fakeArchive{objects: map[string][]byte{}} }

func (a *fakeArchive) Put(_ context.Context, key string, body []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failPut != nil {
		if err := a.failPut(key); err != nil {
			return err
		}
	}
	a.puts++
	a.objects[key] = bytes.Clone(body)
	return nil
}

func (a *fakeArchive) Get(_ context.Context, key string) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gets++
	if a.failGet != nil {
		return nil, a.failGet
	}
	b, ok := a.objects[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, archive.ErrNotFound)
	}
	return bytes.Clone(b), nil
}

func (a *fakeArchive) keys(prefix string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ks []string
	for k := range a.objects {
		if strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

// records decodes the delete archive object at key.
func (a *fakeArchive) records(t testing.TB, key string) []archive.Record {
	t.Helper()
	lines, err := archive.DecodeObject(a.objects[key])
	if err != nil {
		t.Fatalf("object %s: %v", key, err)
	}
	recs := make([]archive.Record, len(lines))
	for i, l := range lines {
		if recs[i], err = archive.ParseLine(l); err != nil {
			t.Fatalf("object %s line %d: %v", key, i, err)
		}
	}
	return recs
}

// Building events and batches.

var (
	fooNS    = changeevent.Namespace{DB: "bar", Coll: "foo"}
	fixedNow = time.Date(2022, 7, 19, 20, 21, 0, 0, time.UTC)
	baseTS   = primitive.Timestamp{T: uint32(time.Date(2022, 7, 19, 20, 20, 22, 0, time.UTC).Unix()), I: 1}
)

func raw(t testing.TB, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func idOf(t testing.TB, id any) bson.RawValue {
	return raw(t, bson.D{{Key: "_id", Value: id}}).Lookup("_id")
}

// evt builds a valid event of op on ns; id is nil for collection-level events.
func evt(t testing.TB, op changeevent.OperationType, ns changeevent.Namespace, id any, full bson.D) changeevent.Event {
	t.Helper()
	e := changeevent.Event{
		Version:     changeevent.FormatVersion,
		Operation:   op,
		NS:          ns,
		ClusterTime: baseTS,
		ResumeToken: raw(t, bson.D{{Key: "_data", Value: "82" + string(op)}}),
	}
	if id != nil {
		e.DocumentKey = raw(t, bson.D{{Key: "_id", Value: id}})
	}
	if full != nil {
		e.FullDocument = raw(t, append(bson.D{{Key: "_id", Value: id}}, full...))
	}
	if op == changeevent.Rename {
		e.To = &changeevent.Namespace{DB: ns.DB, Coll: ns.Coll + "_renamed"}
	}
	return e
}

func update(t testing.TB, ns changeevent.Namespace, id any, set bson.D, removed []string, trunc []changeevent.TruncatedArray) changeevent.Event {
	e := evt(t, changeevent.Update, ns, id, nil)
	if set == nil {
		set = bson.D{}
	}
	e.UpdateDescription = &changeevent.UpdateDescription{UpdatedFields: raw(t, set), RemovedFields: removed, TruncatedArrays: trunc}
	return e
}

// record encodes an event as the event source mapping delivers it.
func record(t testing.TB, topic string, partition, offset int64, e changeevent.Event) events.KafkaRecord {
	t.Helper()
	val, err := changeevent.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	key, err := changeevent.Key(&e)
	if err != nil {
		t.Fatal(err)
	}
	var hdrs []map[string]events.JSONNumberBytes
	for _, h := range changeevent.Headers(&e) {
		hdrs = append(hdrs, map[string]events.JSONNumberBytes{h[0]: events.JSONNumberBytes(h[1])})
	}
	return events.KafkaRecord{
		Topic: topic, Partition: partition, Offset: offset,
		Timestamp: events.MilliSecondsEpochTime{Time: fixedNow},
		Key:       base64.StdEncoding.EncodeToString(key),
		Value:     base64.StdEncoding.EncodeToString(val),
		Headers:   hdrs,
	}
}

// batchOf puts events in one partition of topic "changevents", from offset 100.
func batchOf(t testing.TB, evs ...changeevent.Event) events.KafkaEvent {
	t.Helper()
	recs := make([]events.KafkaRecord, len(evs))
	for i, e := range evs {
		recs[i] = record(t, "changevents", 0, int64(100+i), e)
	}
	return events.KafkaEvent{EventSource: "aws:kafka", Records: map[string][]events.KafkaRecord{"changevents-0": recs}}
}

type handlerEnv struct {
	dr      *fakeDR
	ar      *fakeArchive
	h       *Handler
	logs    *bytes.Buffer
	metrics *bytes.Buffer
}

func newEnv(t testing.TB, opts Options) *handlerEnv {
	t.Helper()
	env := &handlerEnv{dr: newFakeDR(), ar: newFakeArchive(), logs: &bytes.Buffer{}, metrics: &bytes.Buffer{}}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(env.logs, nil))
	}
	if opts.Metrics == nil {
		opts.Metrics = env.metrics
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixedNow }
	}
	if opts.ArchivePrefix == "" {
		opts.ArchivePrefix = "docdbdr/"
	}
	h, err := New(env.dr, env.ar, opts)
	if err != nil {
		t.Fatal(err)
	}
	env.h = h
	return env
}

var errBoom = errors.New("boom")

var _ io.Writer = (*bytes.Buffer)(nil)

func discardLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }
