package changeevent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// maxDepth bounds the nesting of a stored document, as MongoDB does (100 levels).
const maxDepth = 100

// eventWrapping is how deep inside an event or a message a stored document's fields can sit:
// event → updateDescription → updatedFields → the updated field's value. validate allows a
// document that the server stores at full depth to arrive inside its event.
const eventWrapping = 3

// validate checks that b is exactly one well-formed BSON document, every embedded document and
// array included. Messages come from Kafka and events from the server: neither is trusted to be
// well formed, and the driver's own Validate checks only the top level while its decoder and
// bsoncore.ReadElement index with unchecked nested lengths (found by FuzzUnmarshal). So every
// length-prefixed value's length is checked here before anything reads it.
func validate(b []byte) (err error) {
	defer func() {
		// Last line of defence for driver code called below; the checks should make it unused.
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed BSON: %v", r)
		}
	}()
	return validateDoc(b, 0)
}

func validateDoc(b []byte, depth int) error {
	if depth > maxDepth+eventWrapping {
		return errTooDeep
	}
	if len(b) < 5 {
		return fmt.Errorf("document of %d bytes is shorter than the 5-byte minimum", len(b))
	}
	if n := int64(int32(binary.LittleEndian.Uint32(b))); n != int64(len(b)) {
		return fmt.Errorf("document length %d does not match its %d bytes", n, len(b))
	}
	if b[len(b)-1] != 0 {
		return errors.New("document does not end with a null byte")
	}
	rest := b[4 : len(b)-1]
	for len(rest) > 0 {
		t := bsontype.Type(rest[0])
		end := bytes.IndexByte(rest[1:], 0)
		if end < 0 {
			return errors.New("element name is not terminated")
		}
		key := rest[1 : 1+end] // converted to a string only for an error
		val := rest[1+end+1:]
		if err := checkLengthPrefix(t, val); err != nil {
			return fmt.Errorf("field %q: %w", key, err)
		}
		// ReadValue, not ReadElement: the name was just scanned, and is not scanned again.
		v, r, ok := bsoncore.ReadValue(val, t)
		if !ok {
			return fmt.Errorf("field %q: truncated or unknown type 0x%02x", key, byte(t))
		}
		rest = r
		switch t {
		case bson.TypeEmbeddedDocument, bson.TypeArray:
			if err := validateDoc(v.Data, depth+1); err != nil {
				return fmt.Errorf("field %q: %w", key, err)
			}
		case bson.TypeCodeWithScope:
			_, scope, ok := v.CodeWithScopeOK()
			if !ok {
				return fmt.Errorf("field %q: malformed code with scope", key)
			}
			if err := validateDoc(scope, depth+1); err != nil {
				return fmt.Errorf("field %q scope: %w", key, err)
			}
		}
		// Any other value is whole: ReadValue sliced it by its own length (bsoncore's
		// Value.Validate would only slice it again).
	}
	return nil
}

// errTooDeep is a document nested deeper than any server stores.
var errTooDeep = fmt.Errorf("documents nested deeper than %d levels", maxDepth)

// checkLengthPrefix checks the int32 length that starts a value of type t (documents, arrays,
// strings, binary...) is within the bytes that are there, before bsoncore slices by it.
func checkLengthPrefix(t bsontype.Type, val []byte) error {
	var min int64
	switch t {
	case bson.TypeEmbeddedDocument, bson.TypeArray:
		min = 5
	case bson.TypeCodeWithScope:
		min = 14
	case bson.TypeString, bson.TypeJavaScript, bson.TypeSymbol, bson.TypeDBPointer:
		min = 1
	case bson.TypeBinary:
		min = 0
	default:
		return nil
	}
	if len(val) < 4 {
		return errors.New("value is truncated")
	}
	n := int64(int32(binary.LittleEndian.Uint32(val)))
	if n < min || n > int64(len(val)) {
		return fmt.Errorf("length %d is out of range", n)
	}
	switch t {
	case bson.TypeString, bson.TypeJavaScript, bson.TypeSymbol, bson.TypeDBPointer:
		// n counts the string's bytes and its terminating null, after the 4-byte length.
		if 4+n > int64(len(val)) || val[4+n-1] != 0 {
			return errors.New("string is not null-terminated")
		}
	case bson.TypeCodeWithScope:
		// total length, then a string (length, bytes, null), then the scope document.
		return checkLengthPrefix(bson.TypeString, val[4:n])
	}
	return nil
}
