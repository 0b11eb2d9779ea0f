package mongoserver

import (
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// Documents live in the store as raw BSON (bsoncore.Document): compact, and
// copied to the wire without re-encoding. Query matching, updates, sorting and
// projection go through lungo's mongokit, which works on bson.D trees; this
// file converts between the two forms without reflection, which is several
// times faster than bson.Unmarshal/Marshal on the hot paths.

// toD decodes raw BSON into a bson.D whose nested documents are bson.D and
// arrays bson.A, the shapes mongokit expects. Binary payloads alias raw, which
// is safe because stored documents are never mutated in place.
func toD(raw bsoncore.Document) (bson.D, error) {
	elems, err := raw.Elements()
	if err != nil {
		return nil, fmt.Errorf("decode document: %w", err)
	}
	d := make(bson.D, 0, len(elems))
	for _, e := range elems {
		v, err := toValue(e.Value())
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", e.Key(), err)
		}
		d = append(d, bson.E{Key: e.Key(), Value: v})
	}
	return d, nil
}

// mustD is toD for documents already validated on the way in.
func mustD(raw bsoncore.Document) bson.D {
	d, err := toD(raw)
	if err != nil {
		panic(err)
	}
	return d
}

// toValue decodes one BSON value into its bson.D-tree Go form.
func toValue(v bsoncore.Value) (interface{}, error) {
	switch v.Type {
	case bson.TypeDouble:
		return v.Double(), nil
	case bson.TypeString:
		return v.StringValue(), nil
	case bson.TypeEmbeddedDocument:
		return toD(v.Document())
	case bson.TypeArray:
		vals, err := v.Array().Values()
		if err != nil {
			return nil, err
		}
		a := make(bson.A, 0, len(vals))
		for _, item := range vals {
			x, err := toValue(item)
			if err != nil {
				return nil, err
			}
			a = append(a, x)
		}
		return a, nil
	case bson.TypeBinary:
		st, data := v.Binary()
		return primitive.Binary{Subtype: st, Data: data}, nil
	case bson.TypeUndefined:
		return primitive.Undefined{}, nil
	case bson.TypeObjectID:
		return v.ObjectID(), nil
	case bson.TypeBoolean:
		return v.Boolean(), nil
	case bson.TypeDateTime:
		return primitive.DateTime(v.DateTime()), nil
	case bson.TypeNull:
		return nil, nil
	case bson.TypeRegex:
		p, o := v.Regex()
		return primitive.Regex{Pattern: p, Options: o}, nil
	case bson.TypeDBPointer:
		ns, oid := v.DBPointer()
		return primitive.DBPointer{DB: ns, Pointer: oid}, nil
	case bson.TypeJavaScript:
		return primitive.JavaScript(v.JavaScript()), nil
	case bson.TypeSymbol:
		return primitive.Symbol(v.Symbol()), nil
	case bson.TypeCodeWithScope:
		code, scope := v.CodeWithScope()
		sd, err := toD(scope)
		if err != nil {
			return nil, err
		}
		return primitive.CodeWithScope{Code: primitive.JavaScript(code), Scope: sd}, nil
	case bson.TypeInt32:
		return v.Int32(), nil
	case bson.TypeTimestamp:
		t, i := v.Timestamp()
		return primitive.Timestamp{T: t, I: i}, nil
	case bson.TypeInt64:
		return v.Int64(), nil
	case bson.TypeDecimal128:
		return v.Decimal128(), nil
	case bson.TypeMinKey:
		return primitive.MinKey{}, nil
	case bson.TypeMaxKey:
		return primitive.MaxKey{}, nil
	default:
		return nil, fmt.Errorf("unknown BSON type %#x", byte(v.Type))
	}
}

// fromD encodes a bson.D tree as raw BSON.
func fromD(d bson.D) (bsoncore.Document, error) {
	return appendD(make([]byte, 0, 128), d)
}

