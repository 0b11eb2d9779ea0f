package mongoserver

import (
	"bytes"
	"iter"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// What a server refuses to store, by the flavour and version it plays. A
// document can be accepted by one server and refused by another (MongoDB 5.0
// accepts a top-level "$price" on insert, DocumentDB 4.0 refuses it), and the
// pipeline must survive exactly that, so the embedded servers refuse what the
// real ones refuse, with their error codes and messages.
//
// Nesting (every flavour). The MongoDB manual's limit is 100 levels: the
// top-level document is level 1 and every non-empty embedded document or array
// adds one (empty ones do not count, as in mongod's validateDepth). Deeper
// documents are refused with Overflow (15). mongod itself enforces
// maxBSONDepth-20, 180 by default, so here the embedded server is the stricter
// one, which is the safe side for a stand-in.
//
// Field names, by the rules of the wire version the server reports:
//
//   - MongoDB before 5.0 (wire < 13; the 4.0 manual's "Restrictions on Field
//     Names"): an insert refuses a top-level name that starts with "$" (BadValue,
//     "Document can't have $ prefixed field names"); a document written by an
//     update (a replacement, an operator update, the document an upsert
//     creates) may hold no "$"-prefixed name at any level except the DBRef
//     fields $ref, $id, $db in that order (DollarPrefixedFieldName, 52, "... is
//     not valid for storage."). Dotted names are stored.
//   - Amazon DocumentDB 4.0 (DocumentDB mode, wire < 13; the developer guide's
//     functional differences): no stored document may hold a "$"-prefixed name
//     (DBRef fields excepted) or a name containing "." at any level. The guide
//     names the restriction, not the reply, so the codes and messages are
//     MongoDB's: BadValue for a top-level "$" name in an insert,
//     DollarPrefixedFieldName otherwise, DottedFieldName (57) for a dot.
//   - MongoDB 5.0 and later (wire >= 13; the manual's "Field Names with Periods
//     and Dollar Signs"): inserts, and the document an upsert creates, may hold
//     "$"-prefixed and dotted names at any level. A replacement of an existing
//     document, and an operator update of one, refuse a top-level
//     "$"-prefixed name (DBRef fields excepted) with DollarPrefixedFieldName
//     and the 5.0 message that points at $replaceWith.
//
// An operator update is checked on the paths it sets only, as mongod validates
// the modified elements and not the untouched rest of the document.

// maxNestingDepth is the deepest a stored document may be, in levels.
const maxNestingDepth = 100

// storeOp is what kind of write asks to store a document; the field-name
// rules differ between them.
type storeOp int

const (
	storeInsert  storeOp = iota // the insert command
	storeUpsert                 // the document an upsert creates when nothing matched
	storeReplace                // a replacement of an existing document
	storeModify                 // an operator update of an existing document
)

// nameRules selects one of the rule sets above.
type nameRules int

const (
	namesMongoDB40 nameRules = iota
	namesDocumentDB40
	namesMongoDB50
)

func (o Options) nameRules() nameRules {
	switch {
	case o.WireVersion >= 13:
		return namesMongoDB50
	case o.DocumentDB:
		return namesDocumentDB40
	default:
		return namesMongoDB40
	}
}

// checkStorable returns the error the server answers when asked to store doc
// by op, or nil. For storeModify, changed lists the paths the update set (an
// update that only removes fields passes nil); the names on those paths and
// inside their values are checked, and the depth of the whole document.
func (o Options) checkStorable(doc bsoncore.Document, op storeOp, changed []string) error {
	if err := checkDepth(doc, op); err != nil {
		return err
	}
	c := nameCheck{rules: o.nameRules(), op: op}
	if op != storeModify {
		return c.doc(doc, 1, "")
	}
	for _, p := range changed {
		if err := c.path(doc, p); err != nil {
			return err
		}
	}
	return nil
}

// checkUpdatePaths refuses an operator update whose paths name a
// "$"-prefixed field ("$set: {$hotel: 1}", "a.$x"), before the update runs:
// mongokit would read such a segment as a positional operator. The rules are
// those above; where MongoDB 5.0 stores such a field (a nested one, or any
// in an upsert's new document) this server cannot build the document and says
// so rather than store something else.
func (o Options) checkUpdatePaths(ops bson.D, op storeOp) error {
	c := nameCheck{rules: o.nameRules(), op: op}
	for _, operator := range ops {
		fields, _ := operator.Value.(bson.D)
		for _, f := range fields {
			for i, seg := range strings.Split(f.Key, ".") {
				if !strings.HasPrefix(seg, "$") || isPositional(seg) {
					continue
				}
				if c.refusesDollar(i + 1) {
					return c.dollarError(seg, strings.Join(strings.Split(f.Key, ".")[:i+1], "."))
				}
				return errf(codeIllegalOperation, "updating the \"$\"-prefixed field %q in %q is not supported by this server", seg, f.Key)
			}
		}
	}
	return nil
}

// isPositional reports whether a path segment is an update's positional
// operator: "$", "$[]" or "$[<identifier>]".
func isPositional(seg string) bool {
	return seg == "$" || (strings.HasPrefix(seg, "$[") && strings.HasSuffix(seg, "]"))
}

// checkDepth refuses a document nested deeper than maxNestingDepth. It stops
// descending at the limit, so a hostile document cannot make it recurse far.
func checkDepth(doc bsoncore.Document, op storeOp) error {
	if !withinDepth(doc, 1) {
		if op == storeInsert {
			return errf(codeOverflow, "cannot insert document because it exceeds %d levels of nesting", maxNestingDepth)
		}
		return errf(codeOverflow, "Document exceeds maximum nesting depth of %d", maxNestingDepth)
	}
	return nil
}

// elementsOf yields the elements of the document or array body d in order,
// with their positions, read in place (the storage checks run on every
// document stored). It stops at a malformed element: malformed input is
// refused elsewhere.
func elementsOf(d bsoncore.Document) iter.Seq2[int, bsoncore.Element] {
	return func(yield func(int, bsoncore.Element) bool) {
		if len(d) < 5 {
			return
		}
		rest := d[4 : len(d)-1]
		for i := 0; len(rest) > 0; i++ {
			el, r, ok := bsoncore.ReadElement(rest)
			if !ok || !yield(i, el) {
				return
			}
			rest = r
		}
	}
}

// holdsFields reports whether el is a document or an array.
func holdsFields(el bsoncore.Element) bool {
	t := bsontype.Type(el[0])
	return t == bson.TypeEmbeddedDocument || t == bson.TypeArray
}

// withinDepth reports whether the document or array body b, standing at
// level, nests no deeper than maxNestingDepth.
func withinDepth(b bsoncore.Document, level int) bool {
	for _, el := range elementsOf(b) {
		if !holdsFields(el) {
			continue
		}
		sub := bsoncore.Document(el.Value().Data)
		if len(sub) <= 5 { // empty documents and arrays add no level
			continue
		}
		if level == maxNestingDepth || !withinDepth(sub, level+1) {
			return false
		}
	}
	return true
}

// nameCheck walks a document applying one rule set to one kind of write.
type nameCheck struct {
	rules nameRules
	op    storeOp
}

// doc checks every field of d, which stands at level (1 is the top level);
// path is d's own path, for messages. A document with a name that a rule may
// refuse ($-prefixed, or dotted under DocumentDB's) goes to docNames, which
// checks it field by field in order; the others build a path only to descend.
func (c nameCheck) doc(d bsoncore.Document, level int, path string) error {
	for _, el := range elementsOf(d) {
		key := el.KeyBytes()
		if (len(key) > 0 && key[0] == '$') || (c.rules == namesDocumentDB40 && bytes.IndexByte(key, '.') >= 0) {
			return c.docNames(d, level, path)
		}
		if holdsFields(el) {
			if err := c.value(el.Value(), level, join(path, string(key))); err != nil {
				return err
			}
		}
	}
	return nil
}

// docNames is doc for a document holding a name that a rule may refuse.
func (c nameCheck) docNames(d bsoncore.Document, level int, path string) error {
	elems, err := d.Elements()
	if err != nil {
		return nil // malformed input is refused elsewhere
	}
	for i, e := range elems {
		full := join(path, e.Key())
		if err := c.name(elems, i, level, full); err != nil {
			return err
		}
		if err := c.value(e.Value(), level, full); err != nil {
			return err
		}
	}
	return nil
}

// value checks the names inside v, a field at level.
func (c nameCheck) value(v bsoncore.Value, level int, path string) error {
	switch v.Type {
	case bson.TypeEmbeddedDocument:
		return c.doc(v.Document(), level+1, path)
	case bson.TypeArray:
		// Element names are indexes; only what the elements hold is checked
		// (a scalar holds no names).
		for i, el := range elementsOf(bsoncore.Document(v.Data)) {
			if !holdsFields(el) {
				continue
			}
			if err := c.value(el.Value(), level+1, join(path, strconv.Itoa(i))); err != nil {
				return err
			}
		}
	}
	return nil
}

// path checks the names along one dotted path of doc and inside the value it
// leads to. A path that is not in doc (a removed field) has nothing to check.
func (c nameCheck) path(doc bsoncore.Document, path string) error {
	cur := bsoncore.Value{Type: bson.TypeEmbeddedDocument, Data: doc}
	full := ""
	segs := strings.Split(path, ".")
	for i, seg := range segs {
		switch cur.Type {
		case bson.TypeEmbeddedDocument:
			elems, err := cur.Document().Elements()
			if err != nil {
				return nil
			}
			at := -1
			for j, e := range elems {
				if e.Key() == seg {
					at = j
					break
				}
			}
			if at < 0 {
				return nil
			}
			full = join(full, seg)
			if err := c.name(elems, at, i+1, full); err != nil {
				return err
			}
			cur = elems[at].Value()
		case bson.TypeArray:
			n, err := strconv.Atoi(seg)
			vals, verr := cur.Array().Values()
			if err != nil || verr != nil || n < 0 || n >= len(vals) {
				return nil
			}
			full = join(full, seg)
			cur = vals[n]
		default:
			return nil
		}
	}
	return c.value(cur, len(segs), full)
}

// name checks the field elems[i], at level, whose full path is path.
func (c nameCheck) name(elems []bsoncore.Element, i, level int, path string) error {
	key := elems[i].Key()
	if c.rules == namesDocumentDB40 && strings.Contains(key, ".") {
		return errf(codeDottedFieldName, "The dotted field '%s' in '%s' is not valid for storage.", key, path)
	}
	if !strings.HasPrefix(key, "$") || !c.refusesDollar(level) {
		return nil
	}
	if c.op == storeInsert && level == 1 && c.rules != namesMongoDB50 {
		// fixDocumentForInsert: no DBRef exception at the top level of an insert.
		return errf(codeBadValue, "Document can't have $ prefixed field names: %s", key)
	}
	if ok, err := dbRefField(elems, i); ok || err != nil {
		return err
	}
	return c.dollarError(key, path)
}

// refusesDollar reports whether a "$"-prefixed name at level is refused.
func (c nameCheck) refusesDollar(level int) bool {
	switch c.rules {
	case namesMongoDB50:
		return level == 1 && (c.op == storeReplace || c.op == storeModify)
	case namesMongoDB40:
		return c.op != storeInsert || level == 1
	default:
		return true
	}
}

// dollarError is the refusal of a "$"-prefixed name written by an update.
func (c nameCheck) dollarError(key, path string) *cmdError {
	if c.rules == namesMongoDB50 {
		return errf(codeDollarPrefixedFieldName, "The dollar ($) prefixed field '%s' in '%s' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith.", key, path)
	}
	return errf(codeDollarPrefixedFieldName, "The dollar ($) prefixed field '%s' in '%s' is not valid for storage.", key, path)
}

// dbRefField reports whether elems[i] is a field of a DBRef in the order
// MongoDB requires ($ref string, $id, optional $db string), and returns
// InvalidDBRef (55) for a DBRef field out of that order.
func dbRefField(elems []bsoncore.Element, i int) (bool, error) {
	key := func(j int) string {
		if j < 0 || j >= len(elems) {
			return ""
		}
		return elems[j].Key()
	}
	switch key(i) {
	case "$db":
		if elems[i].Value().Type != bson.TypeString {
			return false, errf(codeInvalidDBRef, "The DBRef $db field must be a String, not a %s", typeName(elems[i].Value().Type))
		}
		if key(i-1) != "$id" {
			return false, errf(codeInvalidDBRef, "Found $db field without a $id before it, which is invalid.")
		}
		return dbRefField(elems, i-1)
	case "$id":
		if key(i-1) != "$ref" {
			return false, errf(codeInvalidDBRef, "Found $id field without a $ref before it, which is invalid.")
		}
		return dbRefField(elems, i-1)
	case "$ref":
		if elems[i].Value().Type != bson.TypeString {
			return false, errf(codeInvalidDBRef, "The DBRef $ref field must be a String, not a %s", typeName(elems[i].Value().Type))
		}
		if key(i+1) != "$id" {
			return false, errf(codeInvalidDBRef, "The DBRef $ref field must be followed by a $id field")
		}
		return true, nil
	}
	return false, nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// typeName is the server's name for a BSON type, as in its messages ("int", "objectId").
func typeName(t bsontype.Type) string {
	names := map[bsontype.Type]string{
		bson.TypeDouble: "double", bson.TypeString: "string", bson.TypeEmbeddedDocument: "object",
		bson.TypeArray: "array", bson.TypeBinary: "binData", bson.TypeUndefined: "undefined",
		bson.TypeObjectID: "objectId", bson.TypeBoolean: "bool", bson.TypeDateTime: "date",
		bson.TypeNull: "null", bson.TypeRegex: "regex", bson.TypeDBPointer: "dbPointer",
		bson.TypeJavaScript: "javascript", bson.TypeSymbol: "symbol",
		bson.TypeCodeWithScope: "javascriptWithScope", bson.TypeInt32: "int",
		bson.TypeTimestamp: "timestamp", bson.TypeInt64: "long", bson.TypeDecimal128: "decimal",
		bson.TypeMinKey: "minKey", bson.TypeMaxKey: "maxKey",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return t.String()
}
