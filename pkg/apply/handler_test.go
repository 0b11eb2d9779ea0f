package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

const deletesKey = "docdbdr/deletes/db=bar/coll=foo/dt=2022-07-19/changevents-0-100.json.gz"

func TestHandleOperationsUnderDefaultPolicy(t *testing.T) {
	full := bson.D{{Key: "x", Value: int32(1)}}
	tests := []struct {
		name       string
		ev         changeevent.Event
		wantWrites []string // kind and update document as Extended JSON
		wantCalls  []string
		wantLines  []string // operations archived
	}{
		{
			name:       "insert is an upserting replace",
			ev:         evt(t, changeevent.Insert, fooNS, int32(1), full),
			wantWrites: []string{`replaceOne {"_id":{"$numberInt":"1"},"x":{"$numberInt":"1"}}`},
			wantCalls:  []string{"bulk bar.foo 1"},
		},
		{
			name:       "replace is an upserting replace",
			ev:         evt(t, changeevent.Replace, fooNS, int32(1), full),
			wantWrites: []string{`replaceOne {"_id":{"$numberInt":"1"},"x":{"$numberInt":"1"}}`},
			wantCalls:  []string{"bulk bar.foo 1"},
		},
		{
			name: "update with the looked-up document replaces with it",
			ev: func() changeevent.Event {
				e := update(t, fooNS, int32(1), bson.D{{Key: "x", Value: int32(1)}}, nil, nil)
				e.FullDocument = raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "x", Value: int32(1)}})
				return e
			}(),
			wantWrites: []string{`replaceOne {"_id":{"$numberInt":"1"},"x":{"$numberInt":"1"}}`},
			wantCalls:  []string{"bulk bar.foo 1"},
		},
		{
			name:       "update without it sets, unsets and truncates",
			ev:         update(t, fooNS, int32(1), bson.D{{Key: "a.b", Value: int32(2)}}, []string{"c"}, []changeevent.TruncatedArray{{Field: "arr", NewSize: 1}}),
			wantWrites: []string{`updateOne {"$push":{"arr":{"$each":[],"$slice":{"$numberInt":"1"}}},"$set":{"a.b":{"$numberInt":"2"}},"$unset":{"c":""}}`},
			wantCalls:  []string{"bulk bar.foo 1"},
		},
		{
			name: "truncation of a path that is also set is a separate update, first",
			ev:   update(t, fooNS, int32(1), bson.D{{Key: "arr.1", Value: int32(9)}}, nil, []changeevent.TruncatedArray{{Field: "arr", NewSize: 2}}),
			wantWrites: []string{
				`updateOne {"$push":{"arr":{"$each":[],"$slice":{"$numberInt":"2"}}}}`,
				`updateOne {"$set":{"arr.1":{"$numberInt":"9"}}}`,
			},
			wantCalls: []string{"bulk bar.foo 2"},
		},
		{
			name:      "update that changes nothing writes nothing",
			ev:        update(t, fooNS, int32(1), nil, nil, nil),
			wantCalls: nil,
		},
		{
			name:      "delete is archived with its before-image, not applied",
			ev:        evt(t, changeevent.Delete, fooNS, int32(1), nil),
			wantCalls: []string{"find bar.foo 1"},
			wantLines: []string{"delete"},
		},
		{
			name:      "drop is archived, not applied",
			ev:        evt(t, changeevent.Drop, fooNS, nil, nil),
			wantLines: []string{"drop"},
		},
		{
			name:      "rename is archived, not applied",
			ev:        evt(t, changeevent.Rename, fooNS, nil, nil),
			wantLines: []string{"rename"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, Options{})
			sum, err := env.h.Handle(context.Background(), batchOf(t, tt.ev))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, bulk := range env.dr.bulks {
				for _, w := range bulk {
					js, _ := bson.MarshalExtJSON(w.Doc, true, false)
					got = append(got, w.Kind.String()+" "+string(js))
				}
			}
			assertStrings(t, "writes", got, tt.wantWrites)
			assertStrings(t, "DR calls", env.dr.calls, tt.wantCalls)
			var lines []string
			for _, k := range env.ar.keys("docdbdr/deletes/") {
				for _, r := range env.ar.records(t, k) {
					lines = append(lines, r.Operation)
				}
			}
			assertStrings(t, "archived", lines, tt.wantLines)
			if sum.Records != 1 || sum.ByOp[string(tt.ev.Operation)] != 1 || sum.Archived != len(tt.wantLines) {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}

func TestDeleteArchiveRecord(t *testing.T) {
	env := newEnv(t, Options{})
	inserted := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "x", Value: int32(2)}})
	if _, err := env.h.Handle(context.Background(), batchOf(t, inserted)); err != nil {
		t.Fatal(err)
	}
	del := evt(t, changeevent.Delete, fooNS, int32(1), nil)
	if _, err := env.h.Handle(context.Background(), batchOf(t, del)); err != nil {
		t.Fatal(err)
	}
	lines, err := archive.DecodeObject(env.ar.objects[deletesKey])
	if err != nil || len(lines) != 1 {
		t.Fatalf("lines %q, %v", lines, err)
	}
	want := `{"_id":{"$numberInt":"1"},"operation":"delete","timestamp":1658262022,"timestampReadable":"2022-07-19 20:20:22",` +
		`"db":"bar","coll":"foo","clusterTime":{"$timestamp":{"t":1658262022,"i":1}},"resumeToken":{"_data":"82delete"},` +
		`"kafka":{"topic":"changevents","partition":0,"offset":100},"before":{"_id":{"$numberInt":"1"},"x":{"$numberInt":"2"}}}`
	if string(lines[0]) != want {
		t.Errorf("line\n got %s\nwant %s", lines[0], want)
	}
}

