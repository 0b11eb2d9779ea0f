package apply

import (
	"context"
	"math"
	"strconv"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// DR is the DR cluster as apply uses it. MongoWriter implements it over a *mongo.Client.
type DR interface {
	// BulkWrite performs writes on one namespace in order, stopping at the first error.
	BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error)
	// FindByIDs reads the documents with the given _ids (those that exist), keyed by KeyOf(_id).
	FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error)
	// Drop drops a collection, or the database when ns.Coll is "". Dropping what does not exist
	// succeeds.
	Drop(ctx context.Context, ns changeevent.Namespace) error
	// Rename renames a collection. Renaming a collection that no longer exists succeeds (it was
	// renamed by an earlier delivery of the same event).
	Rename(ctx context.Context, from, to changeevent.Namespace) error
}

// Archive is the object store for delete archives, dead letters and claim checks. archive.S3
// implements it.
type Archive interface {
	Put(ctx context.Context, key string, body []byte) error
	// Get returns an error wrapping archive.ErrNotFound when there is no object at key.
	Get(ctx context.Context, key string) ([]byte, error)
}

// WriteKind is the kind of one DR write.
type WriteKind uint8

// The write kinds. Every write selects one document by _id.
const (
	// ReplaceOne replaces the document with Doc, inserting it when absent (upsert). Used for
	// insert, replace, and update events that carry the looked-up full document.
	ReplaceOne WriteKind = iota + 1
	// UpdateOne applies the update document Doc ($set/$unset/$push) when the document exists; it
	// never inserts.
	UpdateOne
	// DeleteOne deletes the document (only under an "apply" delete policy).
	DeleteOne
)

// String names the kind.
func (k WriteKind) String() string {
	switch k {
	case ReplaceOne:
		return "replaceOne"
	case UpdateOne:
		return "updateOne"
	case DeleteOne:
		return "deleteOne"
	}
	return "unknown"
}

// Write is one operation of a bulk write. Doc is BSON exactly as it came in the Kafka message
// (for ReplaceOne) or built around those bytes (for UpdateOne): it never passes through maps.
type Write struct {
	Kind WriteKind
	ID   bson.RawValue
	Doc  bson.Raw
}

// size estimates the write's share of a bulk command.
func (w Write) size() int { return len(w.Doc) + len(w.ID.Value) + 32 }

// BulkResult counts what a bulk write did.
type BulkResult struct {
	Matched  int64 // documents matched by ReplaceOne and UpdateOne (upserts excluded)
	Upserted int64 // documents inserted by ReplaceOne
	Modified int64
	Deleted  int64
}

// IDKey identifies a document by _id within a namespace, for grouping and conflict checks.
type IDKey string

// KeyOf returns the key of an _id. Numbers that MongoDB treats as the same _id (int32 1, int64 1,
// double 1.0) get the same key; other values are keyed by their BSON type and bytes.
func KeyOf(id bson.RawValue) IDKey {
	switch id.Type {
	case bson.TypeInt32:
		return IDKey("n:" + strconv.FormatInt(int64(id.Int32()), 10))
	case bson.TypeInt64:
		return IDKey("n:" + strconv.FormatInt(id.Int64(), 10))
	case bson.TypeDouble:
		f := id.Double()
		if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return IDKey("n:" + strconv.FormatInt(int64(f), 10))
		}
		return IDKey("n:" + strconv.FormatFloat(f, 'g', -1, 64))
	}
	return IDKey(string(rune(id.Type)) + string(id.Value))
}
