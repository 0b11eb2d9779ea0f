package mongoserver

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Storage mutations. Each one changes a collection and appends the matching
// oplog entry in the same critical section (caller holds e.mu exclusively),
// so the oplog is exactly the commit order.

// insertDoc stores a document already in storage form (_id first).
func (e *engine) insertDoc(c *collection, raw bsoncore.Document, id interface{}, idVal bsoncore.Value) error {
	if _, dup := c.get(id); dup {
		return dupKeyError(c, idVal)
	}
	if err := c.checkUnique(raw, id); err != nil {
		return err
	}
	c.reindex(nil, raw, id)
	c.docs.Set(&record{id: id, raw: raw})
	c.size += int64(len(raw))
	// documentKey is derived from doc when an event is rendered.
	e.appendEntry(oplogEntry{op: opInsert, ns: c.ns, doc: raw})
	return nil
}

// replaceDoc swaps the stored document for raw (same _id) and logs a replace.
func (e *engine) replaceDoc(c *collection, old *record, raw bsoncore.Document) error {
	if err := c.checkUnique(raw, old.id); err != nil {
		return err
	}
	c.reindex(old.raw, raw, old.id)
	c.docs.Set(&record{id: old.id, raw: raw})
	c.size += int64(len(raw) - len(old.raw))
	e.appendEntry(oplogEntry{op: opReplace, ns: c.ns, doc: raw})
	return nil
}

// updateDoc stores the result of an operator update and logs an update with
// its updateDescription.
func (e *engine) updateDoc(c *collection, old *record, raw, desc bsoncore.Document) error {
	if err := c.checkUnique(raw, old.id); err != nil {
		return err
	}
	c.reindex(old.raw, raw, old.id)
	c.docs.Set(&record{id: old.id, raw: raw})
	c.size += int64(len(raw) - len(old.raw))
	idVal, _ := raw.LookupErr("_id")
	e.appendEntry(oplogEntry{op: opUpdate, ns: c.ns, key: docKeyOf(idVal), desc: desc})
	return nil
}

// deleteDoc removes a document and logs a delete.
func (e *engine) deleteDoc(c *collection, rec *record) {
	c.reindex(rec.raw, nil, rec.id)
	c.docs.Delete(rec)
	c.size -= int64(len(rec.raw))
	idVal, _ := rec.raw.LookupErr("_id")
	e.appendEntry(oplogEntry{op: opDelete, ns: c.ns, key: docKeyOf(idVal)})
}

func dupKeyError(c *collection, idVal bsoncore.Value) *cmdError {
	return errf(codeDuplicateKey, "E11000 duplicate key error collection: %s index: _id_ dup key: { _id: %s }", c.ns, idVal.String())
}

func tooLarge(size int) *cmdError {
	return errf(codeBSONObjectTooLarge, "BSONObj size: %d (0x%X) is invalid. Size must be between 0 and 16793600(16MB)", size, size)
}

// update describes one update statement's modification, decoded once.
type update struct {
	replacement  bsoncore.Document // a replacement document, or
	operators    bson.D            // an operator update
	arrayFilters bsonkit.List
}

// parseUpdate classifies u as replacement or operator update.
func parseUpdate(u bsoncore.Value, arrayFilters bsoncore.Value) (*update, error) {
	if u.Type == bson.TypeArray {
		return nil, errf(codeIllegalOperation, "pipeline-style updates are not supported by this server")
	}
	doc, ok := u.DocumentOK()
	if !ok {
		return nil, errf(codeFailedToParse, "update must be a document, not %s", u.Type)
	}
	up := &update{}
	first, err := doc.IndexErr(0)
	if err != nil || !strings.HasPrefix(first.Key(), "$") {
		// Its field names are checked when it is stored: whether a "$" name may
		// stay depends on whether it replaces a document or an upsert inserts it.
		up.replacement = doc
		return up, nil
	}
	if up.operators, err = toD(doc); err != nil {
		return nil, errf(codeFailedToParse, "update: %v", err)
	}
	for _, e := range up.operators {
		if !strings.HasPrefix(e.Key, "$") {
			return nil, errf(codeFailedToParse, "cannot mix update operators and fields (%s)", e.Key)
		}
		if _, ok := mongokit.FieldUpdateOperators[e.Key]; !ok {
			return nil, errf(codeFailedToParse, "Unknown modifier: %s. Expected a valid update modifier or pipeline-style update specified as an array", e.Key)
		}
	}
	if arr, ok := arrayFilters.ArrayOK(); ok {
		vals, _ := arr.Values()
		for _, v := range vals {
			fd, ok := v.DocumentOK()
			if !ok {
				return nil, errf(codeFailedToParse, "arrayFilters entries must be documents")
			}
			d, err := toD(fd)
			if err != nil {
				return nil, errf(codeFailedToParse, "arrayFilters: %v", err)
			}
			up.arrayFilters = append(up.arrayFilters, &d)
		}
	}
	return up, nil
}

