package changeevent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// This file converts and encodes events by walking and appending raw BSON (bsoncore) instead of
// going through reflection: capture does both for every event, and the reflective path cost
// ~8 µs and 88 allocations per event, most of capture's CPU (BenchmarkConvert).

// FromChangeStream converts a raw change stream event, as the driver's ChangeStream.Current
// returns it, into an Event. The BSON of the document key, full document and updated fields is
// copied byte for byte, in one allocation. A null or missing fullDocument (a deleted document
// under updateLookup) becomes a nil FullDocument.
func FromChangeStream(raw bson.Raw) (Event, error) {
	// One copy of the whole event; every bson.Raw field points into it.
	return FromOwnedChangeStream(bson.Raw(append([]byte(nil), raw...)))
}

// FromOwnedChangeStream is FromChangeStream without the copy: the Event's document key, full
// document, updated fields and resume token point into own, which the caller hands over and
// must not modify afterwards (capture's reader copies each event out of the driver's buffer
// once, and converts that copy).
func FromOwnedChangeStream(own bson.Raw) (Event, error) {
	if err := validate(own); err != nil {
		return Event{}, fmt.Errorf("decode change stream event: %w", err)
	}
	ev := Event{Version: FormatVersion}
	var err error
	rest := bsoncore.Document(own)[4 : len(own)-1] // the elements, without length and terminator
	for len(rest) > 0 {
		el, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return Event{}, errors.New("decode change stream event: truncated element")
		}
		rest = r
		v := el.Value()
		switch string(el.KeyBytes()) {
		case "_id":
			doc, ok := v.DocumentOK()
			if !ok {
				return Event{}, errors.New("change stream event _id (resume token) is not a document")
			}
			ev.ResumeToken = bson.Raw(doc)
		case "operationType":
			s, ok := internedString(v)
			if !ok {
				return Event{}, errors.New("change stream event operationType is not a string")
			}
			ev.Operation = OperationType(s)
		case "ns":
			if ev.NS, err = namespace(v, "ns"); err != nil {
				return Event{}, err
			}
		case "to":
			to, err := namespace(v, "to")
			if err != nil {
				return Event{}, err
			}
			ev.To = &to
		case "documentKey":
			if doc, ok := v.DocumentOK(); ok {
				ev.DocumentKey = bson.Raw(doc)
			}
		case "fullDocument":
			if doc, ok := v.DocumentOK(); ok {
				ev.FullDocument = bson.Raw(doc)
			}
		case "updateDescription":
			doc, ok := v.DocumentOK()
			if !ok {
				return Event{}, errors.New("change stream event updateDescription is not a document")
			}
			if ev.UpdateDescription, err = updateDescription(doc); err != nil {
				return Event{}, err
			}
		case "clusterTime":
			t, i, ok := v.TimestampOK()
			if !ok {
				return Event{}, errors.New("change stream event clusterTime is not a timestamp")
			}
			ev.ClusterTime = primitive.Timestamp{T: t, I: i}
		case "wallTime":
			if ms, ok := v.DateTimeOK(); ok {
				ev.WallTime = time.UnixMilli(ms).UTC()
			}
		}
	}
	if len(ev.ResumeToken) == 0 {
		return Event{}, errors.New("change stream event has no resume token (_id)")
	}
	return ev, nil
}

func namespace(v bsoncore.Value, field string) (Namespace, error) {
	doc, ok := v.DocumentOK()
	if !ok {
		return Namespace{}, fmt.Errorf("change stream event %s is not a document", field)
	}
	var ns Namespace
	var seenDB, seenColl bool
	eachElement(doc, func(key []byte, v bsoncore.Value) bool { // one pass; the first of each wins, as Lookup's would
		switch string(key) {
		case "db":
			if s, ok := internedString(v); ok && !seenDB {
				ns.DB = s
			}
			seenDB = true
		case "coll":
			if s, ok := internedString(v); ok && !seenColl {
				ns.Coll = s
			}
			seenColl = true
		}
		return true
	})
	return ns, nil
}

