package deploy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/deploy/internal/sample"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// LoadMSKEvent decodes events/msk.json. A test that drives the apply handler with the fixture
// uses it like this:
//
//	ev := loadMSKEvent(t)
//	err := handler.Handle(ctx, ev)
func loadMSKEvent(t testing.TB) events.KafkaEvent {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "events", "msk.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var ev events.KafkaEvent
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("events/msk.json is not an events.KafkaEvent: %v", err)
	}
	return ev
}

// TestSampleEventsAreUpToDate fails when events/*.json differ from what the generator writes:
// run `go run ./deploy/genevents`.
func TestSampleEventsAreUpToDate(t *testing.T) {
	for name, build := range map[string]func() ([]byte, error){
		"msk.json":      sample.MSKEventJSON,
		"schedule.json": sample.ScheduleEventJSON,
	} {
		want, err := build()
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("..", "events", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("events/%s is stale: run go run ./deploy/genevents", name)
		}
	}
}

func TestSampleMSKEvent(t *testing.T) {
	ev := loadMSKEvent(t)
	if ev.EventSource != "aws:kafka" || ev.EventSourceARN == "" || ev.BootstrapServers == "" {
		t.Errorf("event header = %q %q %q", ev.EventSource, ev.EventSourceARN, ev.BootstrapServers)
	}
	records := ev.Records[sample.Topic+"-0"]
	if len(ev.Records) != 1 || len(records) != 4 {
		t.Fatalf("records = %v, want 4 in %s-0", ev.Records, sample.Topic)
	}
	wantOps := []changeevent.OperationType{changeevent.Insert, changeevent.Update, changeevent.Replace, changeevent.Delete}
	for i, r := range records {
		if r.Topic != sample.Topic || r.Partition != 0 || r.Offset != int64(i) {
			t.Errorf("record %d at %s/%d/%d", i, r.Topic, r.Partition, r.Offset)
		}
		value, err := base64.StdEncoding.DecodeString(r.Value)
		if err != nil {
			t.Fatalf("record %d value: %v", i, err)
		}
		e, err := changeevent.Unmarshal(value)
		if err != nil {
			t.Fatalf("record %d: changeevent.Unmarshal: %v", i, err)
		}
		if e.Operation != wantOps[i] || e.NS.String() != "bar.foo" {
			t.Errorf("record %d is %s on %s, want %s on bar.foo", i, e.Operation, e.NS, wantOps[i])
		}
		id, err := e.ID()
		if err != nil || id.ObjectID() != sample.DocumentID {
			t.Errorf("record %d _id = %v (%v)", i, id, err)
		}
		key, err := base64.StdEncoding.DecodeString(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := changeevent.Key(&e); !bytes.Equal(key, want) {
			t.Errorf("record %d key %q, want %q", i, key, want)
		}
		headers := map[string]string{}
		for _, h := range r.Headers {
			for k, v := range h {
				headers[k] = string(v)
			}
		}
		if headers[changeevent.HeaderFormat] != "1" || headers[changeevent.HeaderOperation] != string(e.Operation) {
			t.Errorf("record %d headers = %v", i, headers)
		}
	}

	// The update carries the delta and the looked-up document; the replace its new document.
	upd, _ := changeevent.Unmarshal(mustB64(t, records[1].Value))
	if upd.UpdateDescription == nil || upd.UpdateDescription.UpdatedFields.Lookup("x").Int32() != 2 {
		t.Errorf("update description = %+v", upd.UpdateDescription)
	}
	rep, _ := changeevent.Unmarshal(mustB64(t, records[2].Value))
	var doc bson.M
	if err := bson.Unmarshal(rep.FullDocument, &doc); err != nil || doc["x"] != int32(3) || doc["y"] != "z" {
		t.Errorf("replace document = %v (%v)", doc, err)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSampleScheduleEvent(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "events", "schedule.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var ev events.EventBridgeEvent
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("events/schedule.json: %v", err)
	}
	if ev.Source != "aws.events" || ev.DetailType != "Scheduled Event" || len(ev.Resources) != 1 {
		t.Errorf("schedule event = %+v", ev)
	}
}
