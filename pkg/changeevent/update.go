package changeevent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// This file computes an update's post-image from its pre-image and its updateDescription, on raw
// BSON, the way MongoDB applies the same delta written as an update:
//
//	{$push: {<truncated>: {$each: [], $slice: <newSize>}}, $set: <updatedFields>, $unset: <removedFields>}
//
// apply sends exactly that delta to DR (pkg/apply), so DR's server and ApplyTo compute the same
// document; apply uses ApplyTo to know, without reading DR again, the version of a document at
// every event of a batch (docs/apply.md).

// maxArrayPad bounds how far a $set of an array index past its end may pad the array with
// nulls (MongoDB refuses to pad by more than 1,500,000 elements).
const maxArrayPad = 1_500_000

// ErrInapplicable is wrapped by every ApplyTo error: the update description cannot be applied to
// this document (a path through a scalar, a truncated field that is not an array, an ambiguous
// dotted path), which means the document is not the version the update was made to.
var ErrInapplicable = errors.New("update description does not apply to the document")

// ApplyTo returns the document that results from applying the update description to doc, as
// MongoDB applies the equivalent operator update:
//
//   - truncatedArrays first: each array is cut to newSize elements;
//   - then updatedFields in their order, as $set: a dotted path descends into embedded documents
//     and, through numeric segments, array elements; a field that exists keeps its position, a
//     new one is appended to its document (intermediate documents are created as needed, an array
//     index past the end pads the array with nulls);
//   - then removedFields, as $unset: a field is removed from its document, an array element is set
//     to null, a path that does not exist is ignored.
//
// Everything the description does not touch is copied byte for byte, so field order and every
// BSON type are kept. doc is not modified.
//
// An error (wrapping ErrInapplicable) means the description does not fit doc: a path runs through
// a value that is neither a document nor an array, uses a non-numeric or zero-padded segment as
// an array index, names a truncated field that is not an array, would change _id, addresses a
// $-prefixed field, or is ambiguous because a document on the way has a field whose own name
// contains a dot ("a.b" could then be that field or b inside a).
func (ud *UpdateDescription) ApplyTo(doc bson.Raw) (bson.Raw, error) {
	root, err := openContainer(bsoncore.Value{Type: bson.TypeEmbeddedDocument, Data: doc})
	if err != nil {
		return nil, fmt.Errorf("%w: document: %v", ErrInapplicable, err)
	}
	root.root = true
	for _, t := range ud.TruncatedArrays {
		if err := root.truncate(splitPath(t.Field), int(t.NewSize)); err != nil {
			return nil, fmt.Errorf("%w: truncatedArrays %q: %v", ErrInapplicable, t.Field, err)
		}
	}
	if len(ud.UpdatedFields) > 0 {
		elems, err := bsoncore.Document(ud.UpdatedFields).Elements()
		if err != nil {
			return nil, fmt.Errorf("%w: updatedFields: %v", ErrInapplicable, err)
		}
		for _, el := range elems {
			path := el.Key()
			if err := checkDepth(splitPath(path)); err != nil {
				return nil, fmt.Errorf("%w: updatedFields %q: %v", ErrInapplicable, path, err)
			}
			if err := root.set(splitPath(path), el.Value()); err != nil {
				return nil, fmt.Errorf("%w: updatedFields %q: %v", ErrInapplicable, path, err)
			}
		}
	}
	for _, path := range ud.RemovedFields {
		if err := root.unset(splitPath(path)); err != nil {
			return nil, fmt.Errorf("%w: removedFields %q: %v", ErrInapplicable, path, err)
		}
	}
	out, err := root.appendTo(make([]byte, 0, len(doc)+len(ud.UpdatedFields)))
	if err != nil {
		return nil, fmt.Errorf("encode post-image: %w", err)
	}
	return out, nil
}

func splitPath(p string) []string { return strings.Split(p, ".") }

// checkDepth refuses a path deeper than a document may nest (MongoDB's 100 levels).
func checkDepth(path []string) error {
	if len(path) > maxDepth {
		return fmt.Errorf("path of %d segments is deeper than %d levels", len(path), maxDepth)
	}
	return nil
}

// container is an embedded document or array opened for changes. Elements that are not changed
// keep their raw value; those on a changed path are opened in turn (sub).
type container struct {
	array bool
	root  bool // the top-level document, whose _id no update may change
	elems []element
}

type element struct {
	key string         // field name; unused in an array, whose keys are rewritten as indexes
	val bsoncore.Value // the value, unless sub is set
	sub *container     // the value, opened for changes
}

var nullValue = bsoncore.Value{Type: bson.TypeNull}

func openContainer(v bsoncore.Value) (*container, error) {
	c := &container{array: v.Type == bson.TypeArray}
	if v.Type != bson.TypeEmbeddedDocument && v.Type != bson.TypeArray {
		return nil, fmt.Errorf("%s is not a document or an array", v.Type)
	}
	elems, err := bsoncore.Document(v.Data).Elements()
	if err != nil {
		return nil, err
	}
	c.elems = make([]element, len(elems))
	for i, el := range elems {
		c.elems[i] = element{key: el.Key(), val: el.Value()}
	}
	return c, nil
}

func isContainer(t bsontype.Type) bool {
	return t == bson.TypeEmbeddedDocument || t == bson.TypeArray
}

