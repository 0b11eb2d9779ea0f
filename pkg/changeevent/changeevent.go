// Package changeevent defines the Kafka message that capture publishes and apply consumes:
// one change-stream event, with every BSON type kept exactly as the primary stored it.
//
// The message value is a BSON document (see docs/message-format.md for the field list and the
// measurement behind choosing BSON over Extended JSON). Two Kafka headers repeat the format
// version and the operation type so that consumers and tools can route without decoding.
package changeevent

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/big"
	"slices"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// FormatVersion is the version of the message layout written by this code. A consumer refuses
// (dead-letters) a message whose version it does not know instead of guessing at its meaning.
const FormatVersion = 1

// Kafka header names. Every message carries HeaderFormat and HeaderOperation.
const (
	HeaderFormat    = "docdbdr-format" // decimal FormatVersion, e.g. "1"
	HeaderOperation = "docdbdr-op"     // the OperationType, e.g. "delete"
	// HeaderBarrier marks a copy of a drop, rename or dropDatabase event: capture publishes one
	// copy to every partition of the topic, in stream order, so that each partition sees the
	// collection event at the same point relative to its own document changes. The value is
	// the decimal number of partitions the event was published to.
	HeaderBarrier = "docdbdr-barrier"
)

// OperationType is a change stream event's operationType.
type OperationType string

// The operation types a change stream reports.
const (
	Insert       OperationType = "insert"
	Update       OperationType = "update"
	Replace      OperationType = "replace"
	Delete       OperationType = "delete"
	Drop         OperationType = "drop"
	Rename       OperationType = "rename"
	DropDatabase OperationType = "dropDatabase"
	Invalidate   OperationType = "invalidate"
)

// Known reports whether op is one of the operation types this format carries. Invalidate is not
// published (it ends a capture drain) and so is not known here.
func (op OperationType) Known() bool {
	switch op {
	case Insert, Update, Replace, Delete, Drop, Rename, DropDatabase:
		return true
	}
	return false
}

// IsDocumentChange reports whether op changes one document (as opposed to a whole collection or
// database). Document changes carry a document key.
func (op OperationType) IsDocumentChange() bool {
	switch op {
	case Insert, Update, Replace, Delete:
		return true
	}
	return false
}

// Namespace is a database and, except for dropDatabase, a collection.
type Namespace struct {
	DB   string `bson:"db"`
	Coll string `bson:"coll,omitempty"`
}

// String returns "db.coll", or "db" when there is no collection.
func (n Namespace) String() string {
	if n.Coll == "" {
		return n.DB
	}
	return n.DB + "." + n.Coll
}

// TruncatedArray says that the array at Field was shortened to NewSize elements.
type TruncatedArray struct {
	Field   string `bson:"field"`
	NewSize int32  `bson:"newSize"`
}

// UpdateDescription is the delta of an update event.
type UpdateDescription struct {
	UpdatedFields   bson.Raw         `bson:"updatedFields"`
	RemovedFields   []string         `bson:"removedFields"`
	TruncatedArrays []TruncatedArray `bson:"truncatedArrays,omitempty"`
}

// ClaimCheck points at an S3 object that holds the full encoded Event when the event was too
// large for a Kafka message. The published message then carries only the routing fields
// (operation, namespace, document key, cluster time, resume token) and this reference.
type ClaimCheck struct {
	Bucket string `bson:"bucket"`
	Key    string `bson:"key"`
	Size   int64  `bson:"size"`
	SHA256 string `bson:"sha256"` // hex digest of the object, checked on retrieval
}

// Event is one change event in the published format.
type Event struct {
	Version           int32               `bson:"v"`
	Operation         OperationType       `bson:"op"`
	NS                Namespace           `bson:"ns"`
	To                *Namespace          `bson:"to,omitempty"`          // rename target
	DocumentKey       bson.Raw            `bson:"documentKey,omitempty"` // {_id: ...}
	FullDocument      bson.Raw            `bson:"fullDocument,omitempty"`
	UpdateDescription *UpdateDescription  `bson:"updateDescription,omitempty"`
	ClusterTime       primitive.Timestamp `bson:"clusterTime"`
	WallTime          time.Time           `bson:"wallTime,omitempty"`
	ResumeToken       bson.Raw            `bson:"resumeToken"`
	ClaimCheck        *ClaimCheck         `bson:"claimCheck,omitempty"`
}