// applyUpdate runs up on old and checks that the server may store the result:
// its size, its nesting and its field names (see storage.go). changed is false
// when nothing would change, and then nothing is checked, as nothing is stored.
func (e *engine) applyUpdate(up *update, old *record, q *query) (raw, desc bsoncore.Document, changed bool, err error) {
	if up.operators != nil {
		if err := e.opts.checkUpdatePaths(up.operators, storeModify); err != nil {
			return nil, nil, false, err
		}
	}
	raw, desc, changed, err = up.apply(old, q)
	if err != nil || !changed {
		return raw, desc, changed, err
	}
	if len(raw) > maxBSONObjectSize {
		return nil, nil, false, tooLarge(len(raw))
	}
	if desc == nil {
		err = e.opts.checkStorable(raw, storeReplace, nil)
	} else {
		err = e.opts.checkStorable(raw, storeModify, updatedPaths(desc))
	}
	if err != nil {
		return nil, nil, false, err
	}
	return raw, desc, true, nil
}

// upsertDoc builds the document an upsert inserts and checks it as applyUpdate does.
func (e *engine) upsertDoc(up *update, q *query) (bsoncore.Document, error) {
	if up.operators != nil {
		if err := e.opts.checkUpdatePaths(up.operators, storeUpsert); err != nil {
			return nil, err
		}
	}
	raw, err := up.upsertDoc(q)
	if err != nil {
		return nil, err
	}
	if len(raw) > maxBSONObjectSize {
		return nil, tooLarge(len(raw))
	}
	if err := e.opts.checkStorable(raw, storeUpsert, nil); err != nil {
		return nil, err
	}
	return raw, nil
}

// updatedPaths lists the paths an updateDescription sets.
func updatedPaths(desc bsoncore.Document) []string {
	fields, ok := desc.Lookup("updatedFields").DocumentOK()
	if !ok {
		return nil
	}
	elems, _ := fields.Elements()
	paths := make([]string, len(elems))
	for i, e := range elems {
		paths[i] = e.Key()
	}
	return paths
}

// apply computes the new version of old under up. For operator updates it
// also returns the updateDescription; changed is false when the result is
// byte-identical (MongoDB then reports nModified 0 and logs nothing).
func (up *update) apply(old *record, q *query) (raw, desc bsoncore.Document, changed bool, err error) {
	oldID, _ := old.raw.LookupErr("_id")
	if up.replacement != nil {
		raw, err = replacementWithID(up.replacement, oldID)
		if err != nil {
			return nil, nil, false, err
		}
		return raw, nil, !bytes.Equal(raw, old.raw), nil
	}
	d := mustD(old.raw)
	ops, err := resolvePositional(up.operators, q.filter, &d)
	if err != nil {
		return nil, nil, false, err
	}
	changes, err := mongokit.Apply(&d, &q.filter, &ops, false, up.arrayFilters)
	if err != nil {
		return nil, nil, false, errf(codeBadValue, "%v", err)
	}
	if raw, err = fromD(d); err != nil {
		return nil, nil, false, errf(codeBadValue, "encode updated document: %v", err)
	}
	newID, err := raw.LookupErr("_id")
	if err != nil || !newID.Equal(oldID) {
		return nil, nil, false, errf(codeImmutableField, "Performing an update on the path '_id' would modify the immutable field '_id'")
	}
	if bytes.Equal(raw, old.raw) {
		return raw, nil, false, nil
	}
	return raw, updateDescription(changes, d), true, nil
}