func TestPolicies(t *testing.T) {
	del := evt(t, changeevent.Delete, fooNS, int32(1), nil)
	tests := []struct {
		policy    string
		ev        changeevent.Event
		wantCalls []string
		wantLines int
	}{
		{"delete=apply", del, []string{"bulk bar.foo 1"}, 0},
		{"delete=apply+archive", del, []string{"find bar.foo 1", "bulk bar.foo 1"}, 1},
		{"drop=apply", evt(t, changeevent.Drop, fooNS, nil, nil), []string{"drop bar.foo"}, 0},
		{"drop=apply+archive", evt(t, changeevent.Drop, fooNS, nil, nil), []string{"drop bar.foo"}, 1},
		{"rename=apply", evt(t, changeevent.Rename, fooNS, nil, nil), []string{"rename bar.foo bar.foo_renamed"}, 0},
		{"dropDatabase=apply", evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil), []string{"drop bar"}, 0},
		{"dropDatabase=archive", evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil), nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			p, err := ParsePolicy(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			env := newEnv(t, Options{Policy: &p})
			sum, err := env.h.Handle(context.Background(), batchOf(t, tt.ev))
			if err != nil {
				t.Fatal(err)
			}
			assertStrings(t, "DR calls", env.dr.calls, tt.wantCalls)
			if sum.Archived != tt.wantLines || len(env.ar.keys("docdbdr/deletes/")) != min(tt.wantLines, 1) {
				t.Errorf("archived %d lines in %v, want %d", sum.Archived, env.ar.keys(""), tt.wantLines)
			}
		})
	}
	t.Run("dropDatabase key uses _ for the collection", func(t *testing.T) {
		env := newEnv(t, Options{})
		if _, err := env.h.Handle(context.Background(), batchOf(t, evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil))); err != nil {
			t.Fatal(err)
		}
		assertStrings(t, "keys", env.ar.keys(""), []string{"docdbdr/deletes/db=bar/coll=_/dt=2022-07-19/changevents-0-100.json.gz"})
	})
}

