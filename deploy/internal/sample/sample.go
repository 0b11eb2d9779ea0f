// Package sample builds the sample Lambda events under events/ (used by `sam local invoke -e`
// and by the template tests). The values are fixed, so regenerating gives identical files:
//
//	go run ./deploy/genevents
package sample

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Identity of the sample cluster and topic.
const (
	ClusterARN       = "arn:aws:kafka:us-west-2:123456789012:cluster/docdbdr/6f9d2c1e-0c5b-4f7e-9b1a-2d3c4e5f6a7b-2"
	BootstrapServers = "b-1.docdbdr.abc123.c2.kafka.us-west-2.amazonaws.com:9098,b-2.docdbdr.abc123.c2.kafka.us-west-2.amazonaws.com:9098"
	Topic            = "changevents"
	Partition        = 0
)

// DocumentID is the _id of the one document the sample changes (the original write-up's).
var DocumentID = mustOID("62d70f2e9416e4a253875177")

// Start is the cluster time of the first sample event.
var Start = time.Date(2022, 7, 19, 12, 20, 22, 0, time.UTC)

func mustOID(hex string) primitive.ObjectID {
	id, err := primitive.ObjectIDFromHex(hex)
	if err != nil {
		panic(err)
	}
	return id
}

func raw(v any) bson.Raw {
	b, err := bson.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// ChangeEvents returns the sample change events, in commit order: an insert of {x: 1}, an update
// to {x: 2}, a replace by {x: 3, y: "z"} and a delete, all of one document of bar.foo.
func ChangeEvents() []changeevent.Event {
	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	key := raw(bson.D{{Key: "_id", Value: DocumentID}})
	ev := func(i int, op changeevent.OperationType) changeevent.Event {
		t := Start.Add(time.Duration(i) * time.Second)
		return changeevent.Event{
			Version:     changeevent.FormatVersion,
			Operation:   op,
			NS:          ns,
			DocumentKey: key,
			ClusterTime: primitive.Timestamp{T: uint32(t.Unix()), I: 1},
			WallTime:    t,
			ResumeToken: raw(bson.D{{Key: "_data", Value: fmt.Sprintf("01%08X0000000101", t.Unix())}}),
		}
	}

	insert := ev(0, changeevent.Insert)
	insert.FullDocument = raw(bson.D{{Key: "_id", Value: DocumentID}, {Key: "x", Value: int32(1)}})

	update := ev(1, changeevent.Update)
	update.UpdateDescription = &changeevent.UpdateDescription{
		UpdatedFields: raw(bson.D{{Key: "x", Value: int32(2)}}),
		RemovedFields: []string{},
	}
	update.FullDocument = raw(bson.D{{Key: "_id", Value: DocumentID}, {Key: "x", Value: int32(2)}})

	replace := ev(2, changeevent.Replace)
	replace.FullDocument = raw(bson.D{{Key: "_id", Value: DocumentID}, {Key: "x", Value: int32(3)}, {Key: "y", Value: "z"}})

	del := ev(3, changeevent.Delete)

	return []changeevent.Event{insert, update, replace, del}
}

// MSKEvent returns the sample events as the MSK event source mapping delivers them: one batch,
// one partition, consecutive offsets, base64 keys and values, headers as byte arrays.
func MSKEvent() (events.KafkaEvent, error) {
	var records []events.KafkaRecord
	for i, e := range ChangeEvents() {
		value, err := changeevent.Marshal(&e)
		if err != nil {
			return events.KafkaEvent{}, err
		}
		key, err := changeevent.Key(&e)
		if err != nil {
			return events.KafkaEvent{}, err
		}
		var headers []map[string]events.JSONNumberBytes
		for _, h := range changeevent.Headers(&e) {
			headers = append(headers, map[string]events.JSONNumberBytes{h[0]: events.JSONNumberBytes(h[1])})
		}
		records = append(records, events.KafkaRecord{
			Topic:         Topic,
			Partition:     Partition,
			Offset:        int64(i),
			Timestamp:     events.MilliSecondsEpochTime{Time: e.WallTime.Add(150 * time.Millisecond)},
			TimestampType: "CREATE_TIME",
			Key:           base64.StdEncoding.EncodeToString(key),
			Value:         base64.StdEncoding.EncodeToString(value),
			Headers:       headers,
		})
	}
	return events.KafkaEvent{
		EventSource:      "aws:kafka",
		EventSourceARN:   ClusterARN,
		BootstrapServers: BootstrapServers,
		Records:          map[string][]events.KafkaRecord{fmt.Sprintf("%s-%d", Topic, Partition): records},
	}, nil
}

// MSKEventJSON returns the content of events/msk.json.
func MSKEventJSON() ([]byte, error) {
	ev, err := MSKEvent()
	if err != nil {
		return nil, err
	}
	return indent(ev)
}

// ScheduleEventJSON returns the content of events/schedule.json: the EventBridge scheduled event
// that invokes the capture function.
func ScheduleEventJSON() ([]byte, error) {
	return indent(events.EventBridgeEvent{
		Version:    "0",
		ID:         "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
		DetailType: "Scheduled Event",
		Source:     "aws.events",
		AccountID:  "123456789012",
		Time:       Start,
		Region:     "us-west-2",
		Resources:  []string{"arn:aws:events:us-west-2:123456789012:rule/docdbdr-CaptureFunctionCaptureSchedule"},
		Detail:     json.RawMessage("{}"),
	})
}

func indent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
