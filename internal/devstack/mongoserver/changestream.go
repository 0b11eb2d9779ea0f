package mongoserver

import (
	"time"

	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Change streams: an aggregate whose first stage is $changeStream opens a
// streamCursor, which remembers its position in the oplog and scans forward
// from it on every getMore, so a batch costs what it returns (plus the
// entries of other namespaces it skips), never the whole oplog.

// streamScope is what a change stream watches.
type streamScope struct {
	db, coll string // coll "" = the whole database; db "" = the whole cluster
}

func (sc streamScope) cluster() bool  { return sc.db == "" }
func (sc streamScope) database() bool { return sc.db != "" && sc.coll == "" }

// cursorNS is the namespace MongoDB reports for the stream's cursor.
func (sc streamScope) cursorNS() string {
	switch {
	case sc.cluster():
		return "admin.$cmd.aggregate"
	case sc.database():
		return sc.db + ".$cmd.aggregate"
	default:
		return sc.db + "." + sc.coll
	}
}

// sees reports whether the stream emits an event for en, and whether en
// invalidates the stream (the invalidate event follows the entry's own).
func (sc streamScope) sees(en *oplogEntry) (visible, invalidates bool) {
	if en.op == opNoop {
		return false, false
	}
	switch {
	case sc.cluster():
		switch en.ns.db {
		case "admin", "config", "local":
			return false, false
		}
		return true, false
	case sc.database():
		if en.ns.db != sc.db {
			return false, false
		}
		return true, en.op == opDropDatabase
	default:
		if en.op == opDropDatabase || en.ns.db != sc.db || en.ns.coll != sc.coll {
			return false, false
		}
		return true, en.op == opDrop || en.op == opRename
	}
}

// streamOptions are the $changeStream stage's options.
type streamOptions struct {
	resumeAfter, startAfter bsoncore.Document
	startAtOperationTime    *primitive.Timestamp
	updateLookup            bool
}

// streamCursor is an open change stream.
type streamCursor struct {
	e            *engine
	scope        streamScope
	updateLookup bool
	stages       []stage // the pipeline after $changeStream, applied per event

	next       uint64      // the next oplog position to scan
	pbrt       resumeToken // the latest position scanned
	invalidate *resumeToken
	done       bool // invalidate delivered: the cursor is closed

	// arena holds the rendered events of the current batch, one allocation
	// reused across batches (a batch is written out before the next scan).
	arena []byte
}

// historyLost builds the error for a resume point the oplog no longer covers:
// ChangeStreamHistoryLost on MongoDB, CappedPositionLost on DocumentDB.
func (e *engine) historyLost(detail string) *cmdError {
	if e.opts.DocumentDB {
		return errf(codeCappedPositionLost, "change stream history lost: %s", detail)
	}
	return errf(codeChangeStreamHistoryLost, "Resume of change stream was not possible, as the resume point may no longer be in the oplog: %s", detail)
}

// tokenAt returns a resume token for "just after position seq".
func (o *oplog) tokenAt(seq uint64) resumeToken {
	if en := o.entryAt(seq); en != nil {
		return resumeToken{ts: en.ts, seq: seq}
	}
	if seq == o.trimmedSeq {
		return resumeToken{ts: o.trimmedTS, seq: seq}
	}
	if seq == 0 {
		return resumeToken{}
	}
	return resumeToken{ts: o.lastTS, seq: seq}
}

// openStream positions a new stream cursor according to its options.
// Caller holds e.mu (read).
func (e *engine) openStream(scope streamScope, so streamOptions, stages []stage) (*streamCursor, error) {
	sc := &streamCursor{e: e, scope: scope, updateLookup: so.updateLookup, stages: stages}
	o := &e.oplog
	tokenDoc, isStartAfter := so.resumeAfter, false
	if so.startAfter != nil {
		tokenDoc, isStartAfter = so.startAfter, true
	}
	switch {
	case tokenDoc != nil:
		tok, err := parseResumeToken(tokenDoc)
		if err != nil {
			return nil, err
		}
		if tok.invalidate && !isStartAfter {
			return nil, errf(codeInvalidResumeToken, "cannot resume stream; the resume token was from an invalidate event; use startAfter to start a new stream after it")
		}
		if tok.seq > o.lastSeq {
			return nil, e.historyLost("the resume token is not from this deployment's history")
		}
		if tok.seq < o.trimmedSeq {
			return nil, e.historyLost("the resume token is older than the oldest retained change")
		}
		en := o.entryAt(tok.seq)
		if en != nil && en.ts != tok.ts {
			return nil, e.historyLost("the resume token does not match this deployment's history")
		}
		sc.next, sc.pbrt = tok.seq+1, tok
		if en != nil && !tok.invalidate {
			if _, inv := scope.sees(en); inv {
				sc.invalidate = &resumeToken{ts: en.ts, seq: en.seq, invalidate: true}
			}
		}
		sc.pbrt.invalidate = false
	case so.startAtOperationTime != nil:
		ts := *so.startAtOperationTime
		if o.trimmedSeq > 0 && !tsLess(o.trimmedTS, ts) {
			return nil, e.historyLost("startAtOperationTime is older than the oldest retained change")
		}
		sc.next = o.firstSeqAtOrAfter(ts)
		sc.pbrt = o.tokenAt(sc.next - 1)
	default:
		sc.next = o.lastSeq + 1
		sc.pbrt = o.tokenAt(o.lastSeq)
	}
	if sc.pbrt.ts.T == 0 {
		sc.pbrt.ts = primitive.Timestamp{T: uint32(time.Now().Unix())}
	}
	return sc, nil
}

// defaultAwait is how long a getMore on a change stream waits for an event
// when the client sends no maxTimeMS (MongoDB's awaitData default).
const defaultAwait = time.Second

func (sc *streamCursor) nextBatch(c *cmdCtx, limit int, wait time.Duration, killed <-chan struct{}) (batch, error) {
	if killed != nil && wait <= 0 {
		wait = defaultAwait
	}
	var deadline <-chan time.Time
	for {
		b, notify, err := sc.scan(limit)
		if err != nil || len(b.docs) > 0 || b.exhausted || wait <= 0 || killed == nil {
			return b, err
		}
		if deadline == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-notify:
		case <-deadline:
			return sc.scanFinal(limit)
		case <-killed:
			return b, nil
		case <-c.conn.gone:
			return b, nil
		case <-sc.e.closed:
			return b, nil
		}
	}
}