func TestNamespaceMapping(t *testing.T) {
	m, err := ParseNamespaceMap("bar.foo=bar_dr.foo2,bar=bar_dr")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := ParsePolicy("drop=apply+archive,rename=apply")
	env := newEnv(t, Options{NamespaceMap: m, Policy: &p})
	other := changeevent.Namespace{DB: "bar", Coll: "exa"}
	_, err = env.h.Handle(context.Background(), batchOf(t,
		evt(t, changeevent.Insert, fooNS, int32(1), bson.D{}),
		evt(t, changeevent.Insert, other, int32(1), bson.D{}),
		evt(t, changeevent.Delete, other, int32(1), nil),
		evt(t, changeevent.Rename, other, nil, nil),
		evt(t, changeevent.Drop, fooNS, nil, nil),
	))
	if err != nil {
		t.Fatal(err)
	}
	assertStrings(t, "DR calls", env.dr.calls, []string{
		"bulk bar_dr.exa 1",                       // the delete of exa 1 must see its insert
		"bulk bar_dr.foo2 1", "find bar_dr.exa 1", // the rename runs after everything before it
		"rename bar_dr.exa bar_dr.exa_renamed", "drop bar_dr.foo2",
	})
	// The archive is keyed by the primary's namespace.
	assertStrings(t, "keys", env.ar.keys(""), []string{
		"docdbdr/deletes/db=bar/coll=exa/dt=2022-07-19/changevents-0-102.json.gz",
		"docdbdr/deletes/db=bar/coll=foo/dt=2022-07-19/changevents-0-104.json.gz",
	})
	if recs := env.ar.records(t, env.ar.keys("")[0]); len(recs) != 1 || string(recs[0].Before) != `{"_id":{"$numberInt":"1"}}` {
		t.Errorf("before-image from the mapped namespace: %+v", recs)
	}
}

func TestPoisonRecordsAreDeadLettered(t *testing.T) {
	good := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})
	v2 := good
	v2.Version = 2
	noFull := evt(t, changeevent.Insert, fooNS, int32(1), nil)
	enc := func(e changeevent.Event) string {
		b, _ := bson.Marshal(e) // bypasses Marshal's checks on purpose
		return base64.StdEncoding.EncodeToString(b)
	}
	ccBody, _ := changeevent.Marshal(&good)
	ccSum := sha256.Sum256(ccBody)
	stub := func(size int64, sum string, key string) changeevent.Event {
		s := evt(t, changeevent.Insert, fooNS, int32(1), nil)
		s.ClaimCheck = &changeevent.ClaimCheck{Bucket: "archive", Key: key, Size: size, SHA256: sum}
		return s
	}
	tests := []struct {
		name   string
		mutate func(r *events.KafkaRecord)
		reason string
	}{
		{"key not base64", func(r *events.KafkaRecord) { r.Key = "%%%" }, "key is not base64"},
		{"value not base64", func(r *events.KafkaRecord) { r.Value = "!!" }, "value is not base64"},
		{"empty value", func(r *events.KafkaRecord) { r.Value = "" }, "value is empty"},
		{"not BSON", func(r *events.KafkaRecord) { r.Value = base64.StdEncoding.EncodeToString([]byte("{\"json\":1}")) }, "not a BSON document"},
		{"unknown version", func(r *events.KafkaRecord) { r.Value = enc(v2) }, "unknown message format version 2"},
		{"unknown version header", func(r *events.KafkaRecord) {
			r.Headers = []map[string]events.JSONNumberBytes{{changeevent.HeaderFormat: events.JSONNumberBytes("2")}}
		}, "unknown message format version \"2\""},
		{"fails validation", func(r *events.KafkaRecord) { r.Value = enc(noFull) }, "insert event has no fullDocument"},
		{"claim check missing", func(r *events.KafkaRecord) { r.Value = enc(stub(1, "00", "cc/missing")) }, "does not exist"},
		{"claim check wrong size", func(r *events.KafkaRecord) {
			r.Value = enc(stub(int64(len(ccBody))+1, hex.EncodeToString(ccSum[:]), "cc/good"))
		}, "bytes, the message says"},
		{"claim check wrong sha256", func(r *events.KafkaRecord) { r.Value = enc(stub(int64(len(ccBody)), "00", "cc/good")) }, "does not match its sha256"},
		{"claim check other bucket", func(r *events.KafkaRecord) {
			s := stub(int64(len(ccBody)), hex.EncodeToString(ccSum[:]), "cc/good")
			s.ClaimCheck.Bucket = "elsewhere"
			r.Value = enc(s)
		}, "is in bucket \"elsewhere\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, Options{ClaimCheckBucket: "archive"})
			env.ar.objects["cc/good"] = ccBody
			batch := batchOf(t, good, good, evt(t, changeevent.Insert, fooNS, int32(2), bson.D{}))
			bad := &batch.Records["changevents-0"][1]
			tt.mutate(bad)
			sum, err := env.h.Handle(context.Background(), batch)
			if err != nil {
				t.Fatal(err)
			}
			if sum.DeadLettered != 1 || sum.Applied != 2 {
				t.Errorf("summary %+v, want 1 dead-lettered and 2 applied", sum)
			}
			key := "docdbdr/deadletter/dt=2022-07-19/changevents-0-101.json"
			var dl archive.DeadLetter
			if err := json.Unmarshal(env.ar.objects[key], &dl); err != nil {
				t.Fatalf("dead letter %s: %v (objects %v)", key, err, env.ar.keys(""))
			}
			if !strings.Contains(dl.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", dl.Reason, tt.reason)
			}
			if dl.Key != bad.Key || dl.Value != bad.Value || dl.Kafka.Offset != 101 || len(dl.Headers) != len(bad.Headers) {
				t.Errorf("dead letter does not keep the record: %+v", dl)
			}
		})
	}
}

