package changeevent

import (
	"errors"
	"fmt"
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
	if err := validate(raw); err != nil {
		return Event{}, fmt.Errorf("decode change stream event: %w", err)
	}
	// One copy of the whole event; every bson.Raw field below points into it.
	own := bson.Raw(append([]byte(nil), raw...))
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
		switch el.Key() {
		case "_id":
			doc, ok := v.DocumentOK()
			if !ok {
				return Event{}, errors.New("change stream event _id (resume token) is not a document")
			}
			ev.ResumeToken = bson.Raw(doc)
		case "operationType":
			s, ok := v.StringValueOK()
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
	if s, ok := doc.Lookup("db").StringValueOK(); ok {
		ns.DB = s
	}
	if s, ok := doc.Lookup("coll").StringValueOK(); ok {
		ns.Coll = s
	}
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