func updateDescription(doc bsoncore.Document) (*UpdateDescription, error) {
	ud := &UpdateDescription{}
	if uf, ok := doc.Lookup("updatedFields").DocumentOK(); ok {
		ud.UpdatedFields = bson.Raw(uf)
	}
	if rf, ok := doc.Lookup("removedFields").ArrayOK(); ok {
		vals, err := rf.Values()
		if err != nil {
			return nil, fmt.Errorf("updateDescription.removedFields: %w", err)
		}
		for _, f := range vals {
			s, ok := f.StringValueOK()
			if !ok {
				return nil, errors.New("updateDescription.removedFields holds a non-string")
			}
			ud.RemovedFields = append(ud.RemovedFields, s)
		}
	}
	if ta, ok := doc.Lookup("truncatedArrays").ArrayOK(); ok {
		vals, err := ta.Values()
		if err != nil {
			return nil, fmt.Errorf("updateDescription.truncatedArrays: %w", err)
		}
		for _, t := range vals {
			d, ok := t.DocumentOK()
			if !ok {
				return nil, errors.New("updateDescription.truncatedArrays holds a non-document")
			}
			field, _ := d.Lookup("field").StringValueOK()
			size, ok := d.Lookup("newSize").AsInt64OK()
			if field == "" || !ok {
				return nil, errors.New("updateDescription.truncatedArrays entry needs field and newSize")
			}
			ud.TruncatedArrays = append(ud.TruncatedArrays, TruncatedArray{Field: field, NewSize: int32(size)})
		}
	}
	return ud, nil
}

// Marshal encodes the event as a message value. Field order and types are those of the Event
// struct's bson tags, so bson.Unmarshal (Unmarshal) reads it back.
func Marshal(e *Event) ([]byte, error) {
	size := 160 + len(e.DocumentKey) + len(e.FullDocument) + len(e.ResumeToken)
	if ud := e.UpdateDescription; ud != nil {
		size += len(ud.UpdatedFields) + 64
	}
	dst := make([]byte, 0, size)
	idx, dst := bsoncore.AppendDocumentStart(dst)
	dst = bsoncore.AppendInt32Element(dst, "v", e.Version)
	dst = bsoncore.AppendStringElement(dst, "op", string(e.Operation))
	dst = appendNamespace(dst, "ns", e.NS)
	if e.To != nil {
		dst = appendNamespace(dst, "to", *e.To)
	}
	if len(e.DocumentKey) > 0 {
		dst = bsoncore.AppendDocumentElement(dst, "documentKey", e.DocumentKey)
	}
	if len(e.FullDocument) > 0 {
		dst = bsoncore.AppendDocumentElement(dst, "fullDocument", e.FullDocument)
	}
	if ud := e.UpdateDescription; ud != nil {
		dst = appendUpdateDescription(dst, ud)
	}
	dst = bsoncore.AppendTimestampElement(dst, "clusterTime", e.ClusterTime.T, e.ClusterTime.I)
	if !e.WallTime.IsZero() {
		dst = bsoncore.AppendDateTimeElement(dst, "wallTime", e.WallTime.UnixMilli())
	}
	if len(e.ResumeToken) > 0 {
		dst = bsoncore.AppendDocumentElement(dst, "resumeToken", e.ResumeToken)
	} else {
		dst = bsoncore.AppendNullElement(dst, "resumeToken")
	}
	if c := e.ClaimCheck; c != nil {
		var cidx int32
		cidx, dst = bsoncore.AppendDocumentElementStart(dst, "claimCheck")
		dst = bsoncore.AppendStringElement(dst, "bucket", c.Bucket)
		dst = bsoncore.AppendStringElement(dst, "key", c.Key)
		dst = bsoncore.AppendInt64Element(dst, "size", c.Size)
		dst = bsoncore.AppendStringElement(dst, "sha256", c.SHA256)
		dst, _ = bsoncore.AppendDocumentEnd(dst, cidx)
	}
	dst, err := bsoncore.AppendDocumentEnd(dst, idx)
	if err != nil {
		return nil, fmt.Errorf("encode %s event on %s: %w", e.Operation, e.NS, err)
	}
	return dst, nil
}