func TestClaimCheckIsFetched(t *testing.T) {
	env := newEnv(t, Options{})
	full := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "big", Value: strings.Repeat("x", 100)}})
	body, _ := changeevent.Marshal(&full)
	sum := sha256.Sum256(body)
	env.ar.objects["docdbdr/claimcheck/x.bson"] = body
	stub := evt(t, changeevent.Insert, fooNS, int32(1), nil)
	stub.ClaimCheck = &changeevent.ClaimCheck{Bucket: "archive", Key: "docdbdr/claimcheck/x.bson", Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:])}
	if _, err := env.h.Handle(context.Background(), batchOf(t, stub)); err != nil {
		t.Fatal(err)
	}
	if len(env.dr.bulks) != 1 || !bytes.Equal(env.dr.bulks[0][0].Doc, full.FullDocument) {
		t.Errorf("claim-checked document not applied: %v", env.dr.bulks)
	}
}

func TestFailuresFailTheInvocation(t *testing.T) {
	ins := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})
	del := evt(t, changeevent.Delete, fooNS, int32(1), nil)
	bad := batchOf(t, ins, del)
	bad.Records["changevents-0"][0].Value = "!!"
	stub := evt(t, changeevent.Insert, fooNS, int32(1), nil)
	stub.ClaimCheck = &changeevent.ClaimCheck{Key: "k", Size: 1, SHA256: "00"}
	tests := []struct {
		name  string
		batch events.KafkaEvent
		fail  func(env *handlerEnv)
	}{
		{"DR bulk write", batchOf(t, ins), func(env *handlerEnv) { env.dr.failBulk = errBoom }},
		{"DR before-image read", batchOf(t, del), func(env *handlerEnv) { env.dr.failFind = errBoom }},
		{"archive put", batchOf(t, del), func(env *handlerEnv) { env.ar.failPut = func(string) error { return errBoom } }},
		{"archive get before overwrite", batchOf(t, del), func(env *handlerEnv) { env.ar.failGet = errBoom }},
		{"dead-letter put", bad, func(env *handlerEnv) {
			env.ar.failPut = func(k string) error {
				if strings.Contains(k, "deadletter") {
					return errBoom
				}
				return nil
			}
		}},
		{"claim check unreachable", batchOf(t, stub), func(env *handlerEnv) { env.ar.failGet = errBoom }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, Options{})
			tt.fail(env)
			_, err := env.h.Handle(context.Background(), tt.batch)
			if !errors.Is(err, errBoom) {
				t.Fatalf("err = %v, want it to wrap the failure", err)
			}
			if !strings.Contains(env.logs.String(), `"level":"ERROR"`) || !strings.Contains(env.metrics.String(), `"Errors":1`) {
				t.Errorf("failure not reported: %s %s", env.logs, env.metrics)
			}
		})
	}
}

