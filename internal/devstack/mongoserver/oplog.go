package mongoserver

import (
	"encoding/binary"
	"encoding/hex"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// opType is what an oplog entry records.
type opType uint8

const (
	opNoop opType = iota // periodic no-op: advances resume tokens on an idle deployment
	opInsert
	opUpdate
	opReplace
	opDelete
	opDrop
	opRename
	opDropDatabase
)

var opNames = [...]string{
	opNoop: "noop", opInsert: "insert", opUpdate: "update", opReplace: "replace",
	opDelete: "delete", opDrop: "drop", opRename: "rename", opDropDatabase: "dropDatabase",
}

// oplogEntry is one change, in commit order. Documents are shared with the
// store (raw BSON is immutable), so an entry costs little beyond its header.
type oplogEntry struct {
	seq  uint64              // position: 1, 2, 3, ... never reused
	ts   primitive.Timestamp // cluster time, strictly increasing
	wall int64               // wall clock, milliseconds since the epoch
	op   opType
	ns   *namespace        // collection (or, for dropDatabase, database with coll "")
	to   *namespace        // rename target
	key  bsoncore.Document // update/delete: documentKey {_id}
	doc  bsoncore.Document // insert/replace: the new document (its _id is the key)
	desc bsoncore.Document // update: updateDescription
}

// size approximates the retained bytes of an entry, for OplogMaxBytes.
func (en *oplogEntry) size() int64 {
	return int64(64 + len(en.key) + len(en.doc) + len(en.desc))
}

// oplog is the capped, in-memory change history. It lives inside engine and
// is guarded by engine.mu.
//
// Entries are kept in fixed-size chunks rather than one slice: appending
// never copies the history (a single slice would move hundreds of
// megabytes each time it grew at a million entries), trimming releases
// whole chunks, and position seq is found by arithmetic.
type oplog struct {
	chunks     [][]oplogEntry // full chunks, then the one being filled
	baseSeq    uint64         // position of chunks[0][0]
	firstSeq   uint64         // oldest retained position (entries before it are trimmed)
	count      int            // retained entries
	bytes      int64
	maxEntries int
	maxBytes   int64

	lastSeq   uint64
	lastTS    primitive.Timestamp
	lastWrite time.Time

	// The newest entry dropped by the cap: a resume point at or before it has
	// lost history.
	trimmedSeq uint64
	trimmedTS  primitive.Timestamp
}

const oplogChunk = 4096

// appendEntry stamps en with the next position and cluster time and appends
// it, trimming the oldest entries beyond the caps. Caller holds e.mu.
func (e *engine) appendEntry(en oplogEntry) *oplogEntry {
	o := &e.oplog
	now := time.Now()
	secs := uint32(now.Unix())
	if secs > o.lastTS.T {
		o.lastTS = primitive.Timestamp{T: secs, I: 1}
	} else {
		o.lastTS.I++
	}
	o.lastSeq++
	en.seq, en.ts, en.wall = o.lastSeq, o.lastTS, now.UnixMilli()
	o.lastWrite = now
	o.restore(en)
	e.dirty = true

	for o.count > 1 && (o.count > o.maxEntries || (o.maxBytes > 0 && o.bytes > o.maxBytes)) {
		o.trimOldest()
	}
	return o.entryAt(en.seq)
}

// trimOldest drops the oldest retained entry.
func (o *oplog) trimOldest() {
	old := o.entryAt(o.firstSeq)
	o.trimmedSeq, o.trimmedTS = old.seq, old.ts
	o.bytes -= old.size()
	*old = oplogEntry{} // let the documents be collected
	o.firstSeq++
	o.count--
	if o.firstSeq-o.baseSeq == oplogChunk {
		o.chunks[0] = nil
		o.chunks = o.chunks[1:]
		o.baseSeq += oplogChunk
	}
}

// entryAt returns the retained entry at position seq, or nil.
func (o *oplog) entryAt(seq uint64) *oplogEntry {
	if o.count == 0 || seq < o.firstSeq || seq > o.lastSeq {
		return nil
	}
	off := seq - o.baseSeq
	return &o.chunks[off/oplogChunk][off%oplogChunk]
}

// firstSeqAtOrAfter returns the position of the first retained entry whose
// cluster time is >= ts (lastSeq+1 when there is none).
func (o *oplog) firstSeqAtOrAfter(ts primitive.Timestamp) uint64 {
	if o.count == 0 {
		return o.lastSeq + 1
	}
	i := sort.Search(o.count, func(i int) bool { return !tsLess(o.entryAt(o.firstSeq+uint64(i)).ts, ts) })
	return o.firstSeq + uint64(i)
}

func tsLess(a, b primitive.Timestamp) bool {
	return a.T < b.T || (a.T == b.T && a.I < b.I)
}

// resumeToken is the decoded form of a change stream _id / resume token.
// The wire form is {_data: hex}, where the hex of cluster time, position and
// kind is fixed-width big-endian, so tokens sort as strings in stream order.
type resumeToken struct {
	ts         primitive.Timestamp
	seq        uint64 // the entry the token is at (events after it come next)
	invalidate bool   // the token of an invalidate event that followed entry seq
}

const tokenVersion = 0x01

func (t resumeToken) data() string {
	var b [18]byte
	b[0] = tokenVersion
	binary.BigEndian.PutUint32(b[1:], t.ts.T)
	binary.BigEndian.PutUint32(b[5:], t.ts.I)
	binary.BigEndian.PutUint64(b[9:], t.seq)
	if t.invalidate {
		b[17] = 1
	}
	return hex.EncodeToString(b[:])
}

// appendTo appends the token as the document {_data: "..."} under key.
func (t resumeToken) appendTo(dst []byte, key string) []byte {
	idx, dst := bsoncore.AppendDocumentElementStart(dst, key)
	dst = bsoncore.AppendStringElement(dst, "_data", t.data())
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

func (t resumeToken) document() bsoncore.Document {
	return bsoncore.NewDocumentBuilder().AppendString("_data", t.data()).Build()
}

// parseResumeToken decodes a token document produced by this server.
func parseResumeToken(doc bsoncore.Document) (resumeToken, error) {
	v, err := doc.LookupErr("_data")
	if err != nil {
		return resumeToken{}, errf(codeInvalidResumeToken, "resume token has no _data field")
	}
	s, ok := v.StringValueOK()
	if !ok {
		return resumeToken{}, errf(codeInvalidResumeToken, "resume token _data must be a string")
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 18 || b[0] != tokenVersion || b[17] > 1 {
		return resumeToken{}, errf(codeInvalidResumeToken, "resume token %q was not issued by this server", s)
	}
	return resumeToken{
		ts:         primitive.Timestamp{T: binary.BigEndian.Uint32(b[1:]), I: binary.BigEndian.Uint32(b[5:])},
		seq:        binary.BigEndian.Uint64(b[9:]),
		invalidate: b[17] == 1,
	}, nil
}
