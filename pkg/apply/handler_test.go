package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// put stores a document in the fake DR, as an earlier batch would have.
func (f *fakeDR) put(t testing.TB, ns changeevent.Namespace, doc bson.D) {
	t.Helper()
	b := raw(t, doc)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.coll(ns)[KeyOf(b.Lookup("_id"))] = b
}

// writesOf renders every bulk write as "kind document-as-Extended-JSON".
func writesOf(dr *fakeDR) []string {
	var got []string
	for _, bulk := range dr.bulks {
		for _, w := range bulk {
			js, _ := bson.MarshalExtJSON(w.Doc, true, false)
			got = append(got, w.Kind.String()+" "+string(js))
		}
	}
	return got
}

func TestHandleOperationsUnderDefaultPolicy(t *testing.T) {
	full := bson.D{{Key: "x", Value: int32(1)}}
	existing := bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.D{{Key: "b", Value: int32(1)}}}, {Key: "c", Value: "x"},
		{Key: "arr", Value: bson.A{int32(1), int32(2), int32(3)}}}
	withFull := func(e changeevent.Event, doc bson.D) changeevent.Event {
		e.FullDocument = raw(t, doc)
		return e
	}
	tests := []struct {
		name       string
		inDR       bson.D // the document DR holds before the batch, if any
		ev         changeevent.Event
		wantWrites []string // kind and document as Extended JSON
		wantCalls  []string
		wantLines  []string // operations archived
		wantDR     string   // DR's document afterwards, Extended JSON ("" when not checked)
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
			name: "update of a document DR has is its delta, even with a looked-up document",
			inDR: existing,
			ev: withFull(update(t, fooNS, int32(1), bson.D{{Key: "c", Value: "y"}}, nil, nil),
				bson.D{{Key: "_id", Value: int32(1)}, {Key: "from", Value: "the future"}}),
			wantWrites: []string{`updateOne {"$set":{"c":"y"}}`},
			wantCalls:  []string{"find bar.foo 1", "bulk bar.foo 1"},
			wantDR:     `{"_id":1,"a":{"b":1},"c":"y","arr":[1,2,3]}`,
		},
		{
			name:       "update of a document DR lacks heals it from the looked-up document",
			ev:         withFull(update(t, fooNS, int32(1), bson.D{{Key: "x", Value: int32(1)}}, nil, nil), bson.D{{Key: "_id", Value: int32(1)}, {Key: "x", Value: int32(1)}}),
			wantWrites: []string{`replaceOne {"_id":{"$numberInt":"1"},"x":{"$numberInt":"1"}}`},
			wantCalls:  []string{"find bar.foo 1", "bulk bar.foo 1"},
		},
		{
			name:       "update sets, unsets and truncates",
			inDR:       existing,
			ev:         update(t, fooNS, int32(1), bson.D{{Key: "a.b", Value: int32(2)}}, []string{"c"}, []changeevent.TruncatedArray{{Field: "arr", NewSize: 1}}),
			wantWrites: []string{`updateOne {"$push":{"arr":{"$each":[],"$slice":{"$numberInt":"1"}}},"$set":{"a.b":{"$numberInt":"2"}},"$unset":{"c":""}}`},
			wantCalls:  []string{"find bar.foo 1", "bulk bar.foo 1"},
			wantDR:     `{"_id":1,"a":{"b":2},"arr":[1]}`,
		},
		{
			name: "truncation of a path that is also set is a separate update, first",
			inDR: existing,
			ev:   update(t, fooNS, int32(1), bson.D{{Key: "arr.1", Value: int32(9)}}, nil, []changeevent.TruncatedArray{{Field: "arr", NewSize: 2}}),
			wantWrites: []string{
				`updateOne {"$push":{"arr":{"$each":[],"$slice":{"$numberInt":"2"}}}}`,
				`updateOne {"$set":{"arr.1":{"$numberInt":"9"}}}`,
			},
			wantCalls: []string{"find bar.foo 1", "bulk bar.foo 2"},
			wantDR:    `{"_id":1,"a":{"b":1},"c":"x","arr":[1,9]}`,
		},
		{
			name:      "update that changes nothing writes nothing",
			inDR:      existing,
			ev:        update(t, fooNS, int32(1), nil, nil, nil),
			wantCalls: []string{"find bar.foo 1"},
		},
		{
			name:      "update of a document DR lacks, without a looked-up document, writes nothing",
			ev:        update(t, fooNS, int32(1), bson.D{{Key: "x", Value: 1}}, nil, nil),
			wantCalls: []string{"find bar.foo 1"},
		},
		{
			name:      "delete is archived with its before-image, not applied",
			inDR:      existing,
			ev:        evt(t, changeevent.Delete, fooNS, int32(1), nil),
			wantCalls: []string{"find bar.foo 1", "claim 1"},
			wantLines: []string{"delete"},
			wantDR:    `{"_id":1,"a":{"b":1},"c":"x","arr":[1,2,3]}`,
		},
		{
			name:      "drop is archived and its collection moved aside",
			ev:        evt(t, changeevent.Drop, fooNS, nil, nil),
			wantCalls: []string{"rename bar.foo bar.foo.dropped.1658262022-1", "barrier /0 done", "claim 1"},
			wantLines: []string{"drop"},
		},
		{
			name: "rename moves the displaced target aside, then the source to the target",
			ev:   evt(t, changeevent.Rename, fooNS, nil, nil),
			wantCalls: []string{"rename bar.foo_renamed bar.foo_renamed.dropped.1658262022-1", "barrier /0 target",
				"rename bar.foo bar.foo_renamed", "barrier /0 done", "claim 1"},
			wantLines: []string{"rename"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, Options{})
			if tt.inDR != nil {
				env.dr.put(t, fooNS, tt.inDR)
			}
			sum, err := env.h.Handle(context.Background(), batchOf(t, tt.ev))
			if err != nil {
				t.Fatal(err)
			}
			assertStrings(t, "writes", writesOf(env.dr), tt.wantWrites)
			assertStrings(t, "DR calls", env.dr.calls, tt.wantCalls)
			var lines []string
			for _, r := range env.ar.lines(t) {
				lines = append(lines, r.Operation)
			}
			assertStrings(t, "archived", lines, tt.wantLines)
			if tt.wantDR != "" {
				id, _ := tt.ev.ID()
				if got := extJSON(t, env.dr.doc(fooNS, id)); got != tt.wantDR {
					t.Errorf("DR document\n got %s\nwant %s", got, tt.wantDR)
				}
			}
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
	keys := env.ar.keys("docdbdr/deletes/")
	want := "docdbdr/deletes/db=bar/coll=foo/dt=2022-07-19/1658262022-1-" + del.EventID()[:16] + "-claim.json.gz"
	if len(keys) != 1 || keys[0] != want {
		t.Fatalf("keys %v, want [%s]", keys, want)
	}
	lines, err := archive.DecodeObject(env.ar.objects[want])
	if err != nil || len(lines) != 1 {
		t.Fatalf("lines %q, %v", lines, err)
	}
	wantLine := `{"eventId":"` + del.EventID() + `","_id":{"$numberInt":"1"},"operation":"delete","timestamp":1658262022,"timestampReadable":"2022-07-19 20:20:22",` +
		`"db":"bar","coll":"foo","clusterTime":{"$timestamp":{"t":1658262022,"i":1}},"resumeToken":{"_data":"` + del.ResumeToken.Lookup("_data").StringValue() + `"},` +
		`"kafka":{"topic":"changevents","partition":0,"offset":101},"before":{"_id":{"$numberInt":"1"},"x":{"$numberInt":"2"}},"beforeExact":true}`
	if string(lines[0]) != wantLine {
		t.Errorf("line\n got %s\nwant %s", lines[0], wantLine)
	}
	e := env.dr.ledger[del.EventID()]
	if e.State != StateWritten || e.Line != nil || e.Object != want || e.Op != "delete" || KeyOf(e.DocID) != KeyOf(idOf(t, int32(1))) {
		t.Errorf("ledger entry %+v", e)
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
		{"delete=apply", del, []string{"find bar.foo 1", "bulk bar.foo 1"}, 0},
		{"delete=apply+archive", del, []string{"find bar.foo 1", "claim 1", "bulk bar.foo 1"}, 1},
		{"drop=apply", evt(t, changeevent.Drop, fooNS, nil, nil), []string{"drop bar.foo", "barrier /0 done"}, 0},
		{"drop=apply+archive", evt(t, changeevent.Drop, fooNS, nil, nil), []string{"drop bar.foo", "barrier /0 done", "claim 1"}, 1},
		{"rename=apply", evt(t, changeevent.Rename, fooNS, nil, nil), []string{"drop bar.foo_renamed", "barrier /0 target", "rename bar.foo bar.foo_renamed", "barrier /0 done"}, 0},
		{"dropDatabase=apply", evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil), []string{"drop bar.foo", "barrier /0 done"}, 0},
		{"dropDatabase=archive", evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil), []string{"rename bar.foo bar.foo.dropped.1658262022-1", "barrier /0 done", "claim 1"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			p, err := ParsePolicy(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			env := newEnv(t, Options{Policy: &p})
			env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}})
			env.dr.calls = nil
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
	t.Run("dropDatabase key uses _ for the collection, and names the side collections", func(t *testing.T) {
		env := newEnv(t, Options{})
		ev := evt(t, changeevent.DropDatabase, changeevent.Namespace{DB: "bar"}, nil, nil)
		if _, err := env.h.Handle(context.Background(), batchOf(t, ev)); err != nil {
			t.Fatal(err)
		}
		assertStrings(t, "keys", env.ar.keys(""), []string{"docdbdr/deletes/db=bar/coll=_/dt=2022-07-19/1658262022-1-" + ev.EventID()[:16] + "-claim.json.gz"})
		recs := env.ar.lines(t)
		if len(recs) != 1 || recs[0].PreservedAs == nil || *recs[0].PreservedAs != (archive.Preserved{DB: "bar", Suffix: ".dropped.1658262022-1"}) {
			t.Errorf("dropDatabase line %+v", recs)
		}
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
		"claim 1", // the delete of exa 1 sees its insert in memory: no read
		"bulk bar_dr.foo2 1", "bulk bar_dr.exa 1",
		"drop bar_dr.exa_renamed", "barrier /0 target", "rename bar_dr.exa bar_dr.exa_renamed", "barrier /0 done",
		"drop bar_dr.foo2", "barrier /0 done", "claim 1",
	})
	// The archive is keyed by the primary's namespace.
	keys := env.ar.keys("")
	if len(keys) != 2 || !strings.HasPrefix(keys[0], "docdbdr/deletes/db=bar/coll=exa/") || !strings.HasPrefix(keys[1], "docdbdr/deletes/db=bar/coll=foo/") {
		t.Errorf("keys %v", keys)
	}
	if recs := env.ar.records(t, keys[0]); len(recs) != 1 || string(recs[0].Before) != `{"_id":{"$numberInt":"1"}}` {
		t.Errorf("before-image from the mapped namespace: %+v", recs)
	}
}

func TestPoisonRecordsAreDeadLettered(t *testing.T) {
	good := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})
	v2 := good
	v2.Version = 2
	noFull := evt(t, changeevent.Insert, fooNS, int32(1), nil)
	otherID := evt(t, changeevent.Insert, fooNS, int32(1), nil)
	otherID.FullDocument = raw(t, bson.D{{Key: "_id", Value: int32(2)}, {Key: "x", Value: 1}})
	otherType := evt(t, changeevent.Insert, fooNS, int32(1), nil)
	otherType.FullDocument = raw(t, bson.D{{Key: "_id", Value: int64(1)}})
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
		{"fullDocument _id is not the documentKey's", func(r *events.KafkaRecord) { r.Value = enc(otherID) }, "fullDocument _id {\"$numberInt\":\"2\"} differs from documentKey _id"},
		{"fullDocument _id has another type", func(r *events.KafkaRecord) { r.Value = enc(otherType) }, "differs from documentKey _id"},
		{"namespace maps into the state database", func(r *events.KafkaRecord) {
			r.Value = enc(evt(t, changeevent.Insert, changeevent.Namespace{DB: DefaultStateDB, Coll: "archived"}, int32(1), bson.D{}))
		}, "maps into DR_STATE_DB"},
		{"barrier header is not a number", func(r *events.KafkaRecord) {
			r.Value = enc(evt(t, changeevent.Drop, fooNS, nil, nil))
			r.Headers = []map[string]events.JSONNumberBytes{{changeevent.HeaderBarrier: events.JSONNumberBytes("many")}}
		}, "not a partition count"},
		{"claim check missing", func(r *events.KafkaRecord) { r.Value = enc(stub(1, "00", "cc/missing")) }, "does not exist"},
		{"claim check missing, 403 to a role without list", func(r *events.KafkaRecord) { r.Value = enc(stub(1, "00", "denied/cc")) }, "is missing or not readable by this role"},
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
		// The same poison every 100th record of a batch large enough to be decoded in parallel.
		t.Run(tt.name+", large batch", func(t *testing.T) {
			env := newEnv(t, Options{ClaimCheckBucket: "archive"})
			env.ar.objects["cc/good"] = ccBody
			evs := make([]changeevent.Event, 3*parallelDecodeMin)
			for i := range evs {
				evs[i] = evt(t, changeevent.Insert, fooNS, int32(i), bson.D{{Key: "i", Value: int32(i)}})
			}
			batch := batchOf(t, evs...)
			recs := batch.Records["changevents-0"]
			var want []string
			for i := 7; i < len(recs); i += 100 {
				tt.mutate(&recs[i])
				want = append(want, fmt.Sprintf("docdbdr/deadletter/dt=2022-07-19/changevents-0-%d.json", recs[i].Offset))
			}
			slices.Sort(want) // as keys lists them
			sum, err := env.h.Handle(context.Background(), batch)
			if err != nil {
				t.Fatal(err)
			}
			if sum.DeadLettered != len(want) || sum.Applied != len(recs)-len(want) {
				t.Errorf("summary %+v, want %d dead-lettered and %d applied", sum, len(want), len(recs)-len(want))
			}
			if got := env.ar.keys("docdbdr/deadletter/"); !slices.Equal(got, want) {
				t.Errorf("dead letters %v, want %v", got, want)
			}
			for _, key := range want {
				var dl archive.DeadLetter
				if err := json.Unmarshal(env.ar.objects[key], &dl); err != nil || !strings.Contains(dl.Reason, tt.reason) {
					t.Errorf("dead letter %s: reason %q (%v), want it to contain %q", key, dl.Reason, err, tt.reason)
				}
			}
		})
	}
}

// TestRefusedWritesAreDeadLettered: a write DR refuses for ever dead-letters that one record,
// with the server's error, and the records behind it are applied in order; a transient refusal
// fails the batch.
func TestRefusedWritesAreDeadLettered(t *testing.T) {
	tests := []struct {
		name       string
		we         WriteError
		deadLetter bool
	}{
		{"invalid field name", WriteError{Code: 52, Message: "The dollar ($) prefixed field '$x' in '$x' is not valid for storage."}, true},
		{"not valid for storage under another code", WriteError{Code: 9, Message: "The dollar ($) prefixed field '$x' in '$x' is not valid for storage."}, true},
		{"_id changed", WriteError{Code: 66, Message: "After applying the update, the (immutable) field '_id' was found to have been altered"}, true},
		{"duplicate key on a secondary unique index", WriteError{Code: 11000, Message: "E11000 duplicate key error collection: bar.foo index: email_1 dup key: { email: \"a\" }"}, true},
		{"document too large", WriteError{Code: 10334, Message: "BSONObj size: 16793601 (0x1000401) is invalid"}, true},
		{"document too large after an update", WriteError{Code: 17419, Message: "Resulting document after update is larger than 16777216"}, true},
		{"duplicate _id (a concurrent upsert) is transient", WriteError{Code: 11000, Message: "E11000 duplicate key error collection: bar.foo index: _id_ dup key: { _id: 2 }"}, false},
		{"write conflict is transient", WriteError{Code: 112, Message: "WriteConflict"}, false},
		{"not primary is transient", WriteError{Code: 10107, Message: "not primary"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, Options{})
			env.dr.refuse = func(_ changeevent.Namespace, w Write) *WriteError {
				if w.ID.Int32() == 2 && w.Kind == ReplaceOne {
					we := tt.we
					return &we
				}
				return nil
			}
			sum, err := env.h.Handle(context.Background(), batchOf(t,
				evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: 1}}),
				evt(t, changeevent.Insert, fooNS, int32(2), bson.D{{Key: "v", Value: 1}}),
				evt(t, changeevent.Insert, fooNS, int32(3), bson.D{{Key: "v", Value: 1}}),
				update(t, fooNS, int32(1), bson.D{{Key: "v", Value: 2}}, nil, nil),
			))
			if !tt.deadLetter {
				var we *WriteError
				if !errors.As(err, &we) || we.Code != tt.we.Code || sum.DeadLettered != 0 {
					t.Fatalf("err = %v, dead-lettered %d: want the batch to fail with the write error", err, sum.DeadLettered)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sum.DeadLettered != 1 || sum.Applied != 3 || sum.ByOp["poison"] != 1 || sum.ByOp["insert"] != 2 {
				t.Errorf("summary %+v", sum)
			}
			if env.dr.doc(fooNS, idOf(t, int32(3))) == nil || !strings.Contains(extJSON(t, env.dr.doc(fooNS, idOf(t, int32(1)))), `"v":2`) {
				t.Errorf("the records behind the refused one were not applied: %v", env.dr.docs)
			}
			var dl archive.DeadLetter
			if err := json.Unmarshal(env.ar.objects["docdbdr/deadletter/dt=2022-07-19/changevents-0-101.json"], &dl); err != nil {
				t.Fatalf("dead letter: %v (objects %v)", err, env.ar.keys(""))
			}
			if !strings.Contains(dl.Reason, tt.we.Message) || !strings.Contains(dl.Reason, "replaceOne of bar.foo") || dl.Kafka.Offset != 101 {
				t.Errorf("dead letter %+v", dl)
			}
			if ev, _ := base64.StdEncoding.DecodeString(dl.Value); len(ev) == 0 {
				t.Error("dead letter does not hold the event")
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
		{"ledger claim", batchOf(t, del), func(env *handlerEnv) { env.dr.failClaim = errBoom }},
		{"ledger written", batchOf(t, del), func(env *handlerEnv) { env.dr.failWritten = errBoom }},
		{"archive put", batchOf(t, del), func(env *handlerEnv) { env.ar.failPut = func(string) error { return errBoom } }},
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
			if !strings.Contains(env.logs.String(), `"level":"ERROR"`) || !strings.Contains(env.logs.String(), `"error":"`) ||
				!strings.Contains(env.metrics.String(), `"Errors":1`) {
				t.Errorf("failure not reported: %s %s", env.logs, env.metrics)
			}
		})
	}
}

// TestCorruptStateFailsTheBatch: a ledger entry apply cannot read is never guessed at: the batch
// fails, naming it, and the CorruptState metric counts it.
func TestCorruptStateFailsTheBatch(t *testing.T) {
	env := newEnv(t, Options{})
	env.dr.failPending = fmt.Errorf("%w: ledger entry \"abc\" lacks its object or, pending, its line", ErrCorruptState)
	sum, err := env.h.Handle(context.Background(), batchOf(t, evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})))
	if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), `"abc"`) || sum.CorruptState != 1 {
		t.Fatalf("err %v, summary %+v", err, sum)
	}
	if !strings.Contains(env.metrics.String(), `"CorruptState":1`) || len(env.dr.bulks) != 0 {
		t.Errorf("metrics %s, bulks %d", env.metrics, len(env.dr.bulks))
	}
}

// TestNoArchiveReadsAnything: apply's archive path reads nothing from S3 (the role has no
// s3:GetObject on the archive, and S3 answers a GET of a missing key 403 without ListBucket).
func TestNoArchiveReadsAnything(t *testing.T) {
	env := newEnv(t, Options{})
	env.ar.failGet = errors.New("GET of the archive")
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}})
	b := batchOf(t, evt(t, changeevent.Delete, fooNS, int32(1), nil), evt(t, changeevent.Drop, fooNS, nil, nil))
	for range 2 { // and again, as a redelivery
		if _, err := env.h.Handle(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if env.ar.gets != 0 {
		t.Errorf("%d GETs", env.ar.gets)
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
	firstDocs := extJSON(t, env.dr.doc(fooNS, idOf(t, int32(2))))
	sum, err := env.h.Handle(context.Background(), batch)
	if err != nil {
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
	// The document changes are behind the applied frontier: not applied again; the drop's marker
	// is done and its line in the ledger.
	if sum.Archived != 0 || sum.AlreadyApplied != 4 || sum.AlreadyArchived != 1 || sum.Applied != 0 || sum.ArchivePuts != 1 /* the dead letter, conditional */ {
		t.Errorf("redelivery summary %+v", sum)
	}
	if got := extJSON(t, env.dr.doc(fooNS, idOf(t, int32(2)))); got != firstDocs || got != `{"_id":2,"v":2}` {
		t.Errorf("DR after redelivery %s, after the first delivery %s", got, firstDocs)
	}
}

// TestRedeliveryKeepsTheFirstBeforeImage: a delete then a re-insert of the same _id in one
// batch, where the first delivery failed after the re-insert reached DR. The redelivery reads
// the re-inserted version, but the ledger holds the line of the first delivery.
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
	env.ar.failPut = func(string) error { return errBoom } // nor did its object reach S3
	if _, err := env.h.Handle(context.Background(), batch); !errors.Is(err, errBoom) {
		t.Fatalf("first delivery: %v", err)
	}
	if len(env.ar.keys("docdbdr/deletes/")) != 0 {
		t.Fatal("the failed put wrote an object")
	}
	env.dr.failBulk, env.ar.failPut = nil, nil
	sum, err := env.h.Handle(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	recs := env.ar.lines(t)
	if len(recs) != 1 || !strings.Contains(string(recs[0].Before), `"v0"`) || !recs[0].BeforeExact {
		t.Errorf("lines after redelivery: %+v", recs)
	}
	if sum.RecoveredObjects != 1 || sum.Archived != 0 || sum.AlreadyArchived != 1 {
		t.Errorf("summary %+v", sum)
	}
}

// TestPendingLinesAreWrittenByTheNextBatch: a crash after the claim leaves lines pending; the
// next invocation for the partition writes them first, whatever its records are.
func TestPendingLinesAreWrittenByTheNextBatch(t *testing.T) {
	env := newEnv(t, Options{})
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}, {Key: "v", Value: "a"}})
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(2)}, {Key: "v", Value: "b"}})
	env.ar.failPut = func(string) error { return errBoom }
	if _, err := env.h.Handle(context.Background(), batchOf(t, evt(t, changeevent.Delete, fooNS, int32(1), nil), evt(t, changeevent.Delete, fooNS, int32(2), nil))); err == nil {
		t.Fatal("the put did not fail")
	}
	env.ar.failPut = nil
	next := events.KafkaEvent{Records: map[string][]events.KafkaRecord{"changevents-0": {
		record(t, "changevents", 0, 500, evt(t, changeevent.Insert, fooNS, int32(9), bson.D{})),
	}}}
	other := events.KafkaEvent{Records: map[string][]events.KafkaRecord{"changevents-1": {
		record(t, "changevents", 1, 7, evt(t, changeevent.Insert, fooNS, int32(8), bson.D{})),
	}}}
	if sum, err := env.h.Handle(context.Background(), other); err != nil || sum.RecoveredObjects != 0 {
		t.Fatalf("another partition's batch recovered %d objects (%v): it must leave partition 0's alone", sum.RecoveredObjects, err)
	}
	sum, err := env.h.Handle(context.Background(), next)
	if err != nil {
		t.Fatal(err)
	}
	recs := env.ar.lines(t)
	if sum.RecoveredObjects != 1 || len(recs) != 2 || !strings.Contains(string(recs[0].Before), `"a"`) || !strings.Contains(string(recs[1].Before), `"b"`) {
		t.Errorf("recovered %d objects, lines %+v", sum.RecoveredObjects, recs)
	}
	for _, e := range env.dr.ledger {
		if e.State != StateWritten || e.Line != nil {
			t.Errorf("ledger entry still pending: %+v", e)
		}
	}
}

// TestOneLinePerEvent: a republished tail in the same batch, a consumer-group offset reset
// replaying earlier batches, and batches cut differently add no line.
func TestOneLinePerEvent(t *testing.T) {
	env := newEnv(t, Options{})
	var evs []changeevent.Event
	for i := range 6 {
		ins := evt(t, changeevent.Insert, fooNS, int32(i), bson.D{{Key: "i", Value: i}})
		ins.ResumeToken = raw(t, bson.D{{Key: "_data", Value: "ins" + string(rune('0'+i))}})
		del := evt(t, changeevent.Delete, fooNS, int32(i), nil)
		del.ResumeToken = raw(t, bson.D{{Key: "_data", Value: "del" + string(rune('0'+i))}})
		evs = append(evs, ins, del)
	}
	tail := append(append([]changeevent.Event(nil), evs...), evs[6:]...) // capture republished its tail
	all := batchOf(t, tail...).Records["changevents-0"]
	cuts := [][2]int{{0, 5}, {0, 9}, {3, 16}, {0, 16}, {10, 16}} // redelivered, re-cut, replayed
	for _, c := range cuts {
		ev := events.KafkaEvent{Records: map[string][]events.KafkaRecord{"changevents-0": all[c[0]:c[1]]}}
		if _, err := env.h.Handle(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for _, r := range env.ar.lines(t) {
		seen[r.EventID]++
		if r.Before == nil || string(r.Before) == "null" || !r.BeforeExact {
			t.Errorf("line without an exact before-image: %+v", r)
		}
	}
	if len(seen) != 6 {
		t.Errorf("%d distinct lines, want 6", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s archived %d times", id, n)
		}
	}
}

// TestConcurrentAppliesArchiveOnce: two invocations racing over overlapping records of one
// partition (a rebalance) archive every event once, in objects of their own.
func TestConcurrentAppliesArchiveOnce(t *testing.T) {
	for round := range 20 {
		env := newEnv(t, Options{})
		second, err := New(env.dr, env.ar, Options{Logger: discardLogger(), ArchivePrefix: "docdbdr/", Now: env.h.opts.Now})
		if err != nil {
			t.Fatal(err)
		}
		second.claimID = func() string { return "other" }
		var evs []changeevent.Event
		for i := range 30 {
			env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(i)}})
			del := evt(t, changeevent.Delete, fooNS, int32(i), nil)
			del.ResumeToken = raw(t, bson.D{{Key: "_data", Value: string(rune('A' + i))}})
			evs = append(evs, del)
		}
		all := batchOf(t, evs...).Records["changevents-0"]
		done := make(chan error, 2)
		go func() {
			_, err := env.h.Handle(context.Background(), events.KafkaEvent{Records: map[string][]events.KafkaRecord{"p": all[:20]}})
			done <- err
		}()
		go func() {
			_, err := second.Handle(context.Background(), events.KafkaEvent{Records: map[string][]events.KafkaRecord{"p": all[round%10:]}})
			done <- err
		}()
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]int{}
		for _, r := range env.ar.lines(t) {
			seen[r.EventID]++
		}
		if len(seen) != 30 {
			for id, e := range env.dr.ledger {
				if seen[id] == 0 {
					t.Logf("missing %s: %+v", id, e)
				}
			}
			t.Logf("keys %v", env.ar.keys(""))
			t.Fatalf("round %d: %d distinct lines, want 30", round, len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("round %d: event %s archived %d times", round, id, n)
			}
		}
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
	recs := env.ar.lines(t)
	want := []string{`"inserted"`, `"old"`, `null`}
	if len(recs) != len(want) {
		t.Fatalf("records %+v", recs)
	}
	for i, w := range want {
		if !strings.Contains(string(recs[i].Before), w) {
			t.Errorf("record %d before = %s, want %s", i, recs[i].Before, w)
		}
	}
	if recs[2].BeforeExact || recs[2].BeforeNote != "DR had no version of the document at the delete" {
		t.Errorf("missing before-image line %+v", recs[2])
	}
	if sum.Archived != 3 || sum.Applied != 2 || sum.BeforeMissing != 1 || sum.BeforeInexact != 0 {
		t.Errorf("summary %+v", sum)
	}
	if !strings.Contains(env.logs.String(), `"delete archived without a before-image`) || !strings.Contains(env.logs.String(), "changevents-0@105") {
		t.Errorf("missing before-image not logged with its coordinates: %s", env.logs)
	}
}

// TestEventTimeBeforeImages is issue 11's scenario: an update's looked-up full document comes from
// after a later delete and re-insert of the same _id. The delete's line must hold the version the
// update made (DR's version plus the delta), not the looked-up one.
func TestEventTimeBeforeImages(t *testing.T) {
	env := newEnv(t, Options{})
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}, {Key: "v", Value: "v0"}, {Key: "keep", Value: true}})
	future := update(t, fooNS, int32(1), bson.D{{Key: "v", Value: "v1"}}, nil, nil)
	future.FullDocument = raw(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "v", Value: "recreated"}})
	sum, err := env.h.Handle(context.Background(), batchOf(t,
		future,
		evt(t, changeevent.Delete, fooNS, int32(1), nil),
		evt(t, changeevent.Insert, fooNS, int32(1), bson.D{{Key: "v", Value: "recreated"}}),
	))
	if err != nil {
		t.Fatal(err)
	}
	recs := env.ar.lines(t)
	if len(recs) != 1 || string(recs[0].Before) != `{"_id":{"$numberInt":"1"},"v":"v1","keep":true}` || !recs[0].BeforeExact {
		t.Errorf("line %+v", recs)
	}
	if sum.BeforeInexact != 0 {
		t.Errorf("summary %+v", sum)
	}

	// Without a version in DR the update heals from the looked-up document: inexact, and said so.
	env = newEnv(t, Options{})
	sum, err = env.h.Handle(context.Background(), batchOf(t, future, evt(t, changeevent.Delete, fooNS, int32(1), nil)))
	if err != nil {
		t.Fatal(err)
	}
	recs = env.ar.lines(t)
	if len(recs) != 1 || recs[0].BeforeExact || !strings.Contains(recs[0].BeforeNote, "healed from the update at changevents-0@100") || sum.BeforeInexact != 1 {
		t.Errorf("healed line %+v, summary %+v", recs, sum)
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
	if !strings.Contains(env.logs.String(), `"updates of documents DR does not have`) || !strings.Contains(env.logs.String(), "changevents-0@102") {
		t.Errorf("missing update not logged: %s", env.logs)
	}
	// A delta that matches nothing (DR lost the document after it was read) is counted too.
	env = newEnv(t, Options{})
	env.dr.refuse = func(_ changeevent.Namespace, w Write) *WriteError {
		if w.Kind == UpdateOne {
			delete(env.dr.docs[fooNS], KeyOf(w.ID)) // the document vanishes between the read and the write
		}
		return nil
	}
	env.dr.put(t, fooNS, bson.D{{Key: "_id", Value: int32(1)}})
	if sum, err = env.h.Handle(context.Background(), batchOf(t, update(t, fooNS, int32(1), bson.D{{Key: "a", Value: 1}}, nil, nil))); err != nil {
		t.Fatal(err)
	}
	if sum.MissingDocumentUpdates != 1 || !strings.Contains(env.logs.String(), `"updates matched no document in DR"`) {
		t.Errorf("missing = %d, want 1; logs %s", sum.MissingDocumentUpdates, env.logs)
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
	if _, err := env.h.Handle(context.Background(), batchOf(t, evt(t, changeevent.Insert, fooNS, int32(1), bson.D{}), evt(t, changeevent.Delete, fooNS, int32(2), nil))); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	logs := env.logs.Bytes()
	last := logs[bytes.LastIndexByte(logs[:len(logs)-1], '\n')+1:]
	if err := json.Unmarshal(last, &line); err != nil {
		t.Fatalf("log is not JSON lines: %v: %s", err, env.logs)
	}
	if line["msg"] != "apply batch" || line["records"] != 2.0 || line["applied"] != 1.0 || line["maxLagMs"] != 38000.0 ||
		line["archived"] != 1.0 || line["beforeMissing"] != 1.0 || line["beforeInexact"] != 0.0 {
		t.Errorf("summary line %v", line)
	}
	var emf map[string]any
	if err := json.Unmarshal(env.metrics.Bytes(), &emf); err != nil {
		t.Fatal(err)
	}
	if emf["Function"] != "apply" || emf["Records"] != 2.0 || emf["MaxLag"] != 38.0 || emf["BeforeMissing"] != 1.0 || emf["BeforeInexact"] != 0.0 {
		t.Errorf("metrics %v", emf)
	}
}

func TestNewDefaults(t *testing.T) {
	h, err := New(newFakeDR(), newFakeArchive(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if h.log != slog.Default() || h.opts.Metrics != io.Discard {
		t.Errorf("defaults: logger %v, metrics %v; want slog.Default() and io.Discard", h.log, h.opts.Metrics)
	}
	if id := h.claimID(); !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(id) || id == h.claimID() {
		t.Errorf("claim ids %q are not random 8-digit hex", id)
	}
	m, _ := ParseNamespaceMap("bar=" + DefaultStateDB)
	if _, err := New(newFakeDR(), newFakeArchive(), Options{NamespaceMap: m}); err == nil || !strings.Contains(err.Error(), "DR_STATE_DB") {
		t.Errorf("a map into the state database: %v", err)
	}
}

func assertStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func clone(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}

// TestRevivedMarksReinsertedDeletes checks the ledger's revived mark, which tells docdbdr
// promote whether DR's copy of a deleted document is the intercepted version (not revived) or a
// live one the primary inserted again (revived).
func TestRevivedMarksReinsertedDeletes(t *testing.T) {
	otherNS := changeevent.Namespace{DB: "bar", Coll: "other"}
	ins := func(ns changeevent.Namespace, i uint32) changeevent.Event {
		e := evt(t, changeevent.Insert, ns, int32(1), bson.D{{Key: "v", Value: int64(i)}})
		e.ClusterTime.I = i
		retoken(t, &e)
		return e
	}
	del := func(ns changeevent.Namespace, i uint32) changeevent.Event {
		e := evt(t, changeevent.Delete, ns, int32(1), nil)
		e.ClusterTime.I = i
		retoken(t, &e)
		return e
	}
	renamedNS := changeevent.Namespace{DB: "bar", Coll: "foo_renamed"}
	collEvent := func(op changeevent.OperationType, i uint32) changeevent.Event {
		e := evt(t, op, fooNS, nil, nil)
		e.ClusterTime.I = i
		retoken(t, &e)
		return e
	}
	tests := []struct {
		name    string
		batches [][]changeevent.Event
		// revived[i] is the expected mark of the i-th delete of the test, held where it is held
		// at the end (default: fooNS).
		revived []bool
		held    *changeevent.Namespace
	}{
		{"a rename carries the held copy", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2)}, {collEvent(changeevent.Rename, 3)}},
			[]bool{false}, &renamedNS},
		{"re-inserted after a rename", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2)}, {collEvent(changeevent.Rename, 3)}, {ins(renamedNS, 4)}},
			[]bool{true}, &renamedNS},
		{"a drop moves the held copy aside; a re-insert into the recreated collection is another document",
			[][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2)}, {collEvent(changeevent.Drop, 3)}, {ins(fooNS, 4)}},
			[]bool{false}, &changeevent.Namespace{DB: "bar", Coll: "foo" + sideSuffix(primitive.Timestamp{T: baseTS.T, I: 3})}},
		{"re-inserted in a later batch", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2)}, {ins(fooNS, 3)}}, []bool{true}, nil},
		{"re-inserted in the same segment", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2), ins(fooNS, 3)}}, []bool{true}, nil},
		{"not re-inserted", [][]changeevent.Event{{ins(fooNS, 1)}, {del(fooNS, 2)}}, []bool{false}, nil},
		{"re-inserted then deleted again", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2)}, {ins(fooNS, 3), del(fooNS, 4)}}, []bool{false, false}, nil},
		{"deleted again after a revival", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2), ins(fooNS, 3)}, {del(fooNS, 4)}}, []bool{true, false}, nil},
		{"same _id inserted in another collection", [][]changeevent.Event{{ins(fooNS, 1), del(fooNS, 2)}, {ins(otherNS, 3)}}, []bool{false}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t, Options{})
			var dels []string
			for _, evs := range tc.batches {
				for _, e := range evs {
					if e.Operation == changeevent.Delete {
						dels = append(dels, e.EventID())
					}
				}
				if _, err := env.h.Handle(context.Background(), batchOf(t, evs...)); err != nil {
					t.Fatal(err)
				}
			}
			if len(dels) != len(tc.revived) {
				t.Fatalf("%d deletes, %d expectations", len(dels), len(tc.revived))
			}
			for i, id := range dels {
				e, ok := env.dr.ledger[id]
				if !ok {
					t.Fatalf("delete %d has no ledger entry", i)
				}
				if e.Revived != tc.revived[i] {
					t.Errorf("delete %d: revived %v, want %v", i, e.Revived, tc.revived[i])
				}
				want := fooNS
				if tc.held != nil {
					want = *tc.held
				}
				if e.Held != want {
					t.Errorf("delete %d: held in %s, want %s", i, e.Held, want)
				}
			}
		})
	}
}

// TestLedgerRecordsRenameTarget: promote follows documents through renames from the ledger.
func TestLedgerRecordsRenameTarget(t *testing.T) {
	env := newEnv(t, Options{})
	ren := evt(t, changeevent.Rename, fooNS, nil, nil)
	if _, err := env.h.Handle(context.Background(), batchOf(t, ren)); err != nil {
		t.Fatal(err)
	}
	e := env.dr.ledger[ren.EventID()]
	if e.To != *ren.To || e.Op != "rename" {
		t.Errorf("ledger entry %+v, want to %v", e, *ren.To)
	}
	d, err := ledgerDoc(&e)
	if err != nil {
		t.Fatal(err)
	}
	back, err := parseLedgerEntry(raw(t, d))
	if err != nil || back.To != *ren.To {
		t.Errorf("round trip of the ledger entry: to %v, %v", back.To, err)
	}
}

// TestFenceStopsApplyAtThePromotion: a promoted DR applies the records before the fence and none
// after; the invocation fails, so the event source mapping keeps them (and alarms).
func TestFenceStopsApplyAtThePromotion(t *testing.T) {
	env := newEnv(t, Options{})
	env.dr.fence = &Fence{Topic: "changevents", Ends: map[int64]int64{0: 102}, PromotedAt: fixedNow}
	var evs []changeevent.Event
	for i := int32(1); i <= 4; i++ {
		evs = append(evs, evt(t, changeevent.Insert, fooNS, i, bson.D{{Key: "x", Value: i}}))
	}
	batch := batchOf(t, evs...) // offsets 100..103
	for attempt := 0; attempt < 2; attempt++ {
		sum, err := env.h.Handle(context.Background(), batch)
		if !errors.Is(err, ErrFenced) || sum.Fenced != 2 {
			t.Fatalf("attempt %d: %v, %d fenced; want ErrFenced, 2", attempt, err, sum.Fenced)
		}
		for i := int32(1); i <= 4; i++ {
			if got := env.dr.doc(fooNS, idOf(t, i)) != nil; got != (i <= 2) {
				t.Errorf("attempt %d: document %d in DR: %v", attempt, i, got)
			}
		}
	}
	other := batchOf(t, evs[0])
	for _, recs := range other.Records {
		for i := range recs {
			recs[i].Topic = "another"
		}
	}
	if _, err := env.h.Handle(context.Background(), other); !errors.Is(err, ErrFenced) {
		t.Errorf("a record of another topic: %v, want ErrFenced", err)
	}
}

// TestDropUnderApplyPolicyMovesHeld: a drop that deletes (drop=apply) takes the ledger's delete
// entries out of the live namespace too: DR no longer holds those copies there.
func TestDropUnderApplyPolicyMovesHeld(t *testing.T) {
	pol, err := ParsePolicy("drop=apply")
	if err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, Options{Policy: &pol})
	del := evt(t, changeevent.Delete, fooNS, int32(1), nil)
	drop := evt(t, changeevent.Drop, fooNS, nil, nil)
	drop.ClusterTime.I = 2
	retoken(t, &drop)
	for _, evs := range [][]changeevent.Event{{evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})}, {del}, {drop}} {
		if _, err := env.h.Handle(context.Background(), batchOf(t, evs...)); err != nil {
			t.Fatal(err)
		}
	}
	want := changeevent.Namespace{DB: "bar", Coll: "foo" + sideSuffix(drop.ClusterTime)}
	if e := env.dr.ledger[del.EventID()]; e.Held != want {
		t.Errorf("held in %s, want %s", e.Held, want)
	}
}

// TestHistoryLinesHoldNoCopy: a version history line's ledger entry says so, and names no DR copy
// (docdbdr promote must not take it for an intercepted delete).
func TestHistoryLinesHoldNoCopy(t *testing.T) {
	pol, err := ParsePolicy("delete=apply")
	if err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, Options{Policy: &pol, History: true})
	ins := evt(t, changeevent.Insert, fooNS, int32(1), bson.D{})
	del := evt(t, changeevent.Delete, fooNS, int32(1), nil)
	if _, err := env.h.Handle(context.Background(), batchOf(t, ins, del)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []changeevent.Event{ins, del} {
		e, ok := env.dr.ledger[ev.EventID()]
		if !ok || !e.History || e.Held != (changeevent.Namespace{}) {
			t.Errorf("%s: ledger entry %v history %v held %v; want a history entry holding nothing", ev.Operation, ok, e.History, e.Held)
		}
	}
}