func TestRedeliveryConverges(t *testing.T) {
	evs := []changeevent.Event{
		evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: 1}}),
		evt(t, changeevent.Insert, fooNS, int32(2), bson.D{{Key: "v", Value: 1}}),
		evt(t, changeevent.Delete, fooNS, int32(1), nil),
		update(t, fooNS, int32(2), bson.D{{Key: "v", Value: 2}}, nil, nil),
		evt(t, changeevent.Drop, changeevent.Namespace{DB: "bar", Coll: "old"}, nil, nil),
	}
	batch := batchOf(t, evs...)
	batch.Records["changevents-0"] = append(batch.Records["changevents-0"], events.KafkaRecord{Topic: "changevents", Offset: 105, Value: "!!"})
	env := newEnv(t, Options{})
	if _, err := env.h.Handle(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	first := clone(env.ar.objects)
	firstBulks := len(env.dr.bulks)
	if _, err := env.h.Handle(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if len(env.ar.objects) != len(first) || len(first) != 3 {
		t.Fatalf("objects %v", env.ar.keys(""))
	}
	for k, v := range first {
		if !bytes.Equal(env.ar.objects[k], v) {
			t.Errorf("object %s changed on redelivery", k)
		}
	}
	assertSameWrites(t, env.dr.bulks[:firstBulks], env.dr.bulks[firstBulks:])
}

// A delete then a re-insert of the same _id in one batch, where the first delivery failed after
// the re-insert reached DR: the retry reads the re-inserted version, but the archive keeps the
// before-image read by the first delivery.
func TestRedeliveryKeepsTheFirstBeforeImage(t *testing.T) {
	env := newEnv(t, Options{})
	v0 := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: "v0"}})
	if _, err := env.h.Handle(context.Background(), batchOf(t, v0)); err != nil {
		t.Fatal(err)
	}
	batch := batchOf(t,
		evt(t, changeevent.Delete, fooNS, int32(1), nil),
		evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: "v1"}}),
	)
	env.dr.failBulk, env.dr.applyThenFail = errBoom, true
	if _, err := env.h.Handle(context.Background(), batch); !errors.Is(err, errBoom) {
		t.Fatalf("first delivery: %v", err)
	}
	env.dr.failBulk = nil
	if _, err := env.h.Handle(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	recs := env.ar.records(t, deletesKey)
	if len(recs) != 1 || !strings.Contains(string(recs[0].Before), `"v0"`) {
		t.Errorf("before-image after redelivery: %s", recs[0].Before)
	}
}

func TestBeforeImagesFollowBatchOrder(t *testing.T) {
	env := newEnv(t, Options{})
	old := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: "old"}})
	if _, err := env.h.Handle(context.Background(), batchOf(t, old)); err != nil {
		t.Fatal(err)
	}
	sum, err := env.h.Handle(context.Background(), batchOf(t,
		evt(t, changeevent.Insert, fooNS, int32(2), bson.D{{Key: "v", Value: "inserted"}}),
		evt(t, changeevent.Delete, fooNS, int32(2), nil), // sees the insert just before it
		evt(t, changeevent.Delete, fooNS, int32(1), nil), // sees DR as it was
		evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: "new"}}),
		evt(t, changeevent.Delete, fooNS, int32(3), nil), // absent
	))
	if err != nil {
		t.Fatal(err)
	}
	recs := env.ar.records(t, "docdbdr/deletes/db=bar/coll=foo/dt=2022-07-19/changevents-0-101.json.gz")
	want := []string{`"inserted"`, `"old"`, `null`}
	if len(recs) != len(want) {
		t.Fatalf("records %+v", recs)
	}
	for i, w := range want {
		if !strings.Contains(string(recs[i].Before), w) {
			t.Errorf("record %d before = %s, want %s", i, recs[i].Before, w)
		}
	}
	if sum.Archived != 3 || sum.Applied != 2 {
		t.Errorf("summary %+v", sum)
	}
}

