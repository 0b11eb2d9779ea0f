package mongoserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Persistence for Options.DataDir. Close (or Snapshot) writes the whole
// deployment to DataDir/snapshot.bson and Start loads it back, so a restart
// keeps the data, the indexes, DocumentDB's change-stream grants and the
// oplog: resume tokens issued before the restart stay valid and new writes
// continue the same cluster-time sequence.
//
// The file is a sequence of BSON documents, each length-prefixed as BSON
// documents are, so `bsondump` or a few lines of Go can read it:
//
//	header      {format: "docdb-dr mongoserver snapshot", version: 1,
//	             collections: <int64>, changeStreams: [<grant key>...],
//	             oplog: {entries: <int64>, lastSeq: <int64>, lastTS: <timestamp>,
//	                     trimmedSeq: <int64>, trimmedTS: <timestamp>}}
//	per collection, in db then collection name order:
//	  collection {db, coll, uuid: <binary 4>, indexes: [<spec>...], docs: <int64>}
//	  then its `docs` stored documents, verbatim, in _id order
//	per retained oplog entry, oldest first:
//	  entry     {seq: <int64>, ts: <timestamp>, wall: <date>, op: "insert"|...,
//	             db, coll, [toDB, toColl], [key: <doc>], [doc: <doc>], [desc: <doc>]}
//	trailer     {end: "docdb-dr mongoserver snapshot", crc32: <int64>}
//
// Grant keys are those of modifyChangeStreams ("db.coll", "db." or "" for the
// cluster). crc32 is the IEEE CRC of every byte before the trailer; with the
// counts in the header it rejects a truncated or damaged file. The file is
// written to a temporary name and renamed into place, so a crash while
// writing leaves the previous snapshot intact. Open cursors, connections and
// cursor ids are not kept.

const (
	snapshotFile    = "snapshot.bson"
	snapshotFormat  = "docdb-dr mongoserver snapshot"
	snapshotVersion = 1
	// maxSnapshotDoc bounds one record of the file: an oplog entry can hold a
	// 16 MB document plus its key and update description.
	maxSnapshotDoc = 64 << 20
)

// snapshotPath is where DataDir's snapshot lives.
func snapshotPath(dir string) string { return filepath.Join(dir, snapshotFile) }

