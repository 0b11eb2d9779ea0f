package apply

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// DR is the DR cluster as apply uses it: its documents, and apply's own state database on it
// (DR_STATE_DB). MongoWriter implements it over a *mongo.Client.
//
// A DR must be safe for concurrent use, as MongoWriter is: a Handler reads the pending ledger
// entries and the applied frontiers of a batch alongside its fence (State), and writes the lanes
// of a large segment concurrently (BulkWrite, each call on its own documents); the other calls
// of a batch follow each other.
type DR interface {
	Documents
	State
}

// Documents reads and writes the replicated collections.
type Documents interface {
	// BulkWrite performs writes on one namespace in order, stopping at the first error. A write
	// that the server refused is reported as a *WriteError giving its index in writes (the
	// writes before it were performed); any other error leaves unknown how far it got.
	BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error)
	// FindByIDs reads the documents with the given _ids (those that exist), keyed by KeyOf(_id).
	FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error)
	// ScanIDs calls fn with the _ids of every document of ns, a batch at a time, in no
	// particular order; documents fn deletes from ns are not reported again.
	ScanIDs(ctx context.Context, ns changeevent.Namespace, fn func(ids []bson.RawValue) error) error
	// Collections lists the collections of database db (none when it does not exist).
	Collections(ctx context.Context, db string) ([]string, error)
	// Drop drops a collection. Dropping what does not exist succeeds.
	Drop(ctx context.Context, ns changeevent.Namespace) error
	// Rename renames a collection within its database, failing when to exists. Renaming a
	// collection that no longer exists succeeds (an earlier delivery of the event did it).
	Rename(ctx context.Context, from, to changeevent.Namespace) error
}

// State is apply's state database on DR (DR_STATE_DB): the archive ledger (collection
// "archived", one entry per intercepted event), the applied frontiers (collection "applied")
// and the barrier markers (collection "barriers"). See docs/apply.md. It must be safe for
// concurrent use (see DR).
type State interface {
	// StateDB names the state database; apply never replicates into it.
	StateDB() string
	// EnsureState creates the state collections' indexes; it is idempotent.
	EnsureState(ctx context.Context) error
	// Archived returns which of the event ids have a ledger entry, pending or written.
	Archived(ctx context.Context, eventIDs []string) (map[string]bool, error)
	// Claim inserts pending ledger entries (unordered). It returns the event ids that already had
	// an entry (a duplicate key: someone else claimed them); every other entry was inserted.
	Claim(ctx context.Context, entries []LedgerEntry) (taken map[string]bool, err error)
	// Written marks the entries written (their objects are in S3) and removes their lines.
	Written(ctx context.Context, eventIDs []string) error
	// Revived marks the delete entries held in DR namespace ns (LedgerEntry.Held) of the given
	// _ids revived: the primary inserted the _id again after those deletes, so DR's copy is a
	// live version again, not an intercepted one (docdbdr promote reads the mark). Idempotent.
	Revived(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) error
	// MoveHeld records that DR's copies of the given _ids moved from DR namespace from to to (a
	// barrier moved them): the delete entries held in from with those _ids are held in to now.
	// With ids nil, every entry held in from moves (a whole collection was renamed). Idempotent.
	MoveHeld(ctx context.Context, from, to changeevent.Namespace, ids []bson.RawValue) error
	// Pending returns the pending entries claimed from the partitions of topic, with their
	// lines.
	Pending(ctx context.Context, topic string, partitions []int64) ([]LedgerEntry, error)
	// Frontiers returns the applied frontiers of the partitions of topic.
	Frontiers(ctx context.Context, topic string, partitions []int64) ([]Frontier, error)
	// SetFrontiers inserts or replaces frontiers.
	SetFrontiers(ctx context.Context, fs []Frontier) error
	// Fence returns the fence docdbdr promote wrote (FenceCollection), nil when DR was not
	// promoted.
	Fence(ctx context.Context) (*Fence, error)
	// Barrier returns the state of a barrier marker ("" when there is none).
	Barrier(ctx context.Context, id string) (string, error)
	// SetBarrier inserts or updates a barrier marker.
	SetBarrier(ctx context.Context, m BarrierMarker) error
	// MarkHistory records, for each primary namespace that has no marker yet, that its version
	// history is archived from since on (collection "history"); an existing marker is kept.
	MarkHistory(ctx context.Context, nss []changeevent.Namespace, since time.Time) error
	// ClearHistory removes every history marker: the version history is off, and no time before
	// now can be restored from it.
	ClearHistory(ctx context.Context) error
}

