package esm

import (
	"encoding/base64"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-lambda-go/events"
)

// EventSourceKafka is the eventSource value of every MSK event.
const EventSourceKafka = "aws:kafka"

// timestampTypeCreate is what MSK reports for topics with the default
// message.timestamp.type. sarama does not expose the batch's timestamp type
// to consumers, and the local topic never uses LogAppendTime.
const timestampTypeCreate = "CREATE_TIME"

// recordsKey is the key of the event's Records map: "<topic>-<partition>",
// exactly as the MSK event source mapping spells it.
func recordsKey(topic string, partition int32) string {
	return fmt.Sprintf("%s-%d", topic, partition)
}

// toRecord converts one consumed message to the MSK record shape: key and
// value base64 (absent when null), timestamp in milliseconds, headers as a
// list of one-entry maps whose values are bytes (JSON: signed integers).
func toRecord(m *sarama.ConsumerMessage) events.KafkaRecord {
	rec := events.KafkaRecord{
		Topic:         m.Topic,
		Partition:     int64(m.Partition),
		Offset:        m.Offset,
		Timestamp:     events.MilliSecondsEpochTime{Time: time.UnixMilli(m.Timestamp.UnixMilli())},
		TimestampType: timestampTypeCreate,
		// MSK sends "headers": [] for a record without headers, never null.
		Headers: make([]map[string]events.JSONNumberBytes, 0, len(m.Headers)),
	}
	if m.Key != nil {
		rec.Key = base64.StdEncoding.EncodeToString(m.Key)
	}
	if m.Value != nil {
		rec.Value = base64.StdEncoding.EncodeToString(m.Value)
	}
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		// A JSON round trip yields a non-nil empty slice for an empty value;
		// start from the same so a built event equals its decoded JSON.
		v := make(events.JSONNumberBytes, len(h.Value))
		copy(v, h.Value)
		rec.Headers = append(rec.Headers, map[string]events.JSONNumberBytes{string(h.Key): v})
	}
	return rec
}

// recordSize approximates the bytes a record adds to the invocation payload;
// it is what the MaxPayloadBytes limit counts.
func recordSize(m *sarama.ConsumerMessage) int {
	n := 200 + len(m.Topic) // field names, numbers, punctuation
	n += base64.StdEncoding.EncodedLen(len(m.Key)) + base64.StdEncoding.EncodedLen(len(m.Value))
	for _, h := range m.Headers {
		if h != nil {
			n += len(h.Key) + 5*len(h.Value) + 8 // each byte is up to "-128,"
		}
	}
	return n
}

// buildEvent groups messages by partition into an MSK event, each
// partition's records in offset order.
func buildEvent(msgs []*sarama.ConsumerMessage, arn, bootstrap string) events.KafkaEvent {
	ev := events.KafkaEvent{
		EventSource:      EventSourceKafka,
		EventSourceARN:   arn,
		BootstrapServers: bootstrap,
		Records:          make(map[string][]events.KafkaRecord),
	}
	for _, m := range msgs {
		k := recordsKey(m.Topic, m.Partition)
		ev.Records[k] = append(ev.Records[k], toRecord(m))
	}
	for _, recs := range ev.Records {
		sort.SliceStable(recs, func(i, j int) bool { return recs[i].Offset < recs[j].Offset })
	}
	return ev
}
