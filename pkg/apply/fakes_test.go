package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// fakeDR is an in-memory DR cluster and state database. ReplaceOne, InsertOne, DeleteOne and
// UpdateOne change its documents (an UpdateOne's $push/$set/$unset is applied with
// changeevent.UpdateDescription.ApplyTo, which is checked against a real server in pkg/changeevent).
// Every call is logged for comparison. It is safe for concurrent use.
type fakeDR struct {
	mu    sync.Mutex
	docs  map[changeevent.Namespace]map[IDKey]bson.Raw
	calls []string
	bulks [][]Write
	// failBulk, when set, fails a bulk write; applyThenFail applies it first.
	failBulk      error
	applyThenFail bool
	failFind      error
	// refuse, when set, is asked for each write; a non-nil *WriteError refuses it (and stops
	// the bulk there, as an ordered bulk write does).
	refuse func(ns changeevent.Namespace, w Write) *WriteError
	// failClaim, failWritten, failPending fail those ledger calls.
	failClaim, failWritten, failPending error

	ledger    map[string]LedgerEntry
	barriers  map[string]BarrierMarker
	frontiers map[string]Frontier
	history   map[changeevent.Namespace]time.Time // history markers
}

func newFakeDR() *fakeDR {
	return &fakeDR{docs: map[changeevent.Namespace]map[IDKey]bson.Raw{}, ledger: map[string]LedgerEntry{}, barriers: map[string]BarrierMarker{},
		frontiers: map[string]Frontier{}, history: map[changeevent.Namespace]time.Time{}}
}

func (f *fakeDR) coll(ns changeevent.Namespace) map[IDKey]bson.Raw {
	if f.docs[ns] == nil {
		f.docs[ns] = map[IDKey]bson.Raw{}
	}
	return f.docs[ns]
}

// doc returns the document with _id id in ns, or nil.
func (f *fakeDR) doc(ns changeevent.Namespace, id bson.RawValue) bson.Raw {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.docs[ns][KeyOf(id)]
}

func (f *fakeDR) log(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeDR) BulkWrite(_ context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("bulk %s %d", ns, len(writes))
	f.bulks = append(f.bulks, append([]Write(nil), writes...))
	if f.failBulk != nil && !f.applyThenFail {
		return BulkResult{}, f.failBulk
	}
	var res BulkResult
	c := f.coll(ns)
	for i, w := range writes {
		if f.refuse != nil {
			if we := f.refuse(ns, w); we != nil {
				we.Index = i
				return res, we
			}
		}
		k := KeyOf(w.ID)
		old, exists := c[k]
		switch w.Kind {
		case ReplaceOne:
			if exists {
				res.Matched++
			} else {
				res.Upserted++
			}
			c[k] = bytes.Clone(w.Doc)
		case InsertOne:
			if exists {
				return res, &WriteError{Index: i, Code: 11000, Message: "E11000 duplicate key error collection: " + ns.String() + " index: _id_ dup key"}
			}
			res.Inserted++
			c[k] = bytes.Clone(w.Doc)
		case UpdateOne:
			if !exists {
				continue
			}
			res.Matched++
			post, err := updateDescriptionOf(w.Doc).ApplyTo(old)
			if err != nil {
				return res, &WriteError{Index: i, Code: 28, Message: err.Error()}
			}
			c[k] = post
		case DeleteOne:
			if exists {
				res.Deleted++
				delete(c, k)
			}
		}
	}
	return res, f.failBulk
}

// updateDescriptionOf reads an UpdateOne document ($push {$each: [], $slice}, $set, $unset) back
// as the update description it was made from.
func updateDescriptionOf(u bson.Raw) *changeevent.UpdateDescription {
	ud := &changeevent.UpdateDescription{}
	if set, ok := u.Lookup("$set").DocumentOK(); ok {
		ud.UpdatedFields = set
	}
	if unset, ok := u.Lookup("$unset").DocumentOK(); ok {
		elems, _ := unset.Elements()
		for _, e := range elems {
			ud.RemovedFields = append(ud.RemovedFields, e.Key())
		}
	}
	if push, ok := u.Lookup("$push").DocumentOK(); ok {
		elems, _ := push.Elements()
		for _, e := range elems {
			n, _ := e.Value().Document().Lookup("$slice").AsInt64OK()
			ud.TruncatedArrays = append(ud.TruncatedArrays, changeevent.TruncatedArray{Field: e.Key(), NewSize: int32(n)})
		}
	}
	return ud
}

func (f *fakeDR) FindByIDs(_ context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("find %s %d", ns, len(ids))
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

func (f *fakeDR) ScanIDs(_ context.Context, ns changeevent.Namespace, fn func([]bson.RawValue) error) error {
	f.mu.Lock()
	f.log("scan %s", ns)
	var ids []bson.RawValue
	for _, d := range f.docs[ns] {
		ids = append(ids, d.Lookup("_id"))
	}
	f.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return KeyOf(ids[i]) < KeyOf(ids[j]) })
	for start := 0; start < len(ids); start += 3 { // small batches, to exercise batching
		if err := fn(ids[start:min(start+3, len(ids))]); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeDR) Collections(_ context.Context, db string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for ns := range f.docs {
		if ns.DB == db {
			out = append(out, ns.Coll)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (f *fakeDR) Drop(_ context.Context, ns changeevent.Namespace) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("drop %s", ns)
	delete(f.docs, ns)
	return nil
}

func (f *fakeDR) Rename(_ context.Context, from, to changeevent.Namespace) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("rename %s %s", from, to)
	if _, ok := f.docs[from]; !ok {
		return nil
	}
	if _, ok := f.docs[to]; ok {
		return fmt.Errorf("rename: %w", ErrNamespaceExists)
	}
	f.docs[to] = f.docs[from]
	delete(f.docs, from)
	return nil
}

func (f *fakeDR) StateDB() string { return DefaultStateDB }

func (f *fakeDR) EnsureState(context.Context) error { return nil }

func (f *fakeDR) Archived(_ context.Context, ids []string) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for _, id := range ids {
		if _, ok := f.ledger[id]; ok {
			out[id] = true
		}
	}
	return out, nil
}

