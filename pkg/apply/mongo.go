package apply

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// DefaultStateDB is the default DR_STATE_DB: apply's state database on DR.
const DefaultStateDB = "docdbdr"

// The collections of the state database.
const (
	LedgerCollection   = "archived"
	FrontierCollection = "applied"
	BarrierCollection  = "barriers"
	FenceCollection    = "fence" // written by docdbdr promote, read by apply (Fence)
	// FenceID is the _id of the fence document.
	FenceID = "promoted"
	// HistoryCollection holds one marker per primary namespace whose version history is
	// archived (ARCHIVE_HISTORY=on): {_id: "<db>.<coll>", db, coll, since: <Date>}.
	HistoryCollection = "history"
)

// MongoWriter is the DR cluster over a MongoDB driver client. It is safe for concurrent use.
type MongoWriter struct {
	client *mongo.Client
	state  string
}

// NewMongoWriter returns a DR writer over client whose state database is DefaultStateDB.
func NewMongoWriter(client *mongo.Client) *MongoWriter {
	return &MongoWriter{client: client, state: DefaultStateDB}
}

// WithStateDB returns a writer over the same client with state database db (DR_STATE_DB).
func (m *MongoWriter) WithStateDB(db string) *MongoWriter {
	return &MongoWriter{client: m.client, state: db}
}

func (m *MongoWriter) coll(ns changeevent.Namespace) *mongo.Collection {
	return m.client.Database(ns.DB).Collection(ns.Coll)
}

// BulkWrite performs writes as ordered bulk writes (the driver splits them into commands within
// the server's limits). Documents are passed to the driver as bson.Raw and reach the server
// byte for byte. A write the server refused comes back as a *WriteError.
//
// A DeleteOne followed by an InsertOne of the same _id (how a document with a top-level
// $-prefixed field is replaced, see replaceWrites) is run on its own and never loses the
// version DR held: the document is read first, and put back when the server refuses the insert;
// the pair is then reported refused at the DeleteOne's index.
func (m *MongoWriter) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	var total BulkResult
	for start := 0; start < len(writes); {
		pair := start
		for pair+1 < len(writes) && !isDeleteInsertPair(writes[pair], writes[pair+1]) {
			pair++
		}
		if pair+1 >= len(writes) {
			res, err := m.bulk(ctx, ns, writes[start:], start)
			return total.add(res), err
		}
		res, err := m.bulk(ctx, ns, writes[start:pair], start)
		total = total.add(res)
		if err != nil {
			return total, err
		}
		res, err = m.deleteInsert(ctx, ns, writes[pair], writes[pair+1], pair)
		total = total.add(res)
		if err != nil {
			return total, err
		}
		start = pair + 2
	}
	return total, nil
}

func isDeleteInsertPair(a, b Write) bool {
	return a.Kind == DeleteOne && b.Kind == InsertOne && KeyOf(a.ID) == KeyOf(b.ID)
}

// deleteInsert runs one DeleteOne+InsertOne pair, restoring the deleted version when the insert
// is refused. index is the DeleteOne's position in the caller's writes.
func (m *MongoWriter) deleteInsert(ctx context.Context, ns changeevent.Namespace, del, ins Write, index int) (BulkResult, error) {
	coll := m.coll(ns)
	var held bson.Raw
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: del.ID}}).Decode(&held)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return BulkResult{}, err
	}
	res, err := m.bulk(ctx, ns, []Write{del, ins}, index)
	var we *WriteError
	if !errors.As(err, &we) || we.Index != index+1 {
		return res, err
	}
	// The insert was refused after the delete: put back what DR held.
	if held != nil {
		if _, rerr := coll.InsertOne(ctx, held); rerr != nil && !mongo.IsDuplicateKeyError(rerr) {
			return res, fmt.Errorf("DR refused the insert of %s (%v) and restoring the version it held failed: %w", ns, we, rerr)
		}
	}
	we.Index = index
	return BulkResult{}, we
}