// scanFinal scans once more after the wait expired (an event may have raced
// the timer) and returns whatever there is.
func (sc *streamCursor) scanFinal(limit int) (batch, error) {
	b, _, err := sc.scan(limit)
	return b, err
}

// scan collects up to limit events from the cursor's position. It returns
// the channel that will be closed when the oplog next grows.
func (sc *streamCursor) scan(limit int) (batch, <-chan struct{}, error) {
	e := sc.e
	e.mu.RLock()
	defer e.mu.RUnlock()
	o := &e.oplog
	var b batch
	if sc.done {
		b.exhausted = true
		return b, e.notify, nil
	}
	if sc.next <= o.trimmedSeq {
		return b, nil, e.historyLost("the change stream fell behind the retained history")
	}
	if cap(sc.arena) > 8<<20 {
		sc.arena = nil
	}
	sc.arena = sc.arena[:0]
	size := 0
	full := func() bool {
		return (limit > 0 && len(b.docs) >= limit) || size >= maxBatchBytes
	}
	emit := func(ev bsoncore.Document) error {
		out, keep, err := runStages(sc.stages, ev)
		if err != nil || !keep {
			return err
		}
		b.docs = append(b.docs, out)
		size += len(out)
		return nil
	}
	for !full() {
		if sc.invalidate != nil {
			tok := *sc.invalidate
			if err := emit(renderInvalidate(tok, e.entryWall(tok.seq))); err != nil {
				return batch{}, nil, err
			}
			sc.pbrt, sc.invalidate, sc.done = tok, nil, true
			b.exhausted = true
			break
		}
		en := o.entryAt(sc.next)
		if en == nil {
			break
		}
		visible, inv := sc.scope.sees(en)
		if visible {
			start := len(sc.arena)
			sc.arena = sc.render(sc.arena, en)
			if err := emit(sc.arena[start:len(sc.arena):len(sc.arena)]); err != nil {
				return batch{}, nil, err
			}
		}
		sc.pbrt = resumeToken{ts: en.ts, seq: en.seq}
		sc.next++
		if inv {
			sc.invalidate = &resumeToken{ts: en.ts, seq: en.seq, invalidate: true}
		}
	}
	pbrt := sc.pbrt
	b.pbrt = &pbrt
	return b, e.notify, nil
}