// appendD appends d as a BSON document to dst.
func appendD(dst []byte, d bson.D) ([]byte, error) {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	var err error
	for _, e := range d {
		if dst, err = appendValueElement(dst, e.Key, e.Value); err != nil {
			return nil, fmt.Errorf("field %q: %w", e.Key, err)
		}
	}
	return bsoncore.AppendDocumentEnd(dst, idx)
}

// appendValueElement appends key: v, covering the types that toD and
// mongokit produce directly and falling back to the driver's encoder for any
// other Go value.
func appendValueElement(dst []byte, key string, v interface{}) ([]byte, error) {
	switch x := v.(type) {
	case nil, primitive.Null:
		return bsoncore.AppendNullElement(dst, key), nil
	case float64:
		return bsoncore.AppendDoubleElement(dst, key, x), nil
	case string:
		return bsoncore.AppendStringElement(dst, key, x), nil
	case bson.D:
		dst = bsoncore.AppendHeader(dst, bson.TypeEmbeddedDocument, key)
		return appendD(dst, x)
	case *bson.D:
		dst = bsoncore.AppendHeader(dst, bson.TypeEmbeddedDocument, key)
		return appendD(dst, *x)
	case bson.A:
		dst = bsoncore.AppendHeader(dst, bson.TypeArray, key)
		idx, out := bsoncore.AppendArrayStart(dst)
		var err error
		for i, item := range x {
			if out, err = appendValueElement(out, itoa(i), item); err != nil {
				return nil, err
			}
		}
		return bsoncore.AppendArrayEnd(out, idx)
	case primitive.Binary:
		return bsoncore.AppendBinaryElement(dst, key, x.Subtype, x.Data), nil
	case primitive.Undefined:
		return bsoncore.AppendUndefinedElement(dst, key), nil
	case primitive.ObjectID:
		return bsoncore.AppendObjectIDElement(dst, key, x), nil
	case bool:
		return bsoncore.AppendBooleanElement(dst, key, x), nil
	case primitive.DateTime:
		return bsoncore.AppendDateTimeElement(dst, key, int64(x)), nil
	case time.Time:
		return bsoncore.AppendDateTimeElement(dst, key, int64(primitive.NewDateTimeFromTime(x))), nil
	case primitive.Regex:
		return bsoncore.AppendRegexElement(dst, key, x.Pattern, x.Options), nil
	case primitive.JavaScript:
		return bsoncore.AppendJavaScriptElement(dst, key, string(x)), nil
	case primitive.Symbol:
		return bsoncore.AppendSymbolElement(dst, key, string(x)), nil
	case int32:
		return bsoncore.AppendInt32Element(dst, key, x), nil
	case int:
		return bsoncore.AppendInt64Element(dst, key, int64(x)), nil
	case int64:
		return bsoncore.AppendInt64Element(dst, key, x), nil
	case primitive.Timestamp:
		return bsoncore.AppendTimestampElement(dst, key, x.T, x.I), nil
	case primitive.Decimal128:
		return bsoncore.AppendDecimal128Element(dst, key, x), nil
	case primitive.MinKey:
		return bsoncore.AppendMinKeyElement(dst, key), nil
	case primitive.MaxKey:
		return bsoncore.AppendMaxKeyElement(dst, key), nil
	case bsoncore.Document:
		return bsoncore.AppendDocumentElement(dst, key, x), nil
	case bsoncore.Value:
		return bsoncore.AppendValueElement(dst, key, x), nil
	default:
		t, data, err := bson.MarshalValue(v)
		if err != nil {
			return nil, err
		}
		return bsoncore.AppendValueElement(dst, key, bsoncore.Value{Type: t, Data: data}), nil
	}
}

// itoa formats small non-negative integers (array keys) without fmt.
func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	var buf [20]byte
	p := len(buf)
	for i > 0 {
		p--
		buf[p] = byte('0' + i%10)
		i /= 10
	}
	return string(buf[p:])
}