// bulk is one ordered bulk write; offset is the position of writes[0] in the caller's writes,
// added to a refused write's index.
func (m *MongoWriter) bulk(ctx context.Context, ns changeevent.Namespace, writes []Write, offset int) (BulkResult, error) {
	if len(writes) == 0 {
		return BulkResult{}, nil
	}
	models := make([]mongo.WriteModel, len(writes))
	for i, w := range writes {
		filter := bson.D{{Key: "_id", Value: w.ID}}
		switch w.Kind {
		case ReplaceOne:
			models[i] = mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(w.Doc).SetUpsert(true)
		case UpdateOne:
			models[i] = mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(w.Doc)
		case DeleteOne:
			models[i] = mongo.NewDeleteOneModel().SetFilter(filter)
		case InsertOne:
			models[i] = mongo.NewInsertOneModel().SetDocument(w.Doc)
		default:
			return BulkResult{}, fmt.Errorf("write %d has unknown kind %d", offset+i, w.Kind)
		}
	}
	res, err := m.coll(ns).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true))
	var out BulkResult
	if res != nil {
		out = BulkResult{Matched: res.MatchedCount, Upserted: res.UpsertedCount, Inserted: res.InsertedCount,
			Modified: res.ModifiedCount, Deleted: res.DeletedCount}
	}
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0 {
		we := bwe.WriteErrors[0]
		return out, &WriteError{Index: offset + we.Index, Code: we.Code, Message: we.Message}
	}
	return out, err
}

// FindByIDs reads the documents whose _id is in ids with one find ({_id: {$in: ids}}).
func (m *MongoWriter) FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error) {
	found := make(map[IDKey]bson.Raw, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	in := make(bson.A, len(ids))
	for i, id := range ids {
		in[i] = id
	}
	cur, err := m.coll(ns).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}},
		options.Find().SetBatchSize(int32(len(ids))))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		doc := bson.Raw(bytes.Clone(cur.Current))
		id, err := doc.LookupErr("_id")
		if err != nil {
			return nil, fmt.Errorf("document without _id in %s: %w", ns, err)
		}
		found[KeyOf(id)] = doc
	}
	return found, cur.Err()
}

// ScanIDs reads the _ids of ns with one cursor (projection {_id: 1}), calling fn per batch.
func (m *MongoWriter) ScanIDs(ctx context.Context, ns changeevent.Namespace, fn func([]bson.RawValue) error) error {
	const batch = 1000
	cur, err := m.coll(ns).Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(batch))
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	ids := make([]bson.RawValue, 0, batch)
	for cur.Next(ctx) {
		id, err := cur.Current.LookupErr("_id")
		if err != nil {
			return fmt.Errorf("document without _id in %s: %w", ns, err)
		}
		id.Value = bytes.Clone(id.Value)
		if ids = append(ids, id); len(ids) == batch {
			if err := fn(ids); err != nil {
				return err
			}
			ids = ids[:0]
		}
	}
	if err := cur.Err(); err != nil {
		return err
	}
	if len(ids) > 0 {
		return fn(ids)
	}
	return nil
}

// Collections lists the collections of db.
func (m *MongoWriter) Collections(ctx context.Context, db string) ([]string, error) {
	return m.client.Database(db).ListCollectionNames(ctx, bson.D{})
}

// Drop drops the collection.
func (m *MongoWriter) Drop(ctx context.Context, ns changeevent.Namespace) error {
	return m.coll(ns).Drop(ctx)
}

// The server's errors for a rename whose source does not exist, and whose target exists.
const (
	codeNamespaceNotFound = 26
	codeNamespaceExists   = 48
)

// Rename renames a collection; a source that no longer exists is taken as already renamed, and
// an existing target is an error wrapping ErrNamespaceExists.
func (m *MongoWriter) Rename(ctx context.Context, from, to changeevent.Namespace) error {
	err := m.client.Database("admin").RunCommand(ctx, bson.D{
		{Key: "renameCollection", Value: from.String()},
		{Key: "to", Value: to.String()},
	}).Err()
	var ce mongo.CommandError
	switch {
	case errors.As(err, &ce) && ce.Code == codeNamespaceNotFound:
		return nil
	case errors.As(err, &ce) && ce.Code == codeNamespaceExists:
		return fmt.Errorf("rename %s to %s: %w: %v", from, to, ErrNamespaceExists, err)
	}
	return err
}

// The state database.

// StateDB names the state database.
func (m *MongoWriter) StateDB() string { return m.state }

func (m *MongoWriter) ledger() *mongo.Collection {
	return m.client.Database(m.state).Collection(LedgerCollection)
}