// Ledger entry states.
const (
	StatePending = "pending" // claimed; the line is in the entry, the object may not be in S3 yet
	StateWritten = "written" // the object holding the line is in S3
)

// LedgerEntry is one intercepted event in the ledger (<DR_STATE_DB>.archived).
type LedgerEntry struct {
	EventID  string                // _id
	DB, Coll string                // primary namespace (Coll empty for dropDatabase)
	Op       string                // operation type
	To       changeevent.Namespace // rename: the target (primary namespace); zero otherwise
	DocID    bson.RawValue         // the deleted document's _id, type kept; zero for collection events
	// Held is, for a delete, the DR namespace holding DR's copy of the document: the mapped
	// namespace of the delete, moved along with the copy by barriers (State.MoveHeld).
	Held        changeevent.Namespace
	ClusterTime primitive.Timestamp // of the event
	Object      string              // S3 key of the object holding the line
	Seq         int                 // the line's position in the object
	State       string              // StatePending or StateWritten
	Line        []byte              // the rendered line, while pending
	Topic       string              // Kafka coordinates of the copy that claimed it
	Partition   int64
	Offset      int64
	At          time.Time // when it was claimed
	// History is set on the entry of a version history line (ARCHIVE_HISTORY), not an
	// interception: DR keeps no copy for it.
	History bool
	// Revived is set on a delete's entry once the primary inserted the _id again where DR holds
	// its copy (State.Revived): DR's copy is no longer the intercepted version.
	Revived bool
}

// Frontier is what apply has applied from one partition (<DR_STATE_DB>.applied): every
// record at an offset in [Low, High] was applied (or dead-lettered), and ClusterTimes holds,
// per primary namespace, the cluster time of the newest event applied. A record in [Low, High]
// whose cluster time is not newer than its namespace's is a redelivery or a consumer-group
// replay, and is not applied again: a delta applied a second time to a document that has moved
// on could reorder its fields. (The cluster time tells a recreated topic, whose offsets start
// again, from a replay.) [IntentLow, IntentHigh], when not empty, is a segment whose writes
// were started and may have been interrupted: its records are applied again, their versions
// flagged inexact.
type Frontier struct {
	Topic        string
	Partition    int64
	Low, High    int64 // High < Low: nothing applied yet
	ClusterTimes map[changeevent.Namespace]primitive.Timestamp
	IntentLow    int64
	IntentHigh   int64 // IntentHigh < IntentLow: no segment in flight
	At           time.Time
}

// applied reports whether the record at offset, an event of ns at cluster time ct, was applied.
func (f *Frontier) applied(offset int64, ns changeevent.Namespace, ct primitive.Timestamp) bool {
	last, ok := f.ClusterTimes[ns]
	return f.Low <= offset && offset <= f.High && ok && !ct.After(last)
}

// inFlight reports whether the record at offset belongs to a segment that may have been
// interrupted after some of its writes.
func (f *Frontier) inFlight(offset int64) bool {
	return f.IntentLow <= offset && offset <= f.IntentHigh && !(f.Low <= offset && offset <= f.High)
}

// Fence is what docdbdr promote writes in <DR_STATE_DB>.fence when DR becomes the copy
// applications use: apply applies no record of Topic at or after its partition's end offset in
// Ends (nor any record of another topic), so that a capture still running, or coming back,
// cannot write into the promoted world. Records before the fence are applied (that is how
// apply drains the topic for promote).
type Fence struct {
	Topic      string
	Ends       map[int64]int64 // partition -> the offset of the first record not to apply
	PromotedAt time.Time
}

// ErrFenced is wrapped by the error of an invocation that received records after the fence: the
// records before it are applied, the invocation fails, and the event source mapping keeps the rest
// in the topic (and alarms).
var ErrFenced = errors.New("DR was promoted (docdbdr promote): records after the fence are not applied")