// Validate checks the invariants a consumer relies on.
func (e *Event) Validate() error {
	if e.Version != FormatVersion {
		return fmt.Errorf("unknown message format version %d (this build reads %d)", e.Version, FormatVersion)
	}
	if !e.Operation.Known() {
		return fmt.Errorf("unknown operation type %q", e.Operation)
	}
	if e.NS.DB == "" {
		return errors.New("event has no namespace database")
	}
	if e.Operation != DropDatabase && e.NS.Coll == "" {
		return fmt.Errorf("%s event has no namespace collection", e.Operation)
	}
	if len(e.ResumeToken) == 0 {
		return errors.New("event has no resume token")
	}
	if e.ClaimCheck != nil {
		return nil // the rest of the body is in the claim-checked object
	}
	if e.Operation.IsDocumentChange() {
		if _, err := e.ID(); err != nil {
			return err
		}
	}
	switch e.Operation {
	case Insert, Replace:
		if e.FullDocument == nil {
			return fmt.Errorf("%s event has no fullDocument", e.Operation)
		}
	case Update:
		if e.UpdateDescription == nil && e.FullDocument == nil {
			return errors.New("update event has neither updateDescription nor fullDocument")
		}
	case Rename:
		if e.To == nil || e.To.DB == "" || e.To.Coll == "" {
			return errors.New("rename event has no target namespace")
		}
	}
	return nil
}

// normalize makes an empty BSON field (which the decoder gives for a null value) absent, so that
// Marshal writes what it read.
func (e *Event) normalize() {
	for _, r := range []*bson.Raw{&e.DocumentKey, &e.FullDocument, &e.ResumeToken} {
		if len(*r) == 0 {
			*r = nil
		}
	}
	if ud := e.UpdateDescription; ud != nil && len(ud.UpdatedFields) == 0 {
		ud.UpdatedFields = nil
	}
}

// ID returns the document's _id from the document key.
func (e *Event) ID() (bson.RawValue, error) {
	if len(e.DocumentKey) == 0 {
		return bson.RawValue{}, fmt.Errorf("%s event has no documentKey", e.Operation)
	}
	id, err := e.DocumentKey.LookupErr("_id")
	if err != nil {
		return bson.RawValue{}, fmt.Errorf("documentKey has no _id: %w", err)
	}
	return id, nil
}

// Unmarshal decodes and validates a message value. The event's document key, full document,
// updated fields and resume token point into b: the caller must not modify b afterwards.
//
// A message as Marshal writes it is decoded by walking its raw BSON (decodeMessage), without
// reflection; one with anything else in it (another type for a field, an unknown field) is
// decoded by the driver's reflective decoder into the Event struct, as before, so both accept and
// produce the same (FuzzUnmarshal checks they agree).
func Unmarshal(b []byte) (Event, error) {
	if err := validate(b); err != nil {
		return Event{}, fmt.Errorf("message is not a BSON document: %w", err)
	}
	e, ok := decodeMessage(b)
	if !ok {
		var err error
		if e, err = unmarshalReflect(b); err != nil {
			return Event{}, err
		}
	}
	e.normalize()
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// unmarshalReflect decodes a (validated) message with the driver's struct decoder.
func unmarshalReflect(b []byte) (Event, error) {
	var e Event
	if err := bson.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("decode message: %w", err)
	}
	return e, nil
}

// Key returns the Kafka message key. For a document change it is the database and the
// document's _id, "<db>|<_id>" (numbers by value, as "n:<value>"; anything else as canonical
// Extended JSON): every change to one document hashes to one partition and so stays in commit
// order, and the collection is deliberately not part of it, so that a document keeps its
// partition when its collection is renamed within the database. For a collection event it is
// the namespace ("<db>.<coll>", or "<db>" for dropDatabase); those are published to every
// partition (HeaderBarrier).
func Key(e *Event) ([]byte, error) {
	if !e.Operation.IsDocumentChange() {
		return []byte(e.NS.String()), nil
	}
	id, err := e.ID()
	if err != nil {
		return nil, err
	}
	key := make([]byte, 0, len(e.NS.DB)+1+len(`{"$oid":"0123456789abcdef01234567"}`))
	key = append(append(key, e.NS.DB...), '|')
	if oid, ok := id.ObjectIDOK(); ok { // the common case, in place
		return appendOIDJSON(key, oid), nil
	}
	if n, ok := numericKey(id); ok {
		return append(key, n...), nil
	}
	js, err := IDJSON(id)
	if err != nil {
		return nil, err
	}
	return append(key, js...), nil
}