func (m *MongoWriter) barriers() *mongo.Collection {
	return m.client.Database(m.state).Collection(BarrierCollection)
}

// EnsureState creates the ledger's indexes: {state, topic, partition} for the recovery of pending
// entries, {db, coll, docId} for looking up what was archived of a document, and {held.db,
// held.coll, docId} for Revived and MoveHeld.
func (m *MongoWriter) EnsureState(ctx context.Context) error {
	_, err := m.ledger().Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "state", Value: 1}, {Key: "topic", Value: 1}, {Key: "partition", Value: 1}}},
		{Keys: bson.D{{Key: "db", Value: 1}, {Key: "coll", Value: 1}, {Key: "docId", Value: 1}}},
		{Keys: bson.D{{Key: "held.db", Value: 1}, {Key: "held.coll", Value: 1}, {Key: "docId", Value: 1}}},
	})
	if err != nil {
		return fmt.Errorf("create the indexes of %s.%s: %w", m.state, LedgerCollection, err)
	}
	return nil
}

// Archived reads which event ids have a ledger entry.
func (m *MongoWriter) Archived(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	cur, err := m.ledger().Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(int32(len(ids))))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		id, ok := cur.Current.Lookup("_id").StringValueOK()
		if !ok {
			return nil, fmt.Errorf("ledger entry with a non-string _id: %s", cur.Current)
		}
		out[id] = true
	}
	return out, cur.Err()
}

// Claim inserts the entries with one unordered insertMany; duplicate keys are the taken ones.
func (m *MongoWriter) Claim(ctx context.Context, entries []LedgerEntry) (map[string]bool, error) {
	taken := map[string]bool{}
	if len(entries) == 0 {
		return taken, nil
	}
	docs := make([]any, len(entries))
	for i := range entries {
		d, err := ledgerDoc(&entries[i])
		if err != nil {
			return nil, err
		}
		docs[i] = d
	}
	_, err := m.ledger().InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil {
		for _, we := range bwe.WriteErrors {
			if we.Code != 11000 || we.Index < 0 || we.Index >= len(entries) {
				return nil, fmt.Errorf("claim ledger entry %d: %w", we.Index, err)
			}
			taken[entries[we.Index].EventID] = true
		}
		return taken, nil
	}
	return taken, err
}

// maxLedgerLine is the longest line a ledger entry stores as text; a longer one (a before-image
// near MongoDB's 16 MB limit, rendered as Extended JSON) is stored gzip'd in lineGzip.
const maxLedgerLine = 8 << 20

// maxLedgerDoc bounds an entry below MongoDB's 16 MB document limit, leaving room for the rest.
const maxLedgerDoc = 16<<20 - 64<<10

// ledgerDoc renders an entry, fields in the documented order.
func ledgerDoc(e *LedgerEntry) (bson.D, error) {
	d := bson.D{{Key: "_id", Value: e.EventID}, {Key: "db", Value: e.DB}}
	if e.Coll != "" {
		d = append(d, bson.E{Key: "coll", Value: e.Coll})
	}
	d = append(d, bson.E{Key: "op", Value: e.Op})
	if e.To.DB != "" {
		d = append(d, bson.E{Key: "to", Value: bson.D{{Key: "db", Value: e.To.DB}, {Key: "coll", Value: e.To.Coll}}})
	}
	if e.DocID.Type != 0 {
		d = append(d, bson.E{Key: "docId", Value: e.DocID})
	}
	if e.Held.DB != "" {
		d = append(d, bson.E{Key: "held", Value: bson.D{{Key: "db", Value: e.Held.DB}, {Key: "coll", Value: e.Held.Coll}}})
	}
	if e.History {
		d = append(d, bson.E{Key: "history", Value: true})
	}
	d = append(d,
		bson.E{Key: "clusterTime", Value: e.ClusterTime},
		bson.E{Key: "object", Value: e.Object},
		bson.E{Key: "seq", Value: int32(e.Seq)},
		bson.E{Key: "state", Value: e.State})
	switch {
	case e.Line == nil:
	case len(e.Line) <= maxLedgerLine:
		d = append(d, bson.E{Key: "line", Value: string(e.Line)})
	default:
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(e.Line)
		_ = zw.Close()
		if buf.Len() > maxLedgerDoc {
			return nil, fmt.Errorf("the archive line of event %s (%s of %s at %s-%d@%d) is %d bytes, %d gzip'd: more than a ledger entry holds",
				e.EventID, e.Op, e.DB+"."+e.Coll, e.Topic, e.Partition, e.Offset, len(e.Line), buf.Len())
		}
		d = append(d, bson.E{Key: "lineGzip", Value: primitive.Binary{Data: buf.Bytes()}})
	}
	return append(d,
		bson.E{Key: "topic", Value: e.Topic},
		bson.E{Key: "partition", Value: e.Partition},
		bson.E{Key: "offset", Value: e.Offset},
		bson.E{Key: "at", Value: primitive.NewDateTimeFromTime(e.At)}), nil
}