// replacementWithID gives a replacement document the _id it replaces,
// refusing a different one.
func replacementWithID(repl bsoncore.Document, id bsoncore.Value) (bsoncore.Document, error) {
	if v, err := repl.LookupErr("_id"); err == nil {
		if !v.Equal(id) {
			return nil, errf(codeImmutableField, "After applying the update, the (immutable) field '_id' was found to have been altered to _id: %s", v.String())
		}
		return withIDFirst(repl)
	}
	out := make([]byte, 0, len(repl)+len(id.Data)+8)
	idx, out := bsoncore.AppendDocumentStart(out)
	out = bsoncore.AppendValueElement(out, "_id", id)
	elems, _ := repl.Elements()
	for _, e := range elems {
		out = append(out, e...)
	}
	return bsoncore.AppendDocumentEnd(out, idx)
}

// upsertDoc builds the document an upsert inserts when nothing matched:
// the query's equality fields, then the update applied in insert mode.
func (up *update) upsertDoc(q *query) (bsoncore.Document, error) {
	if up.replacement != nil {
		if q.id != nil {
			if _, err := up.replacement.LookupErr("_id"); err != nil {
				idDoc, err := fromD(bson.D{{Key: "_id", Value: q.id}})
				if err != nil {
					return nil, err
				}
				return replacementWithID(up.replacement, idDoc.Lookup("_id"))
			}
		}
		return withIDFirst(up.replacement)
	}
	base := &bson.D{}
	if len(q.filter) > 0 {
		var err error
		if base, err = mongokit.Extract(&q.filter); err != nil {
			return nil, errf(codeBadValue, "upsert: %v", err)
		}
	}
	if _, err := mongokit.Apply(base, &q.filter, &up.operators, true, up.arrayFilters); err != nil {
		return nil, errf(codeBadValue, "%v", err)
	}
	raw, err := fromD(*base)
	if err != nil {
		return nil, err
	}
	return withIDFirst(raw)
}

// updateDescription renders mongokit's change record as a change event's
// updateDescription: updatedFields, removedFields and (always empty here)
// truncatedArrays. Updated paths are listed in the order their fields stand in
// the post-image, so that replaying the delta as a $set on the pre-image gives
// the post-image byte for byte under either rule MongoDB has used for the order
// of new fields (command order before 5.0, lexicographic since). Removed paths
// are sorted, which makes events deterministic.
func updateDescription(ch *mongokit.Changes, post bson.D) bsoncore.Document {
	paths := make([]string, 0, len(ch.Changed))
	for p := range ch.Changed {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	order := make(map[string][]int, len(paths))
	for _, p := range paths {
		order[p] = fieldPosition(post, p)
	}
	sort.SliceStable(paths, func(i, j int) bool {
		return slices.Compare(order[paths[i]], order[paths[j]]) < 0
	})
	idx, dst := bsoncore.AppendDocumentStart(nil)
	uidx, dst := bsoncore.AppendDocumentElementStart(dst, "updatedFields")
	for _, p := range paths {
		if v := ch.Changed[p]; v != bsonkit.Missing {
			var err error
			if dst, err = appendValueElement(dst, p, v); err != nil {
				panic(fmt.Sprintf("encode updated field %s: %v", p, err))
			}
		}
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, uidx)
	ridx, dst := bsoncore.AppendArrayElementStart(dst, "removedFields")
	n := 0
	for _, p := range paths {
		if ch.Changed[p] == bsonkit.Missing {
			dst = bsoncore.AppendStringElement(dst, itoa(n), p)
			n++
		}
	}
	dst, _ = bsoncore.AppendArrayEnd(dst, ridx)
	tidx, dst := bsoncore.AppendArrayElementStart(dst, "truncatedArrays")
	dst, _ = bsoncore.AppendArrayEnd(dst, tidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// fieldPosition returns the index of each segment of a dotted path within the
// document (and its embedded documents and arrays). A segment that is not there
// (a removed field) sorts after every present one.
func fieldPosition(doc bson.D, path string) []int {
	var pos []int
	var cur any = doc
	for _, seg := range strings.Split(path, ".") {
		i := -1
		switch c := cur.(type) {
		case bson.D:
			for k, e := range c {
				if e.Key == seg {
					i, cur = k, e.Value
					break
				}
			}
		case bson.A:
			if n, err := strconv.Atoi(seg); err == nil && n >= 0 && n < len(c) {
				i, cur = n, c[n]
			}
		}
		if i < 0 {
			return append(pos, math.MaxInt)
		}
		pos = append(pos, i)
	}
	return pos
}
