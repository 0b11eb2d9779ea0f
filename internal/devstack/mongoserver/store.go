package mongoserver

import (
	"crypto/rand"
	"sort"
	"sync"
	"time"

	"github.com/tidwall/btree"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// engine is the whole data plane of one deployment: the catalog of databases
// and collections, the oplog, and open cursors.
//
// Locking: mu guards the catalog, every collection's contents and the oplog.
// Writers hold it exclusively for a whole command, so oplog order is commit
// order and no reader sees half a command's effects per document. Change
// stream readers wait on the notify channel, which is closed (and replaced)
// whenever a write command appended to the oplog.
type engine struct {
	opts Options

	mu     sync.RWMutex
	dbs    map[string]*database
	oplog  oplog
	notify chan struct{}
	dirty  bool // oplog grew since the last wake

	// streamsEnabled holds DocumentDB modifyChangeStreams grants, keyed by
	// "db.coll", "db." (whole database) or "" (whole cluster).
	streamsEnabled map[string]bool

	cursors cursorRegistry

	addr      string
	processID primitive.ObjectID
	closed    chan struct{}
}

// database is a named set of collections.
type database struct {
	name  string
	colls map[string]*collection
}

// namespace identifies a collection; oplog entries share the collection's
// pointer rather than copying the strings.
type namespace struct{ db, coll string }

func (n *namespace) String() string { return n.db + "." + n.coll }

// collection stores documents ordered by _id in a B-tree, so a lookup by _id
// is O(log n) and a scan yields _id order.
type collection struct {
	ns      *namespace
	uuid    primitive.Binary
	docs    *btree.BTreeG[*record]
	indexes []bsoncore.Document // index specs as listIndexes returns them; _id_ first
	uniques []*uniqueIndex      // enforced unique secondary indexes
	size    int64               // sum of document sizes, for collStats-style answers
}

// record is one stored document: its decoded _id (the B-tree key) and its
// raw BSON, which is immutable once stored.
type record struct {
	id  interface{}
	raw bsoncore.Document
}

// lessRecord orders the B-tree: bsonkit.Compare on _id, extended to the
// classEdge pivots that range reads seek to (idplan.go).
func lessRecord(a, b *record) bool { return compareIDs(a.id, b.id) < 0 }

func newEngine(opts Options) *engine {
	return &engine{
		opts:           opts,
		dbs:            map[string]*database{},
		notify:         make(chan struct{}),
		streamsEnabled: map[string]bool{},
		oplog:          oplog{maxEntries: opts.OplogMaxEntries, maxBytes: opts.OplogMaxBytes},
		cursors:        cursorRegistry{cursors: map[int64]*cursorEntry{}},
		processID:      primitive.NewObjectID(),
		closed:         make(chan struct{}),
	}
}

func (e *engine) setAddr(addr string) {
	e.mu.Lock()
	e.addr = addr
	e.mu.Unlock()
}

func (e *engine) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.closed:
	default:
		close(e.closed)
	}
}

// lock and unlock bracket a write command. unlock wakes change streams
// waiting for new oplog entries, once per command rather than per entry.
func (e *engine) lock() { e.mu.Lock() }

func (e *engine) unlock() {
	if e.dirty {
		close(e.notify)
		e.notify = make(chan struct{})
		e.dirty = false
	}
	e.mu.Unlock()
}

// noopIfIdle appends a no-op entry when nothing was written for idle.
func (e *engine) noopIfIdle(idle time.Duration) {
	e.lock()
	defer e.unlock()
	if time.Since(e.oplog.lastWrite) >= idle {
		e.appendEntry(oplogEntry{op: opNoop})
	}
}

// collection returns the collection db.name, or nil.
func (e *engine) collection(db, name string) *collection {
	if d := e.dbs[db]; d != nil {
		return d.colls[name]
	}
	return nil
}

// createCollection returns db.name, creating it (and its database) if needed.
// The bool reports whether it was created.
func (e *engine) createCollection(db, name string) (*collection, bool) {
	d := e.dbs[db]
	if d == nil {
		d = &database{name: db, colls: map[string]*collection{}}
		e.dbs[db] = d
	}
	if c := d.colls[name]; c != nil {
		return c, false
	}
	c := newCollection(db, name)
	d.colls[name] = c
	return c, true
}