// Written sets the entries written and unsets their lines, selecting them by _id (the ledger
// grows with every intercepted event: nothing scans it).
func (m *MongoWriter) Written(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := m.ledger().UpdateMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: StateWritten}}}, {Key: "$unset", Value: bson.D{{Key: "line", Value: ""}, {Key: "lineGzip", Value: ""}}}})
	return err
}

// Revived sets revived on the delete entries held in ns whose docId is in ids, with one
// updateMany served by the {held.db, held.coll, docId} index.
func (m *MongoWriter) Revived(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := m.ledger().UpdateMany(ctx, heldFilter(ns, ids, true),
		bson.D{{Key: "$set", Value: bson.D{{Key: "revived", Value: true}}}})
	return err
}

// MoveHeld sets held to to on the delete entries held in from (whose docId is in ids, unless ids
// is nil), with one updateMany served by the {held.db, held.coll, docId} index.
func (m *MongoWriter) MoveHeld(ctx context.Context, from, to changeevent.Namespace, ids []bson.RawValue) error {
	if ids != nil && len(ids) == 0 {
		return nil
	}
	_, err := m.ledger().UpdateMany(ctx, heldFilter(from, ids, false),
		bson.D{{Key: "$set", Value: bson.D{{Key: "held", Value: bson.D{{Key: "db", Value: to.DB}, {Key: "coll", Value: to.Coll}}}}}})
	return err
}

// heldFilter selects the delete entries held in ns, those of the given _ids unless ids is nil,
// and only those not revived yet if notRevived. Revived sends one after every segment with the
// segment's inserted _ids, so the filter is appended as raw BSON: the driver's reflection over a
// bson.A of them cost more than the rest of the call.
func heldFilter(ns changeevent.Namespace, ids []bson.RawValue, notRevived bool) bson.Raw {
	size := 96 + len(ns.DB) + len(ns.Coll)
	for _, id := range ids {
		size += 8 + len(id.Value)
	}
	idx, f := bsoncore.AppendDocumentStart(make([]byte, 0, size))
	f = bsoncore.AppendStringElement(f, "held.db", ns.DB)
	f = bsoncore.AppendStringElement(f, "held.coll", ns.Coll)
	if ids != nil {
		var in, arr int32
		in, f = bsoncore.AppendDocumentElementStart(f, "docId")
		arr, f = bsoncore.AppendArrayElementStart(f, "$in")
		for i, id := range ids {
			f = bsoncore.AppendValueElement(f, strconv.Itoa(i), bsoncore.Value{Type: id.Type, Data: id.Value})
		}
		f, _ = bsoncore.AppendArrayEnd(f, arr)
		f, _ = bsoncore.AppendDocumentEnd(f, in)
	}
	f = bsoncore.AppendStringElement(f, "op", string(changeevent.Delete))
	if notRevived {
		var ne int32
		ne, f = bsoncore.AppendDocumentElementStart(f, "revived")
		f = bsoncore.AppendBooleanElement(f, "$ne", true)
		f, _ = bsoncore.AppendDocumentEnd(f, ne)
	}
	f, _ = bsoncore.AppendDocumentEnd(f, idx)
	return bson.Raw(f)
}

// Ledger calls fn with every entry of the ledger, in no particular order (docdbdr promote reads
// it once; apply never scans it). An entry that cannot be decoded is an error naming it.
func (m *MongoWriter) Ledger(ctx context.Context, fn func(LedgerEntry) error) error {
	cur, err := m.ledger().Find(ctx, bson.D{})
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		e, err := parseLedgerEntry(cur.Current)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return cur.Err()
}

