package mongoserver

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Cursors: find, aggregate, listCollections and change streams return a first
// batch and, when more may follow, a cursor id the client pages with getMore.

// maxBatchBytes bounds one reply batch, like MongoDB's 16 MiB.
const maxBatchBytes = maxBSONObjectSize - 64*1024

// batch is one page of results.
type batch struct {
	docs      []bsoncore.Document
	exhausted bool         // no more results: the cursor is closed (id 0)
	pbrt      *resumeToken // change streams: the postBatchResumeToken
}

// cursor produces batches. limit is the most documents to return (0: no
// count limit, only the byte limit); wait is how long a tailable cursor
// (change stream) may block for its first result.
type cursor interface {
	nextBatch(c *cmdCtx, limit int, wait time.Duration, killed <-chan struct{}) (batch, error)
}

// cursorEntry is a registered cursor. busy serialises getMores on it.
type cursorEntry struct {
	id       int64
	ns       string
	cur      cursor
	busy     bool
	lastUsed time.Time
	killed   chan struct{}
}

// cursorIdleTimeout is how long an unused cursor lives, like MongoDB's
// cursorTimeoutMillis default (10 minutes).
const cursorIdleTimeout = 10 * time.Minute

// cursorRegistry maps cursor ids to open cursors.
type cursorRegistry struct {
	mu      sync.Mutex
	cursors map[int64]*cursorEntry
}

// add registers cur under a fresh random positive id.
func (r *cursorRegistry) add(ns string, cur cursor) *cursorEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := int64(binary.LittleEndian.Uint64(b[:]) &^ (1 << 63))
		if id == 0 || r.cursors[id] != nil {
			continue
		}
		ce := &cursorEntry{id: id, ns: ns, cur: cur, lastUsed: time.Now(), killed: make(chan struct{})}
		r.cursors[id] = ce
		return ce
	}
}

// acquire marks cursor id busy for one getMore.
func (r *cursorRegistry) acquire(id int64, ns string) (*cursorEntry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ce := r.cursors[id]
	if ce == nil {
		return nil, errf(codeCursorNotFound, "cursor id %d not found", id)
	}
	if ce.ns != ns {
		return nil, errf(codeUnauthorized, "requested getMore on namespace '%s', but cursor belongs to a different namespace %s", ns, ce.ns)
	}
	if ce.busy {
		return nil, errf(codeCursorNotFound, "cursor id %d is already in use", id)
	}
	ce.busy = true
	return ce, nil
}

// release ends a getMore; an exhausted cursor is forgotten.
func (r *cursorRegistry) release(ce *cursorEntry, exhausted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ce.busy = false
	ce.lastUsed = time.Now()
	if exhausted {
		r.removeLocked(ce.id)
	}
}

// kill forgets cursor id and wakes a getMore waiting on it.
func (r *cursorRegistry) kill(id int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(id)
}

// reap kills cursors idle for longer than cursorIdleTimeout, so clients that
// vanish without killCursors do not leak result sets.
func (r *cursorRegistry) reap(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ce := range r.cursors {
		if !ce.busy && now.Sub(ce.lastUsed) > cursorIdleTimeout {
			r.removeLocked(id)
		}
	}
}

func (r *cursorRegistry) removeLocked(id int64) bool {
	ce := r.cursors[id]
	if ce == nil {
		return false
	}
	delete(r.cursors, id)
	close(ce.killed)
	return true
}

func init() {
	register(cmdGetMore, false, "getMore")
	register(cmdKillCursors, false, "killCursors")
}