func TestMissingDocumentUpdatesAreCounted(t *testing.T) {
	env := newEnv(t, Options{})
	sum, err := env.h.Handle(context.Background(), batchOf(t,
		evt(t, changeevent.Insert, fooNS, int32(1), bson.D{}),
		update(t, fooNS, int32(1), bson.D{{Key: "a", Value: 1}}, nil, nil),
		update(t, fooNS, int32(2), bson.D{{Key: "a", Value: 1}}, nil, nil),
	))
	if err != nil {
		t.Fatal(err)
	}
	if sum.MissingDocumentUpdates != 1 {
		t.Errorf("missing = %d, want 1", sum.MissingDocumentUpdates)
	}
	if !strings.Contains(env.logs.String(), `"updates matched no document in DR"`) || !strings.Contains(env.logs.String(), "changevents-0@102") {
		t.Errorf("missing update not logged: %s", env.logs)
	}
}

func TestBulksAreBoundedAndOrdered(t *testing.T) {
	env := newEnv(t, Options{MaxBulkOps: 2})
	var evs []changeevent.Event
	for i := range 5 {
		evs = append(evs, evt(t, changeevent.Insert, fooNS, int32(i), bson.D{}))
	}
	// Two partitions delivered in a map: applied partition 0 then 1, whatever the map order.
	batch := batchOf(t, evs...)
	batch.Records["changevents-1"] = []events.KafkaRecord{record(t, "changevents", 1, 7, evt(t, changeevent.Insert, fooNS, int32(9), bson.D{}))}
	if _, err := env.h.Handle(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, b := range env.dr.bulks {
		if len(b) > 2 {
			t.Errorf("bulk of %d writes, max 2", len(b))
		}
		for _, w := range b {
			ids = append(ids, w.ID.Int32())
		}
	}
	if got := len(env.dr.bulks); got != 3 || len(ids) != 6 || ids[0] != 0 || ids[4] != 4 || ids[5] != 9 {
		t.Errorf("%d bulks in order %v", got, ids)
	}
}

func TestSummaryLogAndMetrics(t *testing.T) {
	env := newEnv(t, Options{})
	if _, err := env.h.Handle(context.Background(), batchOf(t, evt(t, changeevent.Insert, fooNS, int32(1), bson.D{}))); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(env.logs.Bytes(), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v: %s", err, env.logs)
	}
	if line["msg"] != "apply batch" || line["records"] != 1.0 || line["applied"] != 1.0 || line["maxLagMs"] != 38000.0 {
		t.Errorf("summary line %v", line)
	}
	var emf map[string]any
	if err := json.Unmarshal(env.metrics.Bytes(), &emf); err != nil {
		t.Fatal(err)
	}
	if emf["Function"] != "apply" || emf["Records"] != 1.0 || emf["MaxLag"] != 38.0 {
		t.Errorf("metrics %v", emf)
	}
}

func assertStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func assertSameWrites(t *testing.T, a, b [][]Write) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%d bulks then %d", len(a), len(b))
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			t.Fatalf("bulk %d: %d writes then %d", i, len(a[i]), len(b[i]))
		}
		for j := range a[i] {
			if a[i][j].Kind != b[i][j].Kind || !bytes.Equal(a[i][j].Doc, b[i][j].Doc) || !a[i][j].ID.Equal(b[i][j].ID) {
				t.Errorf("bulk %d write %d differs", i, j)
			}
		}
	}
}

func clone(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}