func (f *fakeDR) Claim(_ context.Context, entries []LedgerEntry) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("claim %d", len(entries))
	if f.failClaim != nil {
		return nil, f.failClaim
	}
	taken := map[string]bool{}
	for _, e := range entries {
		if _, ok := f.ledger[e.EventID]; ok {
			taken[e.EventID] = true
			continue
		}
		e.Line = bytes.Clone(e.Line)
		f.ledger[e.EventID] = e
	}
	return taken, nil
}

func (f *fakeDR) Written(_ context.Context, ids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWritten != nil {
		return f.failWritten
	}
	for _, id := range ids {
		if e, ok := f.ledger[id]; ok {
			e.State, e.Line = StateWritten, nil
			f.ledger[id] = e
		}
	}
	return nil
}

func (f *fakeDR) Pending(_ context.Context, topic string, partitions []int64) ([]LedgerEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPending != nil {
		return nil, f.failPending
	}
	var out []LedgerEntry
	for _, e := range f.ledger {
		if e.State == StatePending && e.Topic == topic && slices.Contains(partitions, e.Partition) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeDR) Frontiers(_ context.Context, topic string, partitions []int64) ([]Frontier, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Frontier
	for _, fr := range f.frontiers {
		if fr.Topic == topic && slices.Contains(partitions, fr.Partition) {
			fr.ClusterTimes = maps.Clone(fr.ClusterTimes)
			out = append(out, fr)
		}
	}
	return out, nil
}

func (f *fakeDR) SetFrontiers(_ context.Context, fs []Frontier) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fr := range fs {
		fr.ClusterTimes = maps.Clone(fr.ClusterTimes)
		f.frontiers[fmt.Sprintf("%s/%d", fr.Topic, fr.Partition)] = fr
	}
	return nil
}

func (f *fakeDR) Barrier(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.barriers[id].State, nil
}

func (f *fakeDR) SetBarrier(_ context.Context, m BarrierMarker) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("barrier %s %s", m.ID[len(m.ID)-2:], m.State)
	f.barriers[m.ID] = m
	return nil
}

func (f *fakeDR) MarkHistory(_ context.Context, nss []changeevent.Namespace, since time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ns := range nss {
		if _, ok := f.history[ns]; !ok {
			f.history[ns] = since
		}
	}
	return nil
}

func (f *fakeDR) ClearHistory(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.history)
	return nil
}

// fakeArchive is an in-memory object store with S3's conditional writes: Put never replaces an
// object. It is safe for concurrent use.
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
	if _, ok := a.objects[key]; ok {
		return nil // a conditional write: an object is never overwritten
	}
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
	switch {
	case !ok && strings.HasPrefix(key, "denied/"):
		// As S3 answers a role without s3:ListBucket for a missing key.
		return nil, fmt.Errorf("get %s: %w", key, archive.ErrAccessDenied)
	case !ok:
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
	a.mu.Lock()
	body := a.objects[key]
	a.mu.Unlock()
	lines, err := archive.DecodeObject(body)
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
	retoken(t, &e)
	return e
}

// retoken gives an event a resume token of its own content: different events of a test get
// different tokens (and so event ids), the same event built twice the same one.
func retoken(t testing.TB, e *changeevent.Event) {
	e.ResumeToken = nil
	b, err := changeevent.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	e.ResumeToken = raw(t, bson.D{{Key: "_data", Value: "82" + string(e.Operation) + hex.EncodeToString(sum[:4])}})
}

func update(t testing.TB, ns changeevent.Namespace, id any, set bson.D, removed []string, trunc []changeevent.TruncatedArray) changeevent.Event {
	e := evt(t, changeevent.Update, ns, id, nil)
	if set == nil {
		set = bson.D{}
	}
	e.UpdateDescription = &changeevent.UpdateDescription{UpdatedFields: raw(t, set), RemovedFields: removed, TruncatedArrays: trunc}
	retoken(t, &e)
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

// nextOffset is the offset batchOf gives its next record: batches follow each other in the
// partition, as the event source mapping delivers them (newEnv starts a test at 100).
var nextOffset atomic.Int64

func init() { nextOffset.Store(100) }

// batchOf puts events in one partition of topic "changevents", after the previous batch.
func batchOf(t testing.TB, evs ...changeevent.Event) events.KafkaEvent {
	t.Helper()
	recs := make([]events.KafkaRecord, len(evs))
	first := nextOffset.Add(int64(len(evs))) - int64(len(evs))
	for i, e := range evs {
		recs[i] = record(t, "changevents", 0, first+int64(i), e)
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
	nextOffset.Store(100)
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
	h.claimID = func() string { return "claim" }
	env.h = h
	return env
}

// historyLines returns every line of every version history object, objects in key order.
func (a *fakeArchive) historyLines(t testing.TB) []archive.Record {
	t.Helper()
	var out []archive.Record
	for _, k := range a.keys("docdbdr/history/") {
		out = append(out, a.records(t, k)...)
	}
	return out
}

// lines returns every line of every delete archive object, objects in key order.
func (a *fakeArchive) lines(t testing.TB) []archive.Record {
	t.Helper()
	var out []archive.Record
	for _, k := range a.keys("docdbdr/deletes/") {
		out = append(out, a.records(t, k)...)
	}
	return out
}

var errBoom = errors.New("boom")

var _ io.Writer = (*bytes.Buffer)(nil)

func discardLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }
