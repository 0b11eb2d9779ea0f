package apply

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Fuzz targets for what the MSK event source mapping hands apply. Whatever a record holds — a
// key or value that is not base64, a value that is not BSON or not a valid event, odd headers —
// Handle must not panic, and with healthy dependencies must not fail: every record is either
// used or dead-lettered, so a poison record can never block its partition. Seed corpora are
// under testdata/fuzz/.

// fuzzHandler is a handler over the in-memory DR and archive of fakes_test.go, which never fail
// unless told to.
func fuzzHandler(t *testing.T) (*Handler, *fakeArchive) {
	ar := newFakeArchive()
	h, err := New(newFakeDR(), ar, Options{
		ArchivePrefix:    "docdbdr/",
		ClaimCheckBucket: "docdbdr-archive",
		Logger:           slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Metrics:          io.Discard,
		Now:              func() time.Time { return time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, ar
}

// fuzzMessages are valid message values: an insert, an update without a full document, a
// delete, a drop and a claim-check stub.
func fuzzMessages() [][]byte {
	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	ts := primitive.Timestamp{T: 1714564800, I: 1}
	marshal := func(v any) bson.Raw {
		b, err := bson.Marshal(v)
		if err != nil {
			panic(err)
		}
		return b
	}
	tok := marshal(bson.D{{Key: "_data", Value: "8266323A40000000012B"}})
	key := marshal(bson.D{{Key: "_id", Value: int32(1)}})
	evs := []changeevent.Event{
		{Version: 1, Operation: changeevent.Insert, NS: ns, DocumentKey: key, ClusterTime: ts, ResumeToken: tok,
			FullDocument: marshal(bson.D{{Key: "_id", Value: int32(1)}, {Key: "a", Value: bson.A{"x", int64(2)}}})},
		{Version: 1, Operation: changeevent.Update, NS: ns, DocumentKey: key, ClusterTime: ts, ResumeToken: tok,
			UpdateDescription: &changeevent.UpdateDescription{UpdatedFields: marshal(bson.D{{Key: "a.1", Value: "y"}}),
				RemovedFields: []string{"b"}, TruncatedArrays: []changeevent.TruncatedArray{{Field: "a", NewSize: 1}}}},
		{Version: 1, Operation: changeevent.Delete, NS: ns, DocumentKey: key, ClusterTime: ts, ResumeToken: tok},
		{Version: 1, Operation: changeevent.Drop, NS: ns, ClusterTime: ts, ResumeToken: tok},
		{Version: 1, Operation: changeevent.Insert, NS: ns, DocumentKey: key, ClusterTime: ts, ResumeToken: tok,
			ClaimCheck: &changeevent.ClaimCheck{Bucket: "docdbdr-archive", Key: "docdbdr/claimcheck/x.bson", Size: 3, SHA256: "00"}},
	}
	var out [][]byte
	for i := range evs {
		m, err := changeevent.Marshal(&evs[i])
		if err != nil {
			panic(err)
		}
		out = append(out, m)
	}
	return out
}

// FuzzKafkaRecord feeds one record: a key, a value (base64-encoded when encode is true, else
// passed as received, usually not base64) and one header. The record must be applied when it
// decodes to a usable event, and dead-lettered otherwise; Handle never fails.
func FuzzKafkaRecord(f *testing.F) {
	for _, m := range fuzzMessages() {
		f.Add("YmFyLmZvb3xuOjE=", m, true, changeevent.HeaderFormat, []byte("1"))
	}
	f.Add("not base64!", []byte("x"), true, changeevent.HeaderFormat, []byte("1"))
	f.Add("", []byte("%%%"), false, "", []byte(nil))
	f.Add("", []byte{}, true, changeevent.HeaderFormat, []byte("2"))
	f.Add("a2V5", []byte("not bson"), true, changeevent.HeaderOperation, []byte("insert"))
	f.Fuzz(func(t *testing.T, key string, value []byte, encode bool, hk string, hv []byte) {
		// A record comes from JSON, which holds only valid UTF-8.
		key = strings.ToValidUTF8(key, "\uFFFD")
		if !encode {
			value = []byte(strings.ToValidUTF8(string(value), "\uFFFD"))
		}
		rec := events.KafkaRecord{Topic: "changevents", Partition: 2, Offset: 40,
			Timestamp: events.MilliSecondsEpochTime{Time: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)},
			Key:       key, Value: string(value)}
		if encode {
			rec.Value = base64.StdEncoding.EncodeToString(value)
		}
		if hk != "" {
			rec.Headers = []map[string]events.JSONNumberBytes{{hk: events.JSONNumberBytes(hv)}}
		}
		h, ar := fuzzHandler(t)
		sum, err := h.Handle(context.Background(), events.KafkaEvent{Records: map[string][]events.KafkaRecord{"changevents-2": {rec}}})
		if err != nil {
			t.Fatalf("a record failed the invocation instead of being applied or dead-lettered: %v", err)
		}
		if sum.Records != 1 {
			t.Fatalf("summary counts %d records, want 1", sum.Records)
		}
		wantPoison := !usable(rec)
		deadLetters := 0
		for k, body := range ar.objects {
			if strings.HasPrefix(k, "docdbdr/deadletter/") {
				deadLetters++
				var d archive.DeadLetter
				if err := json.Unmarshal(body, &d); err != nil || d.Reason == "" || d.Value != rec.Value || d.Key != rec.Key {
					t.Fatalf("dead letter %s does not keep the record and its reason: %s", k, body)
				}
			}
		}
		if wantPoison && (sum.DeadLettered != 1 || deadLetters != 1) {
			t.Fatalf("an unusable record was not dead-lettered: summary %d, objects %d", sum.DeadLettered, deadLetters)
		}
		if !wantPoison && (sum.DeadLettered != 0 || deadLetters != 0) {
			t.Fatalf("a usable record was dead-lettered")
		}
	})
}

// usable reports whether a record decodes to an event apply can use without S3 (claim checks
// point at objects this fuzz archive does not hold, so they are dead-lettered too).
func usable(r events.KafkaRecord) bool {
	if _, err := base64.StdEncoding.DecodeString(r.Key); err != nil {
		return false
	}
	v, err := base64.StdEncoding.DecodeString(r.Value)
	if err != nil || len(v) == 0 {
		return false
	}
	for _, h := range r.Headers {
		if f, ok := h[changeevent.HeaderFormat]; ok && strings.TrimSpace(string(f)) != strconv.Itoa(changeevent.FormatVersion) {
			return false
		}
	}
	e, err := changeevent.Unmarshal(v)
	return err == nil && e.ClaimCheck == nil
}

// FuzzKafkaEventJSON feeds whole events as the Lambda runtime would decode them from JSON. An
// event that decodes must be handled without a panic or an error, every record counted.
func FuzzKafkaEventJSON(f *testing.F) {
	for i, m := range fuzzMessages() {
		f.Add([]byte(fmt.Sprintf(`{"eventSource":"aws:kafka","records":{"changevents-0":[{"topic":"changevents","partition":0,"offset":%d,"timestamp":1714564800000,"timestampType":"CREATE_TIME","key":"YmFyLmZvb3xuOjE=","value":%q,"headers":[{"docdbdr-format":[49]}]}]}}`,
			i, base64.StdEncoding.EncodeToString(m))))
	}
	f.Add([]byte(`{"records":{"t-0":[{"topic":"t","partition":0,"offset":1,"key":"!!","value":"%%%","headers":[{"docdbdr-format":[50]}]}]}}`))
	f.Add([]byte(`{"records":{"t-1":[{"offset":5},{"offset":5,"value":"AA=="}],"t-0":[]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev events.KafkaEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return // the Lambda runtime refuses the payload before apply runs
		}
		n := 0
		for _, recs := range ev.Records {
			n += len(recs)
		}
		h, _ := fuzzHandler(t)
		sum, err := h.Handle(context.Background(), ev)
		if err != nil {
			t.Fatalf("event failed the invocation: %v", err)
		}
		if sum.Records != n {
			t.Fatalf("summary counts %d records, the event has %d", sum.Records, n)
		}
	})
}