func appendNamespace(dst []byte, key string, ns Namespace) []byte {
	idx, dst := bsoncore.AppendDocumentElementStart(dst, key)
	dst = bsoncore.AppendStringElement(dst, "db", ns.DB)
	if ns.Coll != "" {
		dst = bsoncore.AppendStringElement(dst, "coll", ns.Coll)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

func appendUpdateDescription(dst []byte, ud *UpdateDescription) []byte {
	idx, dst := bsoncore.AppendDocumentElementStart(dst, "updateDescription")
	if len(ud.UpdatedFields) > 0 {
		dst = bsoncore.AppendDocumentElement(dst, "updatedFields", ud.UpdatedFields)
	} else {
		dst = bsoncore.AppendNullElement(dst, "updatedFields")
	}
	if ud.RemovedFields != nil {
		var aidx int32
		aidx, dst = bsoncore.AppendArrayElementStart(dst, "removedFields")
		for i, f := range ud.RemovedFields {
			dst = bsoncore.AppendStringElement(dst, arrayKey(i), f)
		}
		dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	} else {
		dst = bsoncore.AppendNullElement(dst, "removedFields")
	}
	if len(ud.TruncatedArrays) > 0 {
		var aidx int32
		aidx, dst = bsoncore.AppendArrayElementStart(dst, "truncatedArrays")
		for i, t := range ud.TruncatedArrays {
			var tidx int32
			tidx, dst = bsoncore.AppendDocumentElementStart(dst, arrayKey(i))
			dst = bsoncore.AppendStringElement(dst, "field", t.Field)
			dst = bsoncore.AppendInt32Element(dst, "newSize", t.NewSize)
			dst, _ = bsoncore.AppendDocumentEnd(dst, tidx)
		}
		dst, _ = bsoncore.AppendArrayEnd(dst, aidx)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

var smallKeys = func() (k [64]string) {
	for i := range k {
		k[i] = fmt.Sprint(i)
	}
	return k
}()

func arrayKey(i int) string {
	if i < len(smallKeys) {
		return smallKeys[i]
	}
	return fmt.Sprint(i)
}

// decodeMessage decodes a validated message value laid out as Marshal writes it, walking its raw
// BSON. It reports false, and the caller falls back to the reflective decoder, on anything
// Marshal does not write: an unknown field, or a field of another BSON type than Marshal's
// (the reflective decoder converts some of those, and is the reference for them). Null is taken
// as the reflective decoder takes it: the field's zero value.
func decodeMessage(b []byte) (Event, bool) {
	var e Event
	var seen uint16 // the fields met: a repeated one is left to the reference decoder
	rest := b[4 : len(b)-1]
	for len(rest) > 0 {
		el, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return Event{}, false
		}
		rest = r
		v := el.Value()
		null := v.Type == bson.TypeNull
		key := el.KeyBytes()
		bit := uint16(1) << messageField(key)
		if seen&bit != 0 {
			return Event{}, false
		}
		seen |= bit
		switch string(key) {
		case "v":
			if e.Version, ok = v.Int32OK(); !ok && !null {
				return Event{}, false
			}
		case "op":
			s, ok := internedString(v)
			if !ok && !null {
				return Event{}, false
			}
			e.Operation = OperationType(s)
		case "ns":
			if !null {
				if e.NS, ok = decodeNamespace(v); !ok {
					return Event{}, false
				}
			}
		case "to":
			e.To = nil
			if !null {
				to, ok := decodeNamespace(v)
				if !ok {
					return Event{}, false
				}
				e.To = &to
			}
		case "documentKey":
			if e.DocumentKey, ok = rawDocument(v); !ok {
				return Event{}, false
			}
		case "fullDocument":
			if e.FullDocument, ok = rawDocument(v); !ok {
				return Event{}, false
			}
		case "resumeToken":
			if e.ResumeToken, ok = rawDocument(v); !ok {
				return Event{}, false
			}
		case "updateDescription":
			e.UpdateDescription = nil
			if !null {
				if e.UpdateDescription, ok = decodeUpdateDescription(v); !ok {
					return Event{}, false
				}
			}
		case "clusterTime":
			e.ClusterTime = primitive.Timestamp{}
			if !null {
				t, i, ok := v.TimestampOK()
				if !ok {
					return Event{}, false
				}
				e.ClusterTime = primitive.Timestamp{T: t, I: i}
			}
		case "wallTime":
			e.WallTime = time.Time{}
			if !null {
				ms, ok := v.DateTimeOK()
				if !ok {
					return Event{}, false
				}
				e.WallTime = time.UnixMilli(ms).UTC()
			}
		case "claimCheck":
			e.ClaimCheck = nil
			if !null {
				if e.ClaimCheck, ok = decodeClaimCheck(v); !ok {
					return Event{}, false
				}
			}
		default:
			return Event{}, false
		}
	}
	return e, true
}

// messageField numbers the message's fields (0 for an unknown one, which decodeMessage refuses).
func messageField(key []byte) uint {
	switch string(key) {
	case "v":
		return 1
	case "op":
		return 2
	case "ns":
		return 3
	case "to":
		return 4
	case "documentKey":
		return 5
	case "fullDocument":
		return 6
	case "resumeToken":
		return 7
	case "updateDescription":
		return 8
	case "clusterTime":
		return 9
	case "wallTime":
		return 10
	case "claimCheck":
		return 11
	}
	return 0
}

// rawDocument is an embedded document's bytes (nil for null), in place.
func rawDocument(v bsoncore.Value) (bson.Raw, bool) {
	if v.Type == bson.TypeNull {
		return nil, true
	}
	doc, ok := v.DocumentOK()
	return bson.Raw(doc), ok
}

// eachField calls fn for each element of the document v, stopping at the first false.
func eachField(v bsoncore.Value, fn func(key []byte, v bsoncore.Value) bool) bool {
	doc, ok := v.DocumentOK()
	if !ok {
		return false
	}
	return eachElement(doc, fn)
}

func eachElement(doc bsoncore.Document, fn func(key []byte, v bsoncore.Value) bool) bool {
	rest := doc[4 : len(doc)-1]
	for len(rest) > 0 {
		el, r, ok := bsoncore.ReadElement(rest)
		if !ok || !fn(el.KeyBytes(), el.Value()) {
			return false
		}
		rest = r
	}
	return true
}

func decodeNamespace(v bsoncore.Value) (Namespace, bool) {
	var ns Namespace
	ok := eachField(v, func(key []byte, v bsoncore.Value) bool {
		var dst *string
		switch string(key) {
		case "db":
			dst = &ns.DB
		case "coll":
			dst = &ns.Coll
		default:
			return false
		}
		s, ok := internedString(v)
		*dst = s
		return ok || v.Type == bson.TypeNull
	})
	return ns, ok
}

func decodeClaimCheck(v bsoncore.Value) (*ClaimCheck, bool) {
	c := &ClaimCheck{}
	ok := eachField(v, func(key []byte, v bsoncore.Value) bool {
		if string(key) == "size" {
			n, ok := v.Int64OK()
			c.Size = n
			return ok || v.Type == bson.TypeNull
		}
		var dst *string
		switch string(key) {
		case "bucket":
			dst = &c.Bucket
		case "key":
			dst = &c.Key
		case "sha256":
			dst = &c.SHA256
		default:
			return false
		}
		s, ok := v.StringValueOK()
		*dst = s
		return ok || v.Type == bson.TypeNull
	})
	return c, ok
}

func decodeUpdateDescription(v bsoncore.Value) (*UpdateDescription, bool) {
	ud := &UpdateDescription{}
	ok := eachField(v, func(key []byte, v bsoncore.Value) bool {
		null := v.Type == bson.TypeNull
		switch string(key) {
		case "updatedFields":
			var ok bool
			ud.UpdatedFields, ok = rawDocument(v)
			return ok
		case "removedFields":
			ud.RemovedFields = nil
			if null {
				return true
			}
			arr, ok := v.ArrayOK()
			if !ok {
				return false
			}
			ud.RemovedFields = []string{}
			return eachElement(bsoncore.Document(arr), func(_ []byte, f bsoncore.Value) bool {
				s, ok := f.StringValueOK()
				ud.RemovedFields = append(ud.RemovedFields, s)
				return ok
			})
		case "truncatedArrays":
			ud.TruncatedArrays = nil
			if null {
				return true
			}
			arr, ok := v.ArrayOK()
			if !ok {
				return false
			}
			ud.TruncatedArrays = []TruncatedArray{}
			return eachElement(bsoncore.Document(arr), func(_ []byte, t bsoncore.Value) bool {
				var ta TruncatedArray
				ok := eachField(t, func(key []byte, v bsoncore.Value) bool {
					switch string(key) {
					case "field":
						s, ok := v.StringValueOK()
						ta.Field = s
						return ok
					case "newSize":
						n, ok := v.Int32OK()
						ta.NewSize = n
						return ok
					}
					return false
				})
				ud.TruncatedArrays = append(ud.TruncatedArrays, ta)
				return ok
			})
		}
		return false
	})
	return ud, ok
}

// internedString is v.StringValueOK for the short strings that every event repeats (operation
// types, database and collection names), without an allocation once a string has been seen: they
// are kept in a table shared by all goroutines, of at most maxNames strings of maxNameLen bytes.
func internedString(v bsoncore.Value) (string, bool) {
	if v.Type != bson.TypeString || len(v.Data) < 5 {
		return v.StringValueOK()
	}
	n := int(int32(binary.LittleEndian.Uint32(v.Data))) // the string's bytes and its terminating null
	if n < 1 || n-1 > maxNameLen || 4+n > len(v.Data) {
		return v.StringValueOK()
	}
	b := v.Data[4 : 4+n-1]
	names.RLock()
	s, ok := names.m[string(b)]
	names.RUnlock()
	if ok {
		return s, true
	}
	s = string(b)
	names.Lock()
	if len(names.m) < maxNames {
		names.m[s] = s
	}
	names.Unlock()
	return s, true
}

const (
	maxNames   = 4096
	maxNameLen = 128
)

var names = struct {
	sync.RWMutex
	m map[string]string
}{m: map[string]string{}}