// cmdGetMore returns the next batch of an open cursor.
func cmdGetMore(c *cmdCtx, dst []byte) ([]byte, error) {
	v := c.value("getMore")
	if v.Type != bson.TypeInt64 {
		return nil, errf(codeTypeMismatch, "getMore: cursor id must be a long, not %s", v.Type)
	}
	id := v.Int64()
	coll, err := c.str("collection")
	if err != nil {
		return nil, err
	}
	batchSize, err := c.integer("batchSize", 0)
	if err != nil {
		return nil, err
	}
	maxTime, err := c.integer("maxTimeMS", 0)
	if err != nil {
		return nil, err
	}
	ns := c.db + "." + coll
	ce, err := c.e.cursors.acquire(id, ns)
	if err != nil {
		return nil, err
	}
	wait := time.Duration(maxTime) * time.Millisecond
	b, err := ce.cur.nextBatch(c, int(max(batchSize, 0)), wait, ce.killed)
	if err != nil {
		c.e.cursors.release(ce, true)
		return nil, err
	}
	c.e.cursors.release(ce, b.exhausted)
	return appendCursorReply(dst, "nextBatch", ce.id, ns, b), nil
}

// cmdKillCursors closes cursors, reporting which existed.
func cmdKillCursors(c *cmdCtx, dst []byte) ([]byte, error) {
	v := c.value("cursors")
	arr, ok := v.ArrayOK()
	if !ok {
		return nil, errf(codeTypeMismatch, "killCursors: cursors must be an array")
	}
	vals, _ := arr.Values()
	var killed, notFound []int64
	for _, item := range vals {
		id, ok := item.Int64OK()
		if !ok {
			return nil, errf(codeTypeMismatch, "killCursors: cursor ids must be longs")
		}
		if c.e.cursors.kill(id) {
			killed = append(killed, id)
		} else {
			notFound = append(notFound, id)
		}
	}
	appendIDs := func(dst []byte, key string, ids []int64) []byte {
		idx, dst := bsoncore.AppendArrayElementStart(dst, key)
		for i, id := range ids {
			dst = bsoncore.AppendInt64Element(dst, itoa(i), id)
		}
		dst, _ = bsoncore.AppendArrayEnd(dst, idx)
		return dst
	}
	dst = appendIDs(dst, "cursorsKilled", killed)
	dst = appendIDs(dst, "cursorsNotFound", notFound)
	dst = appendIDs(dst, "cursorsAlive", nil)
	dst = appendIDs(dst, "cursorsUnknown", nil)
	return dst, nil
}

// appendCursorReply appends cursor: {<key>: [...], id, ns, postBatchResumeToken?}.
func appendCursorReply(dst []byte, key string, id int64, ns string, b batch) []byte {
	if b.exhausted {
		id = 0
	}
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "cursor")
	aidx, dst := bsoncore.AppendArrayElementStart(dst, key)
	for i, d := range b.docs {
		dst = bsoncore.AppendDocumentElement(dst, itoa(i), d)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	if b.pbrt != nil {
		dst = b.pbrt.appendTo(dst, "postBatchResumeToken")
	}
	dst = bsoncore.AppendInt64Element(dst, "id", id)
	dst = bsoncore.AppendStringElement(dst, "ns", ns)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// openCursor runs the first batch of cur and registers it if more may follow,
// then appends the reply. singleBatch closes the cursor after the first batch.
func openCursor(c *cmdCtx, dst []byte, ns string, cur cursor, firstLimit int, singleBatch bool) ([]byte, error) {
	b, err := cur.nextBatch(c, firstLimit, 0, nil)
	if err != nil {
		return nil, err
	}
	if singleBatch {
		b.exhausted = true
	}
	var id int64
	if !b.exhausted {
		id = c.e.cursors.add(ns, cur).id
	}
	return appendCursorReply(dst, "firstBatch", id, ns, b), nil
}

// listCursor pages through a result computed up front.
type listCursor struct {
	docs []bsoncore.Document
}

func (l *listCursor) nextBatch(_ *cmdCtx, limit int, _ time.Duration, _ <-chan struct{}) (batch, error) {
	n, size := 0, 0
	for n < len(l.docs) && (limit <= 0 || n < limit) {
		if n > 0 && size+len(l.docs[n]) > maxBatchBytes {
			break
		}
		size += len(l.docs[n])
		n++
	}
	b := batch{docs: l.docs[:n:n]}
	l.docs = l.docs[n:]
	b.exhausted = len(l.docs) == 0
	return b, nil
}