// Pending reads the pending entries of the partitions. An entry that cannot be decoded is an
// error naming it: the ledger is never guessed at.
func (m *MongoWriter) Pending(ctx context.Context, topic string, partitions []int64) ([]LedgerEntry, error) {
	if len(partitions) == 0 {
		return nil, nil
	}
	cur, err := m.ledger().Find(ctx, bson.D{{Key: "state", Value: StatePending}, {Key: "topic", Value: topic},
		{Key: "partition", Value: bson.D{{Key: "$in", Value: partitions}}}})
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []LedgerEntry
	for cur.Next(ctx) {
		e, err := parseLedgerEntry(cur.Current)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, cur.Err()
}

// ErrCorruptState is wrapped by errors about a state document apply cannot read: the batch fails
// (CorruptState metric) rather than guess or overwrite.
var ErrCorruptState = errors.New("corrupt state entry")

func parseLedgerEntry(raw bson.Raw) (LedgerEntry, error) {
	var doc struct {
		ID   string `bson:"_id"`
		DB   string `bson:"db"`
		Coll string `bson:"coll"`
		Op   string `bson:"op"`
		To   *struct {
			DB   string `bson:"db"`
			Coll string `bson:"coll"`
		} `bson:"to"`
		DocID bson.RawValue `bson:"docId"`
		Held  *struct {
			DB   string `bson:"db"`
			Coll string `bson:"coll"`
		} `bson:"held"`
		ClusterTime primitive.Timestamp `bson:"clusterTime"`
		Object      string              `bson:"object"`
		Seq         int32               `bson:"seq"`
		State       string              `bson:"state"`
		Line        *string             `bson:"line"`
		LineGzip    []byte              `bson:"lineGzip"`
		Topic       string              `bson:"topic"`
		Partition   int64               `bson:"partition"`
		Offset      int64               `bson:"offset"`
		At          time.Time           `bson:"at"`
		Revived     bool                `bson:"revived"`
		History     bool                `bson:"history"`
	}
	if err := bson.Unmarshal(raw, &doc); err != nil {
		return LedgerEntry{}, fmt.Errorf("%w: ledger entry %s: %v", ErrCorruptState, raw.Lookup("_id"), err)
	}
	if doc.Line == nil && doc.LineGzip != nil {
		zr, err := gzip.NewReader(bytes.NewReader(doc.LineGzip))
		if err != nil {
			return LedgerEntry{}, fmt.Errorf("%w: ledger entry %q: lineGzip: %v", ErrCorruptState, doc.ID, err)
		}
		line, err := io.ReadAll(zr)
		if err != nil {
			return LedgerEntry{}, fmt.Errorf("%w: ledger entry %q: lineGzip: %v", ErrCorruptState, doc.ID, err)
		}
		s := string(line)
		doc.Line = &s
	}
	if doc.ID == "" || doc.Object == "" || (doc.State == StatePending && (doc.Line == nil || *doc.Line == "")) {
		return LedgerEntry{}, fmt.Errorf("%w: ledger entry %q lacks its object or, pending, its line", ErrCorruptState, doc.ID)
	}
	e := LedgerEntry{EventID: doc.ID, DB: doc.DB, Coll: doc.Coll, Op: doc.Op, DocID: doc.DocID, ClusterTime: doc.ClusterTime,
		Object: doc.Object, Seq: int(doc.Seq), State: doc.State, Topic: doc.Topic, Partition: doc.Partition, Offset: doc.Offset, At: doc.At,
		Revived: doc.Revived, History: doc.History}
	if doc.To != nil {
		e.To = changeevent.Namespace{DB: doc.To.DB, Coll: doc.To.Coll}
	}
	if doc.Held != nil {
		e.Held = changeevent.Namespace{DB: doc.Held.DB, Coll: doc.Held.Coll}
	}
	if doc.Line != nil {
		e.Line = []byte(*doc.Line)
	}
	return e, nil
}

// Frontiers reads the frontiers of the partitions.
func (m *MongoWriter) Frontiers(ctx context.Context, topic string, partitions []int64) ([]Frontier, error) {
	if len(partitions) == 0 {
		return nil, nil
	}
	cur, err := m.client.Database(m.state).Collection(FrontierCollection).Find(ctx,
		bson.D{{Key: "topic", Value: topic}, {Key: "partition", Value: bson.D{{Key: "$in", Value: partitions}}}})
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []Frontier
	for cur.Next(ctx) {
		var d struct {
			Topic        string    `bson:"topic"`
			Partition    int64     `bson:"partition"`
			Low          *int64    `bson:"low"`
			High         *int64    `bson:"high"`
			IntentLow    *int64    `bson:"intentLow"`
			IntentHigh   *int64    `bson:"intentHigh"`
			At           time.Time `bson:"at"`
			ClusterTimes []struct {
				DB   string              `bson:"db"`
				Coll string              `bson:"coll"`
				At   primitive.Timestamp `bson:"clusterTime"`
			} `bson:"clusterTimes"`
		}
		if err := bson.Unmarshal(cur.Current, &d); err != nil || d.Low == nil || d.High == nil {
			return nil, fmt.Errorf("%w: frontier %s: %v", ErrCorruptState, cur.Current.Lookup("_id"), err)
		}
		f := Frontier{Topic: d.Topic, Partition: d.Partition, Low: *d.Low, High: *d.High, IntentLow: 0, IntentHigh: -1,
			At: d.At, ClusterTimes: map[changeevent.Namespace]primitive.Timestamp{}}
		if d.IntentLow != nil && d.IntentHigh != nil {
			f.IntentLow, f.IntentHigh = *d.IntentLow, *d.IntentHigh
		}
		for _, c := range d.ClusterTimes {
			f.ClusterTimes[changeevent.Namespace{DB: c.DB, Coll: c.Coll}] = c.At
		}
		out = append(out, f)
	}
	return out, cur.Err()
}

// SetFrontiers replaces the frontiers (upserts), in one bulk write.
func (m *MongoWriter) SetFrontiers(ctx context.Context, fs []Frontier) error {
	if len(fs) == 0 {
		return nil
	}
	models := make([]mongo.WriteModel, len(fs))
	for i, f := range fs {
		nss := make([]changeevent.Namespace, 0, len(f.ClusterTimes))
		for ns := range f.ClusterTimes {
			nss = append(nss, ns)
		}
		sort.Slice(nss, func(i, j int) bool { return nss[i].String() < nss[j].String() })
		cts := bson.A{}
		for _, ns := range nss {
			c := bson.D{{Key: "db", Value: ns.DB}}
			if ns.Coll != "" {
				c = append(c, bson.E{Key: "coll", Value: ns.Coll})
			}
			cts = append(cts, append(c, bson.E{Key: "clusterTime", Value: f.ClusterTimes[ns]}))
		}
		doc := bson.D{{Key: "topic", Value: f.Topic}, {Key: "partition", Value: f.Partition},
			{Key: "low", Value: f.Low}, {Key: "high", Value: f.High}, {Key: "clusterTimes", Value: cts}}
		if f.IntentHigh >= f.IntentLow {
			doc = append(doc, bson.E{Key: "intentLow", Value: f.IntentLow}, bson.E{Key: "intentHigh", Value: f.IntentHigh})
		}
		doc = append(doc, bson.E{Key: "at", Value: primitive.NewDateTimeFromTime(f.At)})
		id := fmt.Sprintf("%s/%d", f.Topic, f.Partition)
		models[i] = mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).SetReplacement(doc).SetUpsert(true)
	}
	_, err := m.client.Database(m.state).Collection(FrontierCollection).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true))
	return err
}

