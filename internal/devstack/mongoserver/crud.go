package mongoserver

import (
	"time"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

func init() {
	register(cmdInsert, false, "insert")
	register(cmdUpdate, false, "update")
	register(cmdDelete, false, "delete")
	register(cmdFind, false, "find")
	register(cmdCount, false, "count")
	register(cmdDistinct, false, "distinct")
	register(cmdFindAndModify, false, "findAndModify", "findandmodify")
}

// writeError is one failed item of a write batch.
type writeError struct {
	index int
	err   *cmdError
}

func appendWriteErrors(dst []byte, errs []writeError) []byte {
	if len(errs) == 0 {
		return dst
	}
	idx, dst := bsoncore.AppendArrayElementStart(dst, "writeErrors")
	for i, we := range errs {
		didx, out := bsoncore.AppendDocumentElementStart(dst, itoa(i))
		out = bsoncore.AppendInt32Element(out, "index", int32(we.index))
		out = bsoncore.AppendInt32Element(out, "code", we.err.Code)
		out = bsoncore.AppendStringElement(out, "codeName", we.err.codeName())
		out = bsoncore.AppendStringElement(out, "errmsg", we.err.Msg)
		dst, _ = bsoncore.AppendDocumentEnd(out, didx)
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	return dst
}

// cmdInsert stores documents; a duplicate _id fails that item with 11000.
// ordered (the default) stops at the first failure.
func cmdInsert(c *cmdCtx, dst []byte) ([]byte, error) {
	name, docs, ordered, err := c.writeCommand("documents")
	if err != nil {
		return nil, err
	}

	// Prepare outside the lock: validation and _id extraction.
	type prepared struct {
		raw   bsoncore.Document
		id    interface{}
		idVal bsoncore.Value
		err   *cmdError
	}
	items := make([]prepared, len(docs))
	for i, d := range docs {
		if len(d) > maxBSONObjectSize {
			items[i].err = tooLarge(len(d))
			continue
		}
		if err := c.e.opts.checkStorable(d, storeInsert, nil); err != nil {
			items[i].err = asCmdError(err, codeBadValue)
			continue
		}
		raw, err := withIDFirst(d)
		if err != nil {
			items[i].err = asCmdError(err, codeBadValue)
			continue
		}
		id, idVal, err := idOf(raw)
		if err != nil {
			items[i].err = asCmdError(err, codeBadValue)
			continue
		}
		items[i] = prepared{raw: raw, id: id, idVal: idVal}
	}

	var errs []writeError
	n := 0
	c.e.lock()
	coll, _ := c.e.createCollection(c.db, name)
	for i := range items {
		it := &items[i]
		if it.err == nil {
			if err := c.e.insertDoc(coll, it.raw, it.id, it.idVal); err != nil {
				it.err = asCmdError(err, codeInternalError)
			}
		}
		if it.err != nil {
			errs = append(errs, writeError{i, it.err})
			if ordered {
				break
			}
			continue
		}
		n++
	}
	c.e.unlock()
	dst = bsoncore.AppendInt32Element(dst, "n", int32(n))
	return appendWriteErrors(dst, errs), nil
}

// cmdUpdate runs update statements {q, u, upsert, multi, arrayFilters}.
func cmdUpdate(c *cmdCtx, dst []byte) ([]byte, error) {
	name, stmts, ordered, err := c.writeCommand("updates")
	if err != nil {
		return nil, err
	}

	type upserted struct {
		index int
		id    bsoncore.Value
	}
	var (
		errs                []writeError
		ups                 []upserted
		nMatched, nModified int
	)
	c.e.lock()
	defer c.e.unlock()
	for i, stmt := range stmts {
		matched, modified, upID, err := c.e.updateOne(c.db, name, stmt)
		if err != nil {
			errs = append(errs, writeError{i, asCmdError(err, codeBadValue)})
			if ordered {
				break
			}
			continue
		}
		nMatched += matched
		nModified += modified
		if upID.Type != 0 {
			ups = append(ups, upserted{i, upID})
		}
	}
	dst = bsoncore.AppendInt32Element(dst, "n", int32(nMatched+len(ups)))
	dst = bsoncore.AppendInt32Element(dst, "nModified", int32(nModified))
	if len(ups) > 0 {
		idx, out := bsoncore.AppendArrayElementStart(dst, "upserted")
		for j, u := range ups {
			didx, o := bsoncore.AppendDocumentElementStart(out, itoa(j))
			o = bsoncore.AppendInt32Element(o, "index", int32(u.index))
			o = bsoncore.AppendValueElement(o, "_id", u.id)
			out, _ = bsoncore.AppendDocumentEnd(o, didx)
		}
		dst, _ = bsoncore.AppendArrayEnd(out, idx)
	}
	return appendWriteErrors(dst, errs), nil
}

// updateOne runs one update statement. Caller holds e.mu exclusively.
func (e *engine) updateOne(db, name string, stmt bsoncore.Document) (matched, modified int, upsertedID bsoncore.Value, err error) {
	qdoc, err := docValue("update", "q", stmt.Lookup("q"))
	if err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	q, err := newQuery(qdoc)
	if err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	up, err := parseUpdate(stmt.Lookup("u"), stmt.Lookup("arrayFilters"))
	if err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	multi := truthy(stmt.Lookup("multi"), false)
	if multi && up.replacement != nil {
		return 0, 0, bsoncore.Value{}, errf(codeFailedToParse, "multi update is not supported for replacement-style update")
	}
	coll := e.collection(db, name)
	var targets []*record
	if err := q.each(coll, nil, func(r *record) bool {
		targets = append(targets, r)
		return multi
	}); err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	for _, old := range targets {
		matched++
		raw, desc, changed, err := e.applyUpdate(up, old, q)
		if err != nil {
			return matched, modified, bsoncore.Value{}, err
		}
		if !changed {
			continue
		}
		if desc == nil {
			err = e.replaceDoc(coll, old, raw)
		} else {
			err = e.updateDoc(coll, old, raw, desc)
		}
		if err != nil {
			return matched, modified, bsoncore.Value{}, err
		}
		modified++
	}
	if matched > 0 || !truthy(stmt.Lookup("upsert"), false) {
		return matched, modified, bsoncore.Value{}, nil
	}
	raw, err := e.upsertDoc(up, q)
	if err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	id, idVal, err := idOf(raw)
	if err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	if coll == nil {
		coll, _ = e.createCollection(db, name)
	}
	if err := e.insertDoc(coll, raw, id, idVal); err != nil {
		return 0, 0, bsoncore.Value{}, err
	}
	return 0, 0, idVal, nil
}

// cmdDelete runs delete statements {q, limit} (limit 0: all, 1: one).
func cmdDelete(c *cmdCtx, dst []byte) ([]byte, error) {
	name, stmts, ordered, err := c.writeCommand("deletes")
	if err != nil {
		return nil, err
	}
	var errs []writeError
	n := 0
	c.e.lock()
	defer c.e.unlock()
	coll := c.e.collection(c.db, name)
	for i, stmt := range stmts {
		deleted, err := c.e.deleteMatching(coll, stmt)
		n += deleted
		if err != nil {
			errs = append(errs, writeError{i, asCmdError(err, codeBadValue)})
			if ordered {
				break
			}
		}
	}
	dst = bsoncore.AppendInt32Element(dst, "n", int32(n))
	return appendWriteErrors(dst, errs), nil
}

func (e *engine) deleteMatching(coll *collection, stmt bsoncore.Document) (int, error) {
	qdoc, err := docValue("delete", "q", stmt.Lookup("q"))
	if err != nil {
		return 0, err
	}
	q, err := newQuery(qdoc)
	if err != nil {
		return 0, err
	}
	limit, err := intValue("delete", "limit", stmt.Lookup("limit"), 0)
	if err != nil {
		return 0, err
	}
	var victims []*record
	if err := q.each(coll, nil, func(r *record) bool {
		victims = append(victims, r)
		return limit != 1
	}); err != nil {
		return 0, err
	}
	for _, r := range victims {
		e.deleteDoc(coll, r)
	}
	return len(victims), nil
}

// findOptions are the parts of find shared with the cursor it opens.
type findOptions struct {
	q          *query
	sort       *bson.D
	projection *projection
	skip       int64
	limit      int64 // 0: none
}

// cmdFind answers find: filtered, sorted, projected, paged documents.
func cmdFind(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	fo, err := parseFindOptions(c, "filter")
	if err != nil {
		return nil, err
	}
	batchSize, err := c.integer("batchSize", 101)
	if err != nil {
		return nil, err
	}
	singleBatch := c.boolean("singleBatch", false)
	if fo.limit < 0 {
		fo.limit, singleBatch = -fo.limit, true
	}
	first := int(batchSize)
	if fo.limit > 0 && (first <= 0 || int64(first) > fo.limit) {
		first = int(fo.limit)
	}
	if batchSize == 0 && !c.has("limit") {
		first = -1 // batchSize 0: an empty first batch, everything via getMore
	}
	ns := c.db + "." + name
	c.e.mu.RLock()
	coll := c.e.collection(c.db, name)
	c.e.mu.RUnlock()
	var cur cursor
	if reverse, byID := sortsByID(fo.sort); byID {
		cur = &scanCursor{e: c.e, coll: coll, q: fo.q, reverse: reverse, projection: fo.projection, skip: fo.skip, remaining: fo.limit}
	} else {
		docs, err := c.e.sortedResult(coll, fo)
		if err != nil {
			return nil, err
		}
		cur = &listCursor{docs: docs}
	}
	if first < 0 {
		id := c.e.cursors.add(ns, cur).id
		return appendCursorReply(dst, "firstBatch", id, ns, batch{}), nil
	}
	return openCursor(c, dst, ns, cur, first, singleBatch)
}

// parseFindOptions reads filter (under filterKey), sort, projection, skip and
// limit from a find-like command.
func parseFindOptions(c *cmdCtx, filterKey string) (*findOptions, error) {
	filter, err := c.doc(filterKey)
	if err != nil {
		return nil, err
	}
	fo := &findOptions{}
	if fo.q, err = newQuery(filter); err != nil {
		return nil, err
	}
	for _, key := range []string{"sort", "projection", "fields"} {
		raw, err := c.doc(key)
		if err != nil {
			return nil, err
		}
		if len(raw) <= 5 { // absent or {}
			continue
		}
		d, err := toD(raw)
		if err != nil {
			return nil, errf(codeBadValue, "%s: %v", key, err)
		}
		if key == "sort" {
			fo.sort = &d
		} else if fo.projection, err = compileProjection(d); err != nil {
			return nil, err
		}
	}
	if fo.skip, err = c.integer("skip", 0); err != nil {
		return nil, err
	}
	if fo.skip < 0 {
		return nil, errf(codeBadValue, "skip value must be non-negative, but received: %d", fo.skip)
	}
	if fo.limit, err = c.integer("limit", 0); err != nil {
		return nil, err
	}
	return fo, nil
}

// sortsByID reports whether a sort (nil: none) is _id order, which the
// B-tree yields directly, ascending or (reverse) descending.
func sortsByID(s *bson.D) (reverse, ok bool) {
	if s == nil {
		return false, true
	}
	if len(*s) != 1 || (*s)[0].Key != "_id" {
		return false, false
	}
	cols, err := mongokit.Columns(s)
	if err != nil {
		return false, false
	}
	return cols[0].Reverse, true
}

// sortedResult materialises, sorts, skips, limits and projects a result.
func (e *engine) sortedResult(coll *collection, fo *findOptions) ([]bsoncore.Document, error) {
	var list bsonkit.List
	e.mu.RLock()
	err := fo.q.each(coll, nil, func(r *record) bool {
		d := mustD(r.raw)
		list = append(list, &d)
		return true
	})
	e.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if fo.sort != nil {
		if err := sortDocs(list, fo.sort); err != nil {
			return nil, err
		}
	}
	if fo.skip > 0 {
		list = list[min(int(fo.skip), len(list)):]
	}
	if fo.limit > 0 && int64(len(list)) > fo.limit {
		list = list[:fo.limit]
	}
	out := make([]bsoncore.Document, 0, len(list))
	for _, d := range list {
		if fo.projection != nil {
			pd := fo.projection.apply(*d)
			d = &pd
		}
		raw, err := fromD(*d)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// scanCursor walks a collection in _id order (descending when reverse)
// lazily, so a find over a large collection costs per batch, not per
// collection.
type scanCursor struct {
	e          *engine
	coll       *collection
	q          *query
	reverse    bool
	projection *projection
	after      *record // last document returned
	skip       int64
	remaining  int64 // documents still allowed by limit; 0: unlimited
	limited    bool
}

func (s *scanCursor) nextBatch(_ *cmdCtx, limit int, _ time.Duration, _ <-chan struct{}) (batch, error) {
	if s.remaining > 0 {
		s.limited = true
	}
	var b batch
	size := 0
	more := false
	var perr error
	s.e.mu.RLock()
	err := s.q.walk(s.coll, s.after, s.reverse, func(r *record) bool {
		if s.skip > 0 {
			s.skip--
			s.after = r
			return true
		}
		if (limit > 0 && len(b.docs) >= limit) || (s.limited && s.remaining == 0) || size+len(r.raw) > maxBatchBytes && len(b.docs) > 0 {
			more = true
			return false
		}
		doc, err := project(r.raw, s.projection)
		if err != nil {
			perr = err
			return false
		}
		b.docs = append(b.docs, doc)
		size += len(doc)
		s.after = r
		if s.limited {
			s.remaining--
		}
		return true
	})
	s.e.mu.RUnlock()
	if err == nil {
		err = perr
	}
	if err != nil {
		return batch{}, err
	}
	b.exhausted = !more || (s.limited && s.remaining == 0)
	return b, nil
}

// cmdCount answers the legacy count command.
func cmdCount(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	fo, err := parseFindOptions(c, "query")
	if err != nil {
		return nil, err
	}
	c.e.mu.RLock()
	defer c.e.mu.RUnlock()
	coll := c.e.collection(c.db, name)
	var n int64
	if coll != nil && len(fo.q.filter) == 0 {
		n = int64(coll.docs.Len())
	} else if err := fo.q.each(coll, nil, func(*record) bool { n++; return true }); err != nil {
		return nil, err
	}
	n = max(n-fo.skip, 0)
	if fo.limit > 0 && n > fo.limit {
		n = fo.limit
	}
	return bsoncore.AppendInt64Element(dst, "n", n), nil
}

// cmdDistinct returns the distinct values of a field (array elements
// counted individually) among the documents matching query.
func cmdDistinct(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	key, err := c.str("key")
	if err != nil || key == "" {
		return nil, errf(codeFailedToParse, "distinct: key must be a non-empty string")
	}
	fo, err := parseFindOptions(c, "query")
	if err != nil {
		return nil, err
	}
	var list bsonkit.List
	c.e.mu.RLock()
	err = fo.q.each(c.e.collection(c.db, name), nil, func(r *record) bool {
		d := mustD(r.raw)
		list = append(list, &d)
		return true
	})
	c.e.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	values := mongokit.Distinct(list, key)
	idx, dst := bsoncore.AppendArrayElementStart(dst, "values")
	for i, v := range values {
		if dst, err = appendValueElement(dst, itoa(i), v); err != nil {
			return nil, err
		}
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, idx)
	return dst, nil
}

// cmdFindAndModify updates, replaces or removes the first document matching
// query (in sort order) and returns it as it was, or as it became (new).
func cmdFindAndModify(c *cmdCtx, dst []byte) ([]byte, error) {
	name, err := c.collName()
	if err != nil {
		return nil, err
	}
	fo, err := parseFindOptions(c, "query")
	if err != nil {
		return nil, err
	}
	remove := c.boolean("remove", false)
	returnNew := c.boolean("new", false)
	upsert := c.boolean("upsert", false)
	var up *update
	if !remove {
		if !c.has("update") {
			return nil, errf(codeFailedToParse, "Either an update or remove=true must be specified")
		}
		if up, err = parseUpdate(c.value("update"), c.value("arrayFilters")); err != nil {
			return nil, err
		}
	} else if upsert || returnNew {
		return nil, errf(codeFailedToParse, "remove cannot be combined with upsert or new")
	}

	c.e.lock()
	defer c.e.unlock()
	coll := c.e.collection(c.db, name)
	target, err := c.e.firstMatch(coll, fo)
	if err != nil {
		return nil, err
	}

	var value bsoncore.Document // nil renders as null
	var upsertedID bsoncore.Value
	n, updatedExisting := 0, false
	switch {
	case target != nil && remove:
		c.e.deleteDoc(coll, target)
		value, n = target.raw, 1
	case target != nil:
		raw, desc, changed, err := c.e.applyUpdate(up, target, fo.q)
		if err != nil {
			return nil, err
		}
		if changed {
			if desc == nil {
				err = c.e.replaceDoc(coll, target, raw)
			} else {
				err = c.e.updateDoc(coll, target, raw, desc)
			}
			if err != nil {
				return nil, err
			}
		}
		value, n, updatedExisting = target.raw, 1, true
		if returnNew {
			value = raw
		}
	case upsert:
		raw, err := c.e.upsertDoc(up, fo.q)
		if err != nil {
			return nil, err
		}
		id, idVal, err := idOf(raw)
		if err != nil {
			return nil, err
		}
		if coll == nil {
			coll, _ = c.e.createCollection(c.db, name)
		}
		if err := c.e.insertDoc(coll, raw, id, idVal); err != nil {
			return nil, err
		}
		n, upsertedID = 1, idVal
		if returnNew {
			value = raw
		}
	}
	if value != nil && fo.projection != nil {
		if value, err = project(value, fo.projection); err != nil {
			return nil, err
		}
	}

	idx, dst := bsoncore.AppendDocumentElementStart(dst, "lastErrorObject")
	dst = bsoncore.AppendInt32Element(dst, "n", int32(n))
	if !remove {
		dst = bsoncore.AppendBooleanElement(dst, "updatedExisting", updatedExisting)
	}
	if upsertedID.Type != 0 {
		dst = bsoncore.AppendValueElement(dst, "upserted", upsertedID)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	if value == nil {
		dst = bsoncore.AppendNullElement(dst, "value")
	} else {
		dst = bsoncore.AppendDocumentElement(dst, "value", value)
	}
	return dst, nil
}

// firstMatch returns the first document matching fo in its sort order.
func (e *engine) firstMatch(coll *collection, fo *findOptions) (*record, error) {
	if reverse, byID := sortsByID(fo.sort); byID {
		var hit *record
		err := fo.q.walk(coll, nil, reverse, func(r *record) bool { hit = r; return false })
		return hit, err
	}
	var list bsonkit.List
	byDoc := map[bsonkit.Doc]*record{}
	err := fo.q.each(coll, nil, func(r *record) bool {
		d := mustD(r.raw)
		list = append(list, &d)
		byDoc[&d] = r
		return true
	})
	if err != nil || len(list) == 0 {
		return nil, err
	}
	if err := sortDocs(list, fo.sort); err != nil {
		return nil, err
	}
	return byDoc[list[0]], nil
}