// numericKey renders a numeric _id so that values MongoDB treats as the same _id (int32 1,
// int64 1, double 1.0, Decimal128 "1") give the same key: the unique _id index compares numbers
// by value, so they are one document and their changes must share a partition.
func numericKey(id bson.RawValue) (string, bool) {
	var f *big.Float
	switch id.Type {
	case bson.TypeInt32:
		return "n:" + strconv.FormatInt(int64(id.Int32()), 10), true
	case bson.TypeInt64:
		return "n:" + strconv.FormatInt(id.Int64(), 10), true
	case bson.TypeDouble:
		d := id.Double()
		if math.IsNaN(d) || math.IsInf(d, 0) {
			return "n:" + strconv.FormatFloat(d, 'g', -1, 64), true
		}
		f = big.NewFloat(d)
	case bson.TypeDecimal128:
		bf, _, err := big.ParseFloat(id.Decimal128().String(), 10, 256, big.ToNearestEven)
		if err != nil {
			return "", false // NaN, Infinity: keep the Extended JSON form
		}
		f = bf
	default:
		return "", false
	}
	if f.IsInt() {
		if i, acc := f.Int64(); acc == big.Exact {
			return "n:" + strconv.FormatInt(i, 10), true
		}
	}
	return "n:" + f.Text('g', -1), true
}

// IDJSON renders an _id value as canonical Extended JSON ({"$oid": ...}, {"$numberInt": ...}),
// which keeps its BSON type.
func IDJSON(id bson.RawValue) ([]byte, error) {
	if oid, ok := id.ObjectIDOK(); ok { // the common case, without reflection
		return appendOIDJSON(make([]byte, 0, 35), oid), nil
	}
	doc := bson.D{{Key: "_id", Value: id}}
	js, err := bson.MarshalExtJSON(doc, true, false)
	if err != nil {
		return nil, fmt.Errorf("render _id as Extended JSON: %w", err)
	}
	// js is {"_id":<value>}: keep only <value>.
	return js[len(`{"_id":`) : len(js)-1], nil
}

// appendOIDJSON appends an ObjectID's canonical Extended JSON, {"$oid":"<24 hex digits>"}.
func appendOIDJSON(dst []byte, oid primitive.ObjectID) []byte {
	dst = append(dst, `{"$oid":"`...)
	dst = hex.AppendEncode(dst, oid[:])
	return append(dst, `"}`...)
}

// Partition is the partition of n that a message with key lands on: the 32-bit FNV-1a hash of
// the key, as a signed int32, modulo n, negated when negative. It is sarama's hash partitioner,
// which capture produces with (pkg/kafka checks the two agree), written here so that apply,
// which links no Kafka client, knows which partition owns a document.
func Partition(key []byte, n int32) int32 {
	h := fnv.New32a()
	h.Write(key)
	p := int32(h.Sum32()) % n
	if p < 0 {
		p = -p
	}
	return p
}

// Headers returns the Kafka headers for the event, as name/value pairs.
//
// The slice of a known operation is shared between events: callers must not modify it (append to
// a slices.Clip of it, as capture's barrier copies do).
func Headers(e *Event) [][2]string {
	if h, ok := knownHeaders[e.Operation]; ok {
		return h
	}
	return headersOf(e.Operation)
}

func headersOf(op OperationType) [][2]string {
	return [][2]string{
		{HeaderFormat, strconv.Itoa(FormatVersion)},
		{HeaderOperation, string(op)},
	}
}

// knownHeaders are the headers of each known operation, built once.
var knownHeaders = func() map[OperationType][][2]string {
	m := map[OperationType][][2]string{}
	for _, op := range []OperationType{Insert, Update, Replace, Delete, Drop, Rename, DropDatabase} {
		m[op] = slices.Clip(headersOf(op))
	}
	return m
}()

// Time converts a cluster time to wall-clock time (second resolution).
func Time(ts primitive.Timestamp) time.Time {
	return time.Unix(int64(ts.T), 0).UTC()
}