// entryWall returns the wall time of a retained entry (0 if gone).
func (e *engine) entryWall(seq uint64) int64 {
	if en := e.oplog.entryAt(seq); en != nil {
		return en.wall
	}
	return 0
}

// render appends the change event for en to dst. Caller holds e.mu.
func (sc *streamCursor) render(dst []byte, en *oplogEntry) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = resumeToken{ts: en.ts, seq: en.seq}.appendTo(dst, "_id")
	dst = bsoncore.AppendStringElement(dst, "operationType", opNames[en.op])
	dst = appendTimestamp(dst, "clusterTime", en.ts)
	dst = bsoncore.AppendDateTimeElement(dst, "wallTime", en.wall)
	switch en.op {
	case opInsert, opReplace:
		dst = bsoncore.AppendDocumentElement(dst, "fullDocument", en.doc)
	case opUpdate:
		if sc.updateLookup {
			dst = sc.e.appendLookup(dst, en)
		}
	}
	nidx, dst := bsoncore.AppendDocumentElementStart(dst, "ns")
	dst = bsoncore.AppendStringElement(dst, "db", en.ns.db)
	if en.op != opDropDatabase {
		dst = bsoncore.AppendStringElement(dst, "coll", en.ns.coll)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, nidx)
	if en.op == opRename {
		tidx, out := bsoncore.AppendDocumentElementStart(dst, "to")
		out = bsoncore.AppendStringElement(out, "db", en.to.db)
		out = bsoncore.AppendStringElement(out, "coll", en.to.coll)
		dst, _ = bsoncore.AppendDocumentEnd(out, tidx)
	}
	switch {
	case en.key != nil:
		dst = bsoncore.AppendDocumentElement(dst, "documentKey", en.key)
	case en.doc != nil: // insert, replace: the key is the document's _id
		kidx, out := bsoncore.AppendDocumentElementStart(dst, "documentKey")
		if id, err := en.doc.LookupErr("_id"); err == nil {
			out = bsoncore.AppendValueElement(out, "_id", id)
		}
		dst, _ = bsoncore.AppendDocumentEnd(out, kidx)
	}
	if en.desc != nil {
		dst = bsoncore.AppendDocumentElement(dst, "updateDescription", en.desc)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// appendLookup appends fullDocument for fullDocument: "updateLookup": the
// document as it is now (which may be later than the event), or null if it
// no longer exists.
func (e *engine) appendLookup(dst []byte, en *oplogEntry) []byte {
	if coll := e.collection(en.ns.db, en.ns.coll); coll != nil {
		if id, err := checkID(en.key.Lookup("_id")); err == nil {
			if rec, ok := coll.get(id); ok {
				return bsoncore.AppendDocumentElement(dst, "fullDocument", rec.raw)
			}
		}
	}
	return bsoncore.AppendNullElement(dst, "fullDocument")
}

func renderInvalidate(tok resumeToken, wall int64) bsoncore.Document {
	idx, dst := bsoncore.AppendDocumentStart(make([]byte, 0, 128))
	dst = tok.appendTo(dst, "_id")
	dst = bsoncore.AppendStringElement(dst, "operationType", "invalidate")
	dst = appendTimestamp(dst, "clusterTime", tok.ts)
	if wall != 0 {
		dst = bsoncore.AppendDateTimeElement(dst, "wallTime", wall)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}