func newCollection(db, name string) *collection {
	uuid := make([]byte, 16)
	_, _ = rand.Read(uuid)
	uuid[6] = uuid[6]&0x0f | 0x40
	uuid[8] = uuid[8]&0x3f | 0x80
	ns := &namespace{db: db, coll: name}
	idIndex := bsoncore.NewDocumentBuilder().
		AppendInt32("v", 2).
		AppendDocument("key", bsoncore.NewDocumentBuilder().AppendInt32("_id", 1).Build()).
		AppendString("name", "_id_").
		Build()
	return &collection{
		ns:      ns,
		uuid:    primitive.Binary{Subtype: 4, Data: uuid},
		docs:    btree.NewBTreeGOptions(lessRecord, btree.Options{NoLocks: true}),
		indexes: []bsoncore.Document{idIndex},
	}
}

// sortedDBNames lists database names in order, for stable listings.
func (e *engine) sortedDBNames() []string {
	names := make([]string, 0, len(e.dbs))
	for n := range e.dbs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// get finds the document with the given _id.
func (c *collection) get(id interface{}) (*record, bool) {
	return c.docs.Get(&record{id: id})
}

// idOf extracts and decodes the _id of a stored-form document.
func idOf(raw bsoncore.Document) (interface{}, bsoncore.Value, error) {
	v, err := raw.LookupErr("_id")
	if err != nil {
		return nil, bsoncore.Value{}, errf(codeBadValue, "document has no _id")
	}
	id, err := checkID(v)
	return id, v, err
}

// checkID decodes an _id value and rejects the types MongoDB (or the ordering
// used by the B-tree) cannot use as a key.
func checkID(v bsoncore.Value) (interface{}, error) {
	switch v.Type {
	case bson.TypeArray:
		return nil, errf(codeBadValue, "can't use an array for _id")
	case bson.TypeRegex:
		return nil, errf(codeBadValue, "can't use a regex for _id")
	case bson.TypeUndefined:
		return nil, errf(codeBadValue, "can't use undefined for _id")
	case bson.TypeMinKey, bson.TypeMaxKey, bson.TypeJavaScript, bson.TypeSymbol,
		bson.TypeCodeWithScope, bson.TypeDBPointer:
		return nil, errf(codeBadValue, "_id of type %s is not supported by this server", v.Type)
	}
	id, err := toValue(v)
	if err != nil {
		return nil, errf(codeBadValue, "bad _id: %v", err)
	}
	if d, ok := id.(bson.D); ok {
		if err := checkComparable(d); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// checkComparable rejects embedded values bsonkit.Compare cannot order.
func checkComparable(v interface{}) error {
	switch x := v.(type) {
	case bson.D:
		for _, e := range x {
			if err := checkComparable(e.Value); err != nil {
				return err
			}
		}
	case bson.A:
		for _, item := range x {
			if err := checkComparable(item); err != nil {
				return err
			}
		}
	case primitive.MinKey, primitive.MaxKey, primitive.Undefined, primitive.JavaScript,
		primitive.Symbol, primitive.CodeWithScope, primitive.DBPointer:
		return errf(codeBadValue, "_id containing %T is not supported by this server", v)
	}
	return nil
}

// docKeyOf builds the change-event documentKey {_id: id}.
func docKeyOf(idVal bsoncore.Value) bsoncore.Document {
	dst := make([]byte, 0, 16+len(idVal.Data))
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendValueElement(dst, "_id", idVal)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// withIDFirst returns doc in storage form: _id as the first field, generated
// as an ObjectID when missing, as MongoDB stores documents.
func withIDFirst(doc bsoncore.Document) (bsoncore.Document, error) {
	first, err := doc.IndexErr(0)
	if err == nil && first.Key() == "_id" {
		return doc, nil
	}
	idVal, lookupErr := doc.LookupErr("_id")
	out := make([]byte, 0, len(doc)+17)
	idx, out := bsoncore.AppendDocumentStart(out)
	if lookupErr != nil {
		out = bsoncore.AppendObjectIDElement(out, "_id", primitive.NewObjectID())
	} else {
		out = bsoncore.AppendValueElement(out, "_id", idVal)
	}
	elems, err := doc.Elements()
	if err != nil {
		return nil, errf(codeBadValue, "bad document: %v", err)
	}
	for _, e := range elems {
		if e.Key() != "_id" {
			out = append(out, e...)
		}
	}
	return bsoncore.AppendDocumentEnd(out, idx)
}