// writeSnapshot writes the engine to dir atomically. It holds e.mu for
// reading, so writes wait and the snapshot is one consistent instant.
func (e *engine) writeSnapshot(dir string) (err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	path := snapshotPath(dir)
	tmp, err := os.CreateTemp(dir, snapshotFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	sw := &snapshotWriter{w: bw, crc: crc32.NewIEEE()}

	e.mu.RLock()
	e.encodeSnapshot(sw)
	e.mu.RUnlock()
	sw.put(bsoncore.NewDocumentBuilder().
		AppendString("end", snapshotFormat).
		AppendInt64("crc32", int64(sw.crc.Sum32())).
		Build())

	if sw.err == nil {
		sw.err = bw.Flush()
	}
	if sw.err == nil {
		sw.err = tmp.Sync()
	}
	if sw.err != nil {
		return fmt.Errorf("write %s: %w", path, sw.err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// snapshotWriter appends documents to the file, hashing them, and keeps the
// first error so the encoder reads straight through.
type snapshotWriter struct {
	w   io.Writer
	crc hash.Hash32
	err error
}

func (sw *snapshotWriter) put(doc []byte) {
	if sw.err != nil {
		return
	}
	if _, sw.err = sw.w.Write(doc); sw.err == nil {
		sw.crc.Write(doc)
	}
}

// encodeSnapshot writes everything but the trailer. Caller holds e.mu.
func (e *engine) encodeSnapshot(sw *snapshotWriter) {
	var colls []*collection
	for _, dbName := range e.sortedDBNames() {
		d := e.dbs[dbName]
		names := make([]string, 0, len(d.colls))
		for n := range d.colls {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			colls = append(colls, d.colls[n])
		}
	}
	grants := make([]string, 0, len(e.streamsEnabled))
	for key := range e.streamsEnabled {
		grants = append(grants, key)
	}
	sort.Strings(grants)

	o := &e.oplog
	hdr := bsoncore.NewDocumentBuilder().
		AppendString("format", snapshotFormat).
		AppendInt32("version", snapshotVersion).
		AppendInt64("collections", int64(len(colls)))
	arr := bsoncore.NewArrayBuilder()
	for _, g := range grants {
		arr.AppendString(g)
	}
	hdr.AppendArray("changeStreams", arr.Build())
	hdr.AppendDocument("oplog", bsoncore.NewDocumentBuilder().
		AppendInt64("entries", int64(o.count)).
		AppendInt64("lastSeq", int64(o.lastSeq)).
		AppendTimestamp("lastTS", o.lastTS.T, o.lastTS.I).
		AppendInt64("trimmedSeq", int64(o.trimmedSeq)).
		AppendTimestamp("trimmedTS", o.trimmedTS.T, o.trimmedTS.I).
		Build())
	sw.put(hdr.Build())

	for _, c := range colls {
		specs := bsoncore.NewArrayBuilder()
		for _, spec := range c.indexes {
			specs.AppendDocument(spec)
		}
		sw.put(bsoncore.NewDocumentBuilder().
			AppendString("db", c.ns.db).
			AppendString("coll", c.ns.coll).
			AppendBinary("uuid", c.uuid.Subtype, c.uuid.Data).
			AppendArray("indexes", specs.Build()).
			AppendInt64("docs", int64(c.docs.Len())).
			Build())
		c.docs.Scan(func(r *record) bool {
			sw.put(r.raw)
			return sw.err == nil
		})
	}

	var buf []byte
	for seq := o.firstSeq; o.count > 0 && seq <= o.lastSeq; seq++ {
		buf = appendEntryDoc(buf[:0], o.entryAt(seq))
		sw.put(buf)
	}
}

// appendEntryDoc encodes one oplog entry as a snapshot record.
func appendEntryDoc(dst []byte, en *oplogEntry) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendInt64Element(dst, "seq", int64(en.seq))
	dst = bsoncore.AppendTimestampElement(dst, "ts", en.ts.T, en.ts.I)
	dst = bsoncore.AppendDateTimeElement(dst, "wall", en.wall)
	dst = bsoncore.AppendStringElement(dst, "op", opNames[en.op])
	if en.ns != nil {
		dst = bsoncore.AppendStringElement(dst, "db", en.ns.db)
		dst = bsoncore.AppendStringElement(dst, "coll", en.ns.coll)
	}
	if en.to != nil {
		dst = bsoncore.AppendStringElement(dst, "toDB", en.to.db)
		dst = bsoncore.AppendStringElement(dst, "toColl", en.to.coll)
	}
	for _, f := range []struct {
		key string
		doc bsoncore.Document
	}{{"key", en.key}, {"doc", en.doc}, {"desc", en.desc}} {
		if f.doc != nil {
			dst = bsoncore.AppendDocumentElement(dst, f.key, f.doc)
		}
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// loadSnapshot fills a new, empty engine from dir's snapshot. A missing
// file is a fresh start (loaded false); anything unreadable is an error
// naming the file.
func (e *engine) loadSnapshot(dir string) (loaded bool, err error) {
	path := snapshotPath(dir)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	sr := &snapshotReader{r: bufio.NewReaderSize(f, 1<<20), crc: crc32.NewIEEE()}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.decodeSnapshot(sr); err != nil {
		return false, fmt.Errorf("load %s: at byte %d: %w", path, sr.off, err)
	}
	return true, nil
}

// snapshotReader reads the file's documents one by one, hashing them.
type snapshotReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	off int64 // where the document being read starts, for error messages
	end int64 // where the next one starts
}

// next returns the next document; io.ErrUnexpectedEOF when the file ends.
func (sr *snapshotReader) next() (bsoncore.Document, error) {
	sr.off = sr.end
	var size [4]byte
	if _, err := io.ReadFull(sr.r, size[:]); err != nil {
		return nil, fmt.Errorf("file ends early: %w", io.ErrUnexpectedEOF)
	}
	n := int(int32(binary.LittleEndian.Uint32(size[:])))
	if n < 5 || n > maxSnapshotDoc {
		return nil, fmt.Errorf("bad document length %d", n)
	}
	doc := make([]byte, n)
	copy(doc, size[:])
	if _, err := io.ReadFull(sr.r, doc[4:]); err != nil {
		return nil, fmt.Errorf("file ends early: %w", io.ErrUnexpectedEOF)
	}
	if err := bsoncore.Document(doc).Validate(); err != nil {
		return nil, fmt.Errorf("bad document: %w", err)
	}
	sr.end += int64(n)
	return doc, nil
}

// hashed is next for the records covered by the trailer's checksum.
func (sr *snapshotReader) hashed() (bsoncore.Document, error) {
	doc, err := sr.next()
	if err == nil {
		sr.crc.Write(doc)
	}
	return doc, err
}

// decodeSnapshot reads the records in the order encodeSnapshot writes them.
// Caller holds e.mu; the engine is replaced only when everything was read.
func (e *engine) decodeSnapshot(sr *snapshotReader) error {
	hdr, err := sr.hashed()
	if err != nil {
		return err
	}
	if format, _ := hdr.Lookup("format").StringValueOK(); format != snapshotFormat {
		return errors.New("not a mongoserver snapshot")
	}
	if v, _ := hdr.Lookup("version").Int32OK(); v != snapshotVersion {
		return fmt.Errorf("snapshot version %s, this server reads %d", hdr.Lookup("version"), snapshotVersion)
	}
	ncolls, ok1 := hdr.Lookup("collections").Int64OK()
	ohdr, ok2 := hdr.Lookup("oplog").DocumentOK()
	grants, ok3 := hdr.Lookup("changeStreams").ArrayOK()
	if !ok1 || !ok2 || !ok3 || ncolls < 0 {
		return errors.New("bad header")
	}

	dbs := map[string]*database{}
	for i := int64(0); i < ncolls; i++ {
		c, err := decodeCollection(sr)
		if err != nil {
			return err
		}
		d := dbs[c.ns.db]
		if d == nil {
			d = &database{name: c.ns.db, colls: map[string]*collection{}}
			dbs[c.ns.db] = d
		}
		if d.colls[c.ns.coll] != nil {
			return fmt.Errorf("collection %s appears twice", c.ns)
		}
		d.colls[c.ns.coll] = c
	}

	o, err := decodeOplog(sr, ohdr, dbs)
	if err != nil {
		return err
	}
	o.maxEntries, o.maxBytes = e.oplog.maxEntries, e.oplog.maxBytes

	sum := sr.crc.Sum32()
	trailer, err := sr.next()
	if err != nil {
		return err
	}
	if end, _ := trailer.Lookup("end").StringValueOK(); end != snapshotFormat {
		return errors.New("trailer missing: the file was cut short or has extra records")
	}
	if crc, _ := trailer.Lookup("crc32").Int64OK(); uint32(crc) != sum || crc < 0 {
		return fmt.Errorf("checksum mismatch: trailer says %08x, content is %08x", crc, sum)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		return errors.New("data after the trailer")
	}

	streams := map[string]bool{}
	vals, _ := grants.Values()
	for _, v := range vals {
		key, ok := v.StringValueOK()
		if !ok {
			return errors.New("bad changeStreams grant")
		}
		streams[key] = true
	}
	e.dbs, e.oplog, e.streamsEnabled = dbs, o, streams
	for e.oplog.count > 1 && (e.oplog.count > e.oplog.maxEntries || (e.oplog.maxBytes > 0 && e.oplog.bytes > e.oplog.maxBytes)) {
		e.oplog.trimOldest() // this server may have a smaller cap
	}
	return nil
}

// decodeCollection reads a collection record and its documents.
func decodeCollection(sr *snapshotReader) (*collection, error) {
	meta, err := sr.hashed()
	if err != nil {
		return nil, err
	}
	db, ok1 := meta.Lookup("db").StringValueOK()
	name, ok2 := meta.Lookup("coll").StringValueOK()
	subtype, uuid, ok3 := meta.Lookup("uuid").BinaryOK()
	specs, ok4 := meta.Lookup("indexes").ArrayOK()
	ndocs, ok5 := meta.Lookup("docs").Int64OK()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || db == "" || name == "" || ndocs < 0 {
		return nil, errors.New("bad collection record")
	}
	c := newCollection(db, name)
	c.uuid = primitive.Binary{Subtype: subtype, Data: uuid}
	vals, _ := specs.Values()
	c.indexes = c.indexes[:0]
	for _, v := range vals {
		spec, ok := v.DocumentOK()
		if !ok {
			return nil, fmt.Errorf("collection %s: bad index spec", c.ns)
		}
		c.indexes = append(c.indexes, spec)
	}
	if len(c.indexes) == 0 || c.indexes[0].Lookup("name").StringValue() != "_id_" {
		return nil, fmt.Errorf("collection %s: the _id_ index is not first", c.ns)
	}

	var prev *record
	for i := int64(0); i < ndocs; i++ {
		raw, err := sr.hashed()
		if err != nil {
			return nil, fmt.Errorf("collection %s: %w", c.ns, err)
		}
		id, _, err := idOf(raw)
		if err != nil {
			return nil, fmt.Errorf("collection %s: %w", c.ns, err)
		}
		rec := &record{id: id, raw: raw}
		if prev != nil && !lessRecord(prev, rec) {
			return nil, fmt.Errorf("collection %s: documents not in _id order at %s", c.ns, raw.Lookup("_id"))
		}
		c.docs.Load(rec) // in order, so an append
		c.size += int64(len(raw))
		prev = rec
	}
	for _, spec := range c.indexes[1:] {
		if ix, ok := newUniqueIndex(spec); ok {
			if err := c.buildUnique(ix); err != nil {
				return nil, fmt.Errorf("collection %s: index %s: %w", c.ns, ix.name, err)
			}
			c.uniques = append(c.uniques, ix)
		}
	}
	return c, nil
}

// decodeOplog reads the oplog entries the header announces. Entries of a
// collection that still exists share its namespace, as live entries do.
func decodeOplog(sr *snapshotReader, hdr bsoncore.Document, dbs map[string]*database) (oplog, error) {
	var o oplog
	entries, ok1 := hdr.Lookup("entries").Int64OK()
	lastSeq, ok2 := hdr.Lookup("lastSeq").Int64OK()
	lastT, lastI, ok3 := hdr.Lookup("lastTS").TimestampOK()
	trimmedSeq, ok4 := hdr.Lookup("trimmedSeq").Int64OK()
	trimT, trimI, ok5 := hdr.Lookup("trimmedTS").TimestampOK()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || entries < 0 || lastSeq < 0 || trimmedSeq < 0 || entries > lastSeq {
		return o, errors.New("bad oplog header")
	}
	o.lastSeq, o.lastTS = uint64(lastSeq), primitive.Timestamp{T: lastT, I: lastI}
	o.trimmedSeq, o.trimmedTS = uint64(trimmedSeq), primitive.Timestamp{T: trimT, I: trimI}
	o.lastWrite = time.Now()

	names := map[namespace]*namespace{}
	for _, d := range dbs {
		for _, c := range d.colls {
			names[*c.ns] = c.ns
		}
	}
	intern := func(db, coll string) *namespace {
		key := namespace{db: db, coll: coll}
		if ns := names[key]; ns != nil {
			return ns
		}
		ns := &key
		names[key] = ns
		return ns
	}

	wantSeq := uint64(lastSeq) - uint64(entries) + 1
	for i := int64(0); i < entries; i++ {
		doc, err := sr.hashed()
		if err != nil {
			return o, fmt.Errorf("oplog: %w", err)
		}
		en, err := decodeEntry(doc, intern)
		if err != nil {
			return o, fmt.Errorf("oplog entry %d: %w", wantSeq, err)
		}
		if en.seq != wantSeq {
			return o, fmt.Errorf("oplog: entry %d where %d was expected", en.seq, wantSeq)
		}
		wantSeq++
		o.restore(en)
	}
	return o, nil
}

// restore appends an entry that already has its position and time: a loaded
// snapshot's entries, and every new one once appendEntry has stamped it.
func (o *oplog) restore(en oplogEntry) {
	if o.count == 0 && len(o.chunks) == 0 {
		o.baseSeq, o.firstSeq = en.seq, en.seq
	}
	if n := len(o.chunks); n == 0 || len(o.chunks[n-1]) == oplogChunk {
		o.chunks = append(o.chunks, make([]oplogEntry, 0, oplogChunk))
	}
	last := len(o.chunks) - 1
	o.chunks[last] = append(o.chunks[last], en)
	o.count++
	o.bytes += en.size()
}

// decodeEntry is the inverse of appendEntryDoc.
func decodeEntry(doc bsoncore.Document, intern func(db, coll string) *namespace) (oplogEntry, error) {
	var en oplogEntry
	seq, ok1 := doc.Lookup("seq").Int64OK()
	t, i, ok2 := doc.Lookup("ts").TimestampOK()
	wall, ok3 := doc.Lookup("wall").DateTimeOK()
	opName, ok4 := doc.Lookup("op").StringValueOK()
	if !ok1 || !ok2 || !ok3 || !ok4 || seq <= 0 {
		return en, errors.New("bad entry")
	}
	en.seq, en.ts, en.wall = uint64(seq), primitive.Timestamp{T: t, I: i}, wall
	known := false
	for op, name := range opNames {
		if name == opName {
			en.op, known = opType(op), true
		}
	}
	if !known {
		return en, fmt.Errorf("unknown op %q", opName)
	}
	if db, ok := doc.Lookup("db").StringValueOK(); ok {
		coll, _ := doc.Lookup("coll").StringValueOK()
		en.ns = intern(db, coll)
	} else if en.op != opNoop {
		return en, fmt.Errorf("%s entry without a namespace", opName)
	}
	if db, ok := doc.Lookup("toDB").StringValueOK(); ok {
		coll, _ := doc.Lookup("toColl").StringValueOK()
		en.to = intern(db, coll)
	}
	for _, f := range []struct {
		key string
		dst *bsoncore.Document
	}{{"key", &en.key}, {"doc", &en.doc}, {"desc", &en.desc}} {
		if v, err := doc.LookupErr(f.key); err == nil {
			if v.Type != bson.TypeEmbeddedDocument {
				return en, fmt.Errorf("%s is not a document", f.key)
			}
			*f.dst = v.Document()
		}
	}
	if en.op == opRename && en.to == nil {
		return en, errors.New("rename entry without a target")
	}
	return en, nil
}