// Fence reads the fence: {_id: "promoted", promotedAt, topic, ends: [{partition, end}]}.
func (m *MongoWriter) Fence(ctx context.Context) (*Fence, error) {
	raw, err := m.client.Database(m.state).Collection(FenceCollection).FindOne(ctx, bson.D{{Key: "_id", Value: FenceID}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var d struct {
		PromotedAt time.Time `bson:"promotedAt"`
		Topic      string    `bson:"topic"`
		Ends       []struct {
			Partition int64 `bson:"partition"`
			End       int64 `bson:"end"`
		} `bson:"ends"`
	}
	if err := bson.Unmarshal(raw, &d); err != nil || d.Topic == "" {
		return nil, fmt.Errorf("%w: fence %s: %v", ErrCorruptState, raw, err)
	}
	f := &Fence{Topic: d.Topic, Ends: map[int64]int64{}, PromotedAt: d.PromotedAt}
	for _, e := range d.Ends {
		f.Ends[e.Partition] = e.End
	}
	return f, nil
}

// Barrier reads a marker's state.
func (m *MongoWriter) Barrier(ctx context.Context, id string) (string, error) {
	raw, err := m.barriers().FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	state, ok := raw.Lookup("state").StringValueOK()
	if !ok || (state != BarrierDone && state != BarrierTargetMoved) {
		return "", fmt.Errorf("%w: barrier marker %q has state %s", ErrCorruptState, id, raw.Lookup("state"))
	}
	return state, nil
}

// SetBarrier upserts a marker.
func (m *MongoWriter) SetBarrier(ctx context.Context, b BarrierMarker) error {
	doc := bson.D{{Key: "op", Value: b.Op}, {Key: "db", Value: b.NS.DB}}
	if b.NS.Coll != "" {
		doc = append(doc, bson.E{Key: "coll", Value: b.NS.Coll})
	}
	doc = append(doc, bson.E{Key: "partitions", Value: int32(b.Partitions)}, bson.E{Key: "state", Value: b.State},
		bson.E{Key: "at", Value: primitive.NewDateTimeFromTime(b.At)})
	_, err := m.barriers().ReplaceOne(ctx, bson.D{{Key: "_id", Value: b.ID}}, doc, options.Replace().SetUpsert(true))
	return err
}

// MarkHistory inserts the markers that do not exist ($setOnInsert: the first writer's since stays,
// the earliest time from which every event of the namespace is known to be in the history).
func (m *MongoWriter) MarkHistory(ctx context.Context, nss []changeevent.Namespace, since time.Time) error {
	if len(nss) == 0 {
		return nil
	}
	models := make([]mongo.WriteModel, len(nss))
	for i, ns := range nss {
		models[i] = mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: ns.String()}}).
			SetUpdate(bson.D{{Key: "$setOnInsert", Value: bson.D{{Key: "db", Value: ns.DB}, {Key: "coll", Value: ns.Coll},
				{Key: "since", Value: primitive.NewDateTimeFromTime(since)}}}}).SetUpsert(true)
	}
	_, err := m.client.Database(m.state).Collection(HistoryCollection).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	return err
}