// before returns, for each partition, how many of its records (a prefix) come before the fence,
// and how many records in all do not.
func (f *Fence) before(parts [][]events.KafkaRecord) (kept []int, fenced int) {
	kept = make([]int, len(parts))
	for p, recs := range parts {
		end, ok := f.Ends[recs[0].Partition]
		if recs[0].Topic != f.Topic || !ok {
			end = -1
		}
		for kept[p] < len(recs) && recs[kept[p]].Offset < end {
			kept[p]++
		}
		fenced += len(recs) - kept[p]
	}
	return kept, fenced
}

// prefixes keeps the first n[p] elements of each parts[p], dropping the parts left empty: what
// the fence keeps of the partitions' records (Fence.before), and of their decodings alike.
func prefixes[T any](parts [][]T, n []int) [][]T {
	var out [][]T
	for p, part := range parts {
		if n[p] > 0 {
			out = append(out, part[:n[p]])
		}
	}
	return out
}

// Barrier marker states: a partition's share of a collection event is done in steps.
const (
	BarrierTargetMoved = "target" // rename: the displaced target has been moved aside
	BarrierDone        = "done"   // the share is complete; later events of the partition may be applied
)

// BarrierMarker records that one partition performed (a step of) its share of a collection
// event (<DR_STATE_DB>.barriers).
type BarrierMarker struct {
	ID         string // <eventId>/<partition>
	Op         string
	NS         changeevent.Namespace // DR namespace
	Partitions int                   // N, the barrier header
	State      string
	At         time.Time
}

// Archive is the object store for delete archives, dead letters and claim checks. archive.S3
// implements it.
//
// Put is called from several goroutines at once (the objects of a batch are written in
// parallel), and so is Get (a large batch is decoded in parallel): an implementation must be
// safe for concurrent use.
type Archive interface {
	// Put creates the object at key unless one is there: a conditional write (If-None-Match:
	// *) that never overwrites. An existing object is success: every key apply writes names
	// write-once content (an object recorded in the ledger, the dead letter of one record).
	Put(ctx context.Context, key string, body []byte) error
	// Get reads a claim check; an error wraps archive.ErrNotFound when there is no object at key.
	Get(ctx context.Context, key string) ([]byte, error)
}

// WriteKind is the kind of one DR write.
type WriteKind uint8

// The write kinds. Every write selects one document by _id.
const (
	// ReplaceOne replaces the document with Doc, inserting it when absent (upsert). Used for
	// insert and replace events, and for an update that heals a document DR lacks.
	ReplaceOne WriteKind = iota + 1
	// UpdateOne applies the update document Doc ($set/$unset/$push) when the document exists; it
	// never inserts.
	UpdateOne
	// DeleteOne deletes the document (an "apply" delete policy; the first half of DeleteInsert).
	DeleteOne
	// InsertOne inserts Doc: after a DeleteOne of the same _id, the form of a replacement that
	// holds a top-level $-prefixed field, which a replace cannot carry and an insert can.
	InsertOne
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
	case InsertOne:
		return "insertOne"
	}
	return "unknown"
}

// Write is one operation of a bulk write. Doc is BSON exactly as it came in the Kafka message
// (for ReplaceOne and InsertOne) or built around those bytes (for UpdateOne): it never passes
// through maps.
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
	Inserted int64 // documents inserted by InsertOne
	Modified int64
	Deleted  int64
}

// add sums two results.
func (r BulkResult) add(o BulkResult) BulkResult {
	return BulkResult{Matched: r.Matched + o.Matched, Upserted: r.Upserted + o.Upserted, Inserted: r.Inserted + o.Inserted,
		Modified: r.Modified + o.Modified, Deleted: r.Deleted + o.Deleted}
}

// ErrNamespaceExists is wrapped by Rename's error when the target exists.
var ErrNamespaceExists = errors.New("target namespace exists")

// WriteError is a write the DR server refused, within a bulk write: Index is its position in the
// writes, and the writes before it were performed (an ordered bulk write stops there).
type WriteError struct {
	Index   int
	Code    int
	Message string
}

func (e *WriteError) Error() string {
	return "write " + strconv.Itoa(e.Index) + " refused (code " + strconv.Itoa(e.Code) + "): " + e.Message
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
