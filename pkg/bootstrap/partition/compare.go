package partition

import (
	"bytes"
	"math"
	"math/big"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
)

// Bracket returns the position of a BSON type in MongoDB's comparison order
// (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/). Values of
// different brackets compare by bracket alone; range query operators ($lt, $gte...) only match
// values of the bracket of their operand, which is why Split refuses to cut ranges across
// brackets.
func Bracket(t bsontype.Type) int {
	switch t {
	case bson.TypeMinKey:
		return 0
	case bson.TypeNull, bson.TypeUndefined:
		return 1
	case bson.TypeInt32, bson.TypeInt64, bson.TypeDouble, bson.TypeDecimal128:
		return 2
	case bson.TypeString, bson.TypeSymbol:
		return 3
	case bson.TypeEmbeddedDocument:
		return 4
	case bson.TypeArray:
		return 5
	case bson.TypeBinary:
		return 6
	case bson.TypeObjectID:
		return 7
	case bson.TypeBoolean:
		return 8
	case bson.TypeDateTime:
		return 9
	case bson.TypeTimestamp:
		return 10
	case bson.TypeRegex:
		return 11
	case bson.TypeDBPointer:
		return 12
	case bson.TypeJavaScript:
		return 13
	case bson.TypeCodeWithScope:
		return 14
	case bson.TypeMaxKey:
		return 15
	}
	return 16
}

// Compare orders two BSON values the way a MongoDB server sorts them: by type bracket, then by
// value. Numbers of different types compare by numeric value, so int32(1) and int64(1) are
// equal here (as they are for a unique _id index). Verify relies on this to merge two cursors
// sorted by _id; it checks that each cursor really is ascending under Compare and fails loudly
// if a server orders differently.
func Compare(a, b bson.RawValue) int {
	if c := cmpInt(Bracket(a.Type), Bracket(b.Type)); c != 0 {
		return c
	}
	switch Bracket(a.Type) {
	case 0, 1, 15: // MinKey, null, MaxKey: all equal within the bracket
		return 0
	case 2:
		return compareNumbers(a, b)
	case 3, 13: // strings, symbols, JavaScript code: binary comparison of the UTF-8 bytes
		return bytes.Compare(stringBytes(a), stringBytes(b))
	case 4:
		return compareDocuments(a.Document(), b.Document())
	case 5:
		return compareDocuments(a.Array(), b.Array())
	case 6:
		as, ad := a.Binary()
		bs, bd := b.Binary()
		if c := cmpInt(len(ad), len(bd)); c != 0 {
			return c
		}
		if c := cmpInt(int(as), int(bs)); c != 0 {
			return c
		}
		return bytes.Compare(ad, bd)
	case 7:
		ao, bo := a.ObjectID(), b.ObjectID()
		return bytes.Compare(ao[:], bo[:])
	case 8:
		return cmpInt(boolInt(a.Boolean()), boolInt(b.Boolean()))
	case 9:
		return cmpInt64(a.DateTime(), b.DateTime())
	case 10:
		at, ai := a.Timestamp()
		bt, bi := b.Timestamp()
		if c := cmpInt64(int64(at), int64(bt)); c != 0 {
			return c
		}
		return cmpInt64(int64(ai), int64(bi))
	case 11:
		ap, ao := a.Regex()
		bp, bo := b.Regex()
		if c := bytes.Compare([]byte(ap), []byte(bp)); c != 0 {
			return c
		}
		return bytes.Compare([]byte(ao), []byte(bo))
	}
	// DBPointer, code with scope and unknown types: fall back to the encoded bytes, which is
	// stable and enough for equality.
	return bytes.Compare(a.Value, b.Value)
}

// compareDocuments compares element by element: type bracket, then field name, then value;
// a document that is a prefix of the other sorts first.
func compareDocuments(a, b bson.Raw) int {
	ae, _ := a.Elements()
	be, _ := b.Elements()
	for i := 0; i < len(ae) && i < len(be); i++ {
		av, bv := ae[i].Value(), be[i].Value()
		if c := cmpInt(Bracket(av.Type), Bracket(bv.Type)); c != 0 {
			return c
		}
		if c := bytes.Compare([]byte(ae[i].Key()), []byte(be[i].Key())); c != 0 {
			return c
		}
		if c := Compare(av, bv); c != 0 {
			return c
		}
	}
	return cmpInt(len(ae), len(be))
}

// compareNumbers compares int32, int64, double and decimal128 by value. NaN sorts before every
// other number, as in MongoDB. Mixed comparisons are exact (math/big), so large int64 values are
// not rounded through float64.
func compareNumbers(a, b bson.RawValue) int {
	if isInteger(a.Type) && isInteger(b.Type) {
		return cmpInt64(a.AsInt64(), b.AsInt64())
	}
	af, aNaN := bigNumber(a)
	bf, bNaN := bigNumber(b)
	switch {
	case aNaN && bNaN:
		return 0
	case aNaN:
		return -1
	case bNaN:
		return 1
	}
	return af.Cmp(bf)
}

func isInteger(t bsontype.Type) bool { return t == bson.TypeInt32 || t == bson.TypeInt64 }

// bigNumber converts a numeric value to a big.Float (±Inf allowed); the bool reports NaN.
func bigNumber(v bson.RawValue) (*big.Float, bool) {
	switch v.Type {
	case bson.TypeInt32, bson.TypeInt64:
		return new(big.Float).SetInt64(v.AsInt64()), false
	case bson.TypeDouble:
		f := v.Double()
		if math.IsNaN(f) {
			return nil, true
		}
		return new(big.Float).SetFloat64(f), false
	case bson.TypeDecimal128:
		d := v.Decimal128()
		if d.IsNaN() {
			return nil, true
		}
		if inf := d.IsInf(); inf != 0 {
			return new(big.Float).SetInf(inf < 0), false
		}
		bi, exp, err := d.BigInt()
		if err != nil {
			return nil, true
		}
		f := new(big.Float).SetPrec(256).SetInt(bi)
		ten := new(big.Float).SetPrec(256).SetInt64(10)
		for ; exp > 0; exp-- {
			f.Mul(f, ten)
		}
		for ; exp < 0; exp++ {
			f.Quo(f, ten)
		}
		return f, false
	}
	return nil, true
}

func stringBytes(v bson.RawValue) []byte {
	switch v.Type {
	case bson.TypeString:
		return []byte(v.StringValue())
	case bson.TypeSymbol:
		return []byte(v.Symbol())
	case bson.TypeJavaScript:
		return []byte(v.JavaScript())
	}
	return v.Value
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