// arrayIndex reads a path segment as an array index: a decimal number without sign or leading
// zero.
func arrayIndex(seg string) (int, bool) {
	if seg == "" || (len(seg) > 1 && seg[0] == '0') {
		return 0, false
	}
	for _, r := range seg {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(seg)
	return n, err == nil
}

// checkSegment refuses what a $set or $unset path cannot name in a document: an empty segment, a
// $-prefixed field, and a segment that a dotted field name of this document makes ambiguous.
func (c *container) checkSegment(rest []string) error {
	seg := rest[0]
	if seg == "" {
		return errors.New("empty path segment")
	}
	if strings.HasPrefix(seg, "$") {
		return fmt.Errorf("segment %q is $-prefixed", seg)
	}
	if c.array {
		return nil
	}
	joined := strings.Join(rest, ".")
	for _, e := range c.elems {
		if strings.Contains(e.key, ".") && (joined == e.key || strings.HasPrefix(joined, e.key+".")) {
			return fmt.Errorf("ambiguous: the document has a field named %q", e.key)
		}
	}
	return nil
}

// find returns the element a segment names, or nil.
func (c *container) find(seg string) (*element, error) {
	if c.array {
		i, ok := arrayIndex(seg)
		if !ok {
			return nil, fmt.Errorf("segment %q is not an array index", seg)
		}
		if i >= len(c.elems) {
			return nil, nil
		}
		return &c.elems[i], nil
	}
	for i := range c.elems {
		if c.elems[i].key == seg {
			return &c.elems[i], nil
		}
	}
	return nil, nil
}

// open returns the element's value opened for changes, or an error when it is not a container.
func (e *element) open() (*container, error) {
	if e.sub == nil {
		if !isContainer(e.val.Type) {
			return nil, fmt.Errorf("cannot descend into field %q of type %s", e.key, e.val.Type)
		}
		sub, err := openContainer(e.val)
		if err != nil {
			return nil, err
		}
		e.sub = sub
	}
	return e.sub, nil
}

// set is $set of the path rest (split at dots, relative to c) to v.
func (c *container) set(rest []string, v bsoncore.Value) error {
	if err := c.checkSegment(rest); err != nil {
		return err
	}
	seg := rest[0]
	if c.root && seg == "_id" {
		if old, _ := c.find(seg); len(rest) > 1 || old == nil || old.sub != nil || !old.val.Equal(v) {
			return errors.New("would change _id")
		}
		return nil // setting _id to the value it has changes nothing
	}
	e, err := c.find(seg)
	if err != nil {
		return err
	}
	if e == nil { // a new field or array element
		if c.array {
			i, _ := arrayIndex(seg)
			if i-len(c.elems) > maxArrayPad {
				return fmt.Errorf("index %d would pad the array by more than %d elements", i, maxArrayPad)
			}
			for len(c.elems) < i {
				c.elems = append(c.elems, element{val: nullValue})
			}
		}
		c.elems = append(c.elems, element{key: seg})
		e = &c.elems[len(c.elems)-1]
		if len(rest) > 1 {
			e.sub = &container{} // intermediate documents are created (never arrays)
		}
	}
	if len(rest) == 1 {
		e.val, e.sub = v, nil
		return nil
	}
	sub, err := e.open()
	if err != nil {
		return err
	}
	return sub.set(rest[1:], v)
}

// unset is $unset of the path rest.
func (c *container) unset(rest []string) error {
	if err := c.checkSegment(rest); err != nil {
		return err
	}
	if c.root && rest[0] == "_id" {
		return errors.New("would remove _id")
	}
	var e *element
	if c.array {
		i, ok := arrayIndex(rest[0])
		if !ok || i >= len(c.elems) {
			return nil // $unset of a path that does not exist does nothing
		}
		e = &c.elems[i]
	} else {
		found, _ := c.find(rest[0])
		if found == nil {
			return nil
		}
		e = found
	}
	if len(rest) == 1 {
		if c.array {
			e.val, e.sub = nullValue, nil // an array element is set to null, never removed
			return nil
		}
		for i := range c.elems {
			if &c.elems[i] == e {
				c.elems = append(c.elems[:i], c.elems[i+1:]...)
				break
			}
		}
		return nil
	}
	if e.sub == nil && !isContainer(e.val.Type) {
		return nil
	}
	sub, err := e.open()
	if err != nil {
		return err
	}
	return sub.unset(rest[1:])
}

// truncate cuts the array at the path rest to n elements.
func (c *container) truncate(rest []string, n int) error {
	if n < 0 {
		return fmt.Errorf("negative newSize %d", n)
	}
	cur := c
	for i, seg := range rest {
		if err := cur.checkSegment(rest[i:]); err != nil {
			return err
		}
		if cur.root && seg == "_id" {
			return errors.New("would change _id")
		}
		e, err := cur.find(seg)
		if err != nil {
			return err
		}
		if e == nil {
			return errors.New("no such field")
		}
		if cur, err = e.open(); err != nil {
			return err
		}
	}
	if !cur.array {
		return errors.New("not an array")
	}
	if n < len(cur.elems) {
		cur.elems = cur.elems[:n]
	}
	return nil
}

// appendTo appends the container as a BSON document (arrays get their index keys).
func (c *container) appendTo(dst []byte) ([]byte, error) {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	var err error
	for i, e := range c.elems {
		key := e.key
		if c.array {
			key = strconv.Itoa(i)
		}
		if e.sub == nil {
			dst = bsoncore.AppendValueElement(dst, key, e.val)
			continue
		}
		t := bson.TypeEmbeddedDocument
		if e.sub.array {
			t = bson.TypeArray
		}
		dst = bsoncore.AppendHeader(dst, t, key)
		if dst, err = e.sub.appendTo(dst); err != nil {
			return nil, err
		}
	}
	return bsoncore.AppendDocumentEnd(dst, idx)
}