// ClearHistory deletes every history marker.
func (m *MongoWriter) ClearHistory(ctx context.Context) error {
	_, err := m.client.Database(m.state).Collection(HistoryCollection).DeleteMany(ctx, bson.D{})
	return err
}

// HistorySince reads the history marker of a primary namespace: since when its version history
// is archived; ok is false when it is not (ARCHIVE_HISTORY is off, or no event of it was applied
// since it was switched on).
func (m *MongoWriter) HistorySince(ctx context.Context, ns changeevent.Namespace) (since time.Time, ok bool, err error) {
	raw, err := m.client.Database(m.state).Collection(HistoryCollection).FindOne(ctx, bson.D{{Key: "_id", Value: ns.String()}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the history marker of %s in %s.%s: %w", ns, m.state, HistoryCollection, err)
	}
	dt, isDate := raw.Lookup("since").DateTimeOK()
	if !isDate {
		return time.Time{}, false, fmt.Errorf("%w: history marker %s has since %s", ErrCorruptState, ns, raw.Lookup("since"))
	}
	return time.UnixMilli(dt).UTC(), true, nil
}

// ObjectsOf returns the keys of the archive objects holding the written lines of one document of
// a primary namespace (its deletes, and its version history), from the ledger's {db, coll, docId}
// index: a reader of one document's history GETs those objects only. Lines still pending (their
// objects being written) are not included.
func (m *MongoWriter) ObjectsOf(ctx context.Context, ns changeevent.Namespace, id bson.RawValue) ([]string, error) {
	keys, err := m.ledger().Distinct(ctx, "object", bson.D{{Key: "db", Value: ns.DB}, {Key: "coll", Value: ns.Coll},
		{Key: "docId", Value: id}, {Key: "state", Value: StateWritten}})
	if err != nil {
		return nil, fmt.Errorf("find the archive objects of %s %s in %s.%s: %w", ns, id, m.state, LedgerCollection, err)
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		s, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("%w: a ledger entry of %s names object %v", ErrCorruptState, ns, k)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}
