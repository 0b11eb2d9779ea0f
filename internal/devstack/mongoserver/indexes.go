package mongoserver

import (
	"strings"

	"github.com/tidwall/btree"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Unique secondary indexes. Only uniqueness is enforced (the server never
// uses an index to answer a query other than by _id): each unique index is
// an ordered set of key tuples, checked and maintained by every write.
// Arrays are indexed as whole values, not per element (no multikey).

type uniqueIndex struct {
	name   string
	fields []string
	sparse bool
	keys   *btree.BTreeG[*indexKey]
}

type indexKey struct {
	vals bson.A      // the indexed fields' values, null when missing
	id   interface{} // the owning document's _id
}

func newUniqueIndex(spec bsoncore.Document) (*uniqueIndex, bool) {
	if !truthy(spec.Lookup("unique"), false) {
		return nil, false
	}
	keyDoc, ok := spec.Lookup("key").DocumentOK()
	if !ok {
		return nil, false
	}
	elems, _ := keyDoc.Elements()
	ix := &uniqueIndex{
		name:   spec.Lookup("name").StringValue(),
		sparse: truthy(spec.Lookup("sparse"), false),
		keys: btree.NewBTreeGOptions(func(a, b *indexKey) bool {
			return compareValues(a.vals, b.vals) < 0
		}, btree.Options{NoLocks: true}),
	}
	for _, e := range elems {
		ix.fields = append(ix.fields, e.Key())
	}
	if len(ix.fields) == 1 && ix.fields[0] == "_id" {
		return nil, false // the _id index is the B-tree itself
	}
	return ix, true
}

// keyOf extracts raw's key tuple; ok is false for a sparse index when none
// of the fields is present.
func (ix *uniqueIndex) keyOf(raw bsoncore.Document) (bson.A, bool) {
	vals := make(bson.A, len(ix.fields))
	present := false
	for i, f := range ix.fields {
		v, err := raw.LookupErr(strings.Split(f, ".")...)
		if err != nil || v.Type == bson.TypeUndefined {
			continue
		}
		if x, err := toValue(v); err == nil {
			vals[i], present = x, true
		}
	}
	return vals, present || !ix.sparse
}

// conflict returns the duplicate-key error if raw's key belongs to a
// document other than id.
func (ix *uniqueIndex) conflict(c *collection, raw bsoncore.Document, id interface{}) error {
	vals, ok := ix.keyOf(raw)
	if !ok {
		return nil
	}
	if hit, found := ix.keys.Get(&indexKey{vals: vals}); found && compareValues(hit.id, id) != 0 {
		var parts []string
		for i, f := range ix.fields {
			raw, _ := fromD(bson.D{{Key: "v", Value: vals[i]}})
			parts = append(parts, f+": "+raw.Lookup("v").String())
		}
		return errf(codeDuplicateKey, "E11000 duplicate key error collection: %s index: %s dup key: { %s }", c.ns, ix.name, strings.Join(parts, ", "))
	}
	return nil
}

func (ix *uniqueIndex) add(raw bsoncore.Document, id interface{}) {
	if vals, ok := ix.keyOf(raw); ok {
		ix.keys.Set(&indexKey{vals: vals, id: id})
	}
}

func (ix *uniqueIndex) remove(raw bsoncore.Document) {
	if vals, ok := ix.keyOf(raw); ok {
		ix.keys.Delete(&indexKey{vals: vals})
	}
}

// checkUnique verifies that raw (replacing old, if any) violates no unique
// index of c.
func (c *collection) checkUnique(raw bsoncore.Document, id interface{}) error {
	for _, ix := range c.uniques {
		if err := ix.conflict(c, raw, id); err != nil {
			return err
		}
	}
	return nil
}

// reindex moves a document's index keys from old to new (either may be nil).
func (c *collection) reindex(old, new bsoncore.Document, id interface{}) {
	for _, ix := range c.uniques {
		if old != nil {
			ix.remove(old)
		}
		if new != nil {
			ix.add(new, id)
		}
	}
}

// buildUnique fills a new unique index from the collection's documents,
// failing on the first duplicate.
func (c *collection) buildUnique(ix *uniqueIndex) error {
	var err error
	c.docs.Scan(func(r *record) bool {
		if err = ix.conflict(c, r.raw, r.id); err != nil {
			return false
		}
		ix.add(r.raw, r.id)
		return true
	})
	return err
}
