package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// ReadableTimeFormat is the layout of Record.TimestampReadable (UTC), as in the original write-up.
const ReadableTimeFormat = "2006-01-02 15:04:05"

// Kafka locates a record in Kafka.
type Kafka struct {
	Topic     string `json:"topic"`
	Partition int64  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Namespace is a database and collection as written in a record.
type Namespace struct {
	DB   string `json:"db"`
	Coll string `json:"coll"`
}

// Record is one line of a delete archive object: one intercepted delete, drop, rename or
// dropDatabase, written exactly once (apply's ledger, docs/apply.md). The object is gzip'd
// newline-delimited JSON. The fields that hold BSON values (_id, before, clusterTime,
// resumeToken) are canonical Extended JSON, which keeps every BSON type ({"$oid": ...},
// {"$numberLong": ...}); the descriptive fields are plain JSON so that Athena and people can read
// them (timestamp is a number, as in the original write-up). Fields are written in this order.
type Record struct {
	// EventID identifies the event (changeevent.Event.EventID): every copy of one event, and so
	// every attempt to archive it, has the same EventID. An archive holds each at most once.
	EventID string `json:"eventId"`
	// ID is the document's _id; null for drop, rename and dropDatabase.
	ID                json.RawMessage `json:"_id"`
	Operation         string          `json:"operation"`
	Timestamp         int64           `json:"timestamp"`         // cluster time, unix seconds
	TimestampReadable string          `json:"timestampReadable"` // cluster time, UTC
	DB                string          `json:"db"`
	Coll              string          `json:"coll,omitempty"` // absent for dropDatabase
	To                *Namespace      `json:"to,omitempty"`   // rename target
	ClusterTime       json.RawMessage `json:"clusterTime"`
	ResumeToken       json.RawMessage `json:"resumeToken"`
	// Kafka locates the copy of the event that was archived (informational: a republished or
	// barrier copy of the same event has other coordinates and the same EventID).
	Kafka Kafka `json:"kafka"`
	// Before is, for a delete, the document exactly as it was in the primary immediately before
	// the delete, or null when DR had no version of it (BeforeNote says so). Always null for
	// drop, rename and dropDatabase, whose documents are kept in DR under PreservedAs.
	Before json.RawMessage `json:"before"`
	// BeforeExact is true when Before is proven to be the version at the event; false when it
	// could not be (BeforeNote says why) and when Before is null. True for collection events.
	BeforeExact bool   `json:"beforeExact"`
	BeforeNote  string `json:"beforeNote,omitempty"`
	// PreservedAs names, for a drop, rename or dropDatabase under the archive policy, where DR
	// now keeps what the event removed from the live namespace (see docs/apply.md).
	PreservedAs *Preserved `json:"preservedAs,omitempty"`
}

// Preserved names the DR side collection(s) holding what a collection event removed: a drop or
// rename gives DB and Coll (the side collection); a dropDatabase gives DB and Suffix, meaning
// that every collection c of the database is kept as c+Suffix.
type Preserved struct {
	DB     string `json:"db"`
	Coll   string `json:"coll,omitempty"`
	Suffix string `json:"suffix,omitempty"`
}

var jsonNull = json.RawMessage("null")

// NewRecord builds the record of an intercepted event. before is the document's version just
// before a delete (nil when DR had none, and for collection events); BeforeExact is set to
// whether there is a before-image (or the event is a collection event); the caller corrects it,
// and sets BeforeNote and PreservedAs, when it knows better.
func NewRecord(ev *changeevent.Event, at Kafka, before bson.Raw) (Record, error) {
	r := Record{
		EventID:           ev.EventID(),
		ID:                jsonNull,
		Operation:         string(ev.Operation),
		Timestamp:         int64(ev.ClusterTime.T),
		TimestampReadable: changeevent.Time(ev.ClusterTime).Format(ReadableTimeFormat),
		DB:                ev.NS.DB,
		Coll:              ev.NS.Coll,
		Kafka:             at,
		Before:            jsonNull,
		BeforeExact:       before != nil || !ev.Operation.IsDocumentChange(),
		ResumeToken:       jsonNull,
	}
	if ev.To != nil {
		r.To = &Namespace{DB: ev.To.DB, Coll: ev.To.Coll}
	}
	if ev.Operation.IsDocumentChange() {
		id, err := ev.ID()
		if err != nil {
			return Record{}, err
		}
		if r.ID, err = changeevent.IDJSON(id); err != nil {
			return Record{}, err
		}
	}
	var err error
	if r.ClusterTime, err = valueJSON(ev.ClusterTime); err != nil {
		return Record{}, err
	}
	if len(ev.ResumeToken) > 0 {
		if r.ResumeToken, err = bson.MarshalExtJSON(ev.ResumeToken, true, false); err != nil {
			return Record{}, fmt.Errorf("render resume token as Extended JSON: %w", err)
		}
	}
	if before != nil {
		if r.Before, err = bson.MarshalExtJSON(before, true, false); err != nil {
			return Record{}, fmt.Errorf("render before-image as Extended JSON: %w", err)
		}
	}
	return r, nil
}

// valueJSON renders one BSON value as canonical Extended JSON.
func valueJSON(v any) (json.RawMessage, error) {
	js, err := bson.MarshalExtJSON(bson.D{{Key: "v", Value: v}}, true, false)
	if err != nil {
		return nil, fmt.Errorf("render %T as Extended JSON: %w", v, err)
	}
	return js[len(`{"v":`) : len(js)-1], nil
}

// MarshalLine renders the record as one JSON line (without the newline). The same record always
// renders to the same bytes.
func (r Record) MarshalLine() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("encode archive record: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ParseLine decodes one line of a delete archive object.
func ParseLine(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("decode archive record: %w", err)
	}
	return r, nil
}

// IDValue returns the record's _id as a BSON value (the type it had in the primary).
func (r Record) IDValue() (bson.RawValue, error) {
	var doc bson.Raw
	if err := bson.UnmarshalExtJSON([]byte(`{"_id":`+string(r.ID)+`}`), true, &doc); err != nil {
		return bson.RawValue{}, fmt.Errorf("decode archived _id: %w", err)
	}
	return doc.Lookup("_id"), nil
}

// BeforeDocument returns the archived before-image as BSON, or nil when it is null.
func (r Record) BeforeDocument() (bson.Raw, error) {
	if len(r.Before) == 0 || bytes.Equal(r.Before, jsonNull) {
		return nil, nil
	}
	var doc bson.Raw
	if err := bson.UnmarshalExtJSON(r.Before, true, &doc); err != nil {
		return nil, fmt.Errorf("decode archived before-image: %w", err)
	}
	return doc, nil
}

// ClusterTimestamp returns the record's cluster time.
func (r Record) ClusterTimestamp() (primitive.Timestamp, error) {
	var doc struct {
		V primitive.Timestamp `bson:"v"`
	}
	if err := bson.UnmarshalExtJSON([]byte(`{"v":`+string(r.ClusterTime)+`}`), true, &doc); err != nil {
		return primitive.Timestamp{}, fmt.Errorf("decode archived clusterTime: %w", err)
	}
	return doc.V, nil
}

// EncodeObject joins lines into a delete archive object: gzip'd, one line per record, each ended
// by "\n". The gzip header carries no name or time, so the same lines give the same bytes.
func EncodeObject(lines [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, l := range lines {
		if _, err := zw.Write(l); err != nil {
			return nil, fmt.Errorf("compress archive object: %w", err)
		}
		if _, err := zw.Write([]byte{'\n'}); err != nil {
			return nil, fmt.Errorf("compress archive object: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress archive object: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeObject splits a delete archive object into its lines (without their newlines).
func DecodeObject(body []byte) ([][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("archive object is not gzip: %w", err)
	}
	defer zr.Close()
	var lines [][]byte
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024) // a line holds a whole before-image (≤ 16 MB BSON)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read archive object: %w", err)
	}
	return lines, nil
}
