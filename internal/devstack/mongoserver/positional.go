package mongoserver

import (
	"strings"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
)

// The positional operator "$" in an update path ("arr.$", "items.$.v")
// stands for the index of the first array element the query matched. lungo
// does not implement it; resolvePositional rewrites such paths to concrete
// indexes for one document before mongokit.Apply runs.

// positionalAt returns the byte offset of the first "$" path segment, or -1.
func positionalAt(path string) int {
	off := 0
	for _, seg := range strings.Split(path, ".") {
		if seg == "$" {
			return off
		}
		off += len(seg) + 1
	}
	return -1
}

// resolvePositional returns ops with every "$" segment replaced by the index
// the filter matched in doc.
func resolvePositional(ops, filter bson.D, doc *bson.D) (bson.D, error) {
	need := false
	for _, op := range ops {
		fields, _ := op.Value.(bson.D)
		for _, f := range fields {
			need = need || positionalAt(f.Key) >= 0
		}
	}
	if !need {
		return ops, nil
	}
	out := make(bson.D, 0, len(ops))
	for _, op := range ops {
		fields, ok := op.Value.(bson.D)
		if !ok {
			out = append(out, op)
			continue
		}
		nf := make(bson.D, 0, len(fields))
		for _, f := range fields {
			if at := positionalAt(f.Key); at >= 0 {
				prefix := strings.TrimSuffix(f.Key[:at], ".")
				i, err := positionalIndex(prefix, filter, doc)
				if err != nil {
					return nil, err
				}
				f.Key = prefix + "." + itoa(i) + f.Key[at+1:]
			}
			nf = append(nf, f)
		}
		out = append(out, bson.E{Key: op.Key, Value: nf})
	}
	return out, nil
}

// positionalIndex finds the first element of the array at prefix that
// satisfies every filter condition on prefix or its sub-fields.
func positionalIndex(prefix string, filter bson.D, doc *bson.D) (int, error) {
	notFound := errf(codeBadValue, "The positional operator did not find the match needed from the query.")
	arr, ok := bsonkit.Get(doc, prefix).(bson.A)
	if !ok || prefix == "" {
		return 0, notFound
	}
	var conds bson.D
	var collect func(bson.D)
	collect = func(f bson.D) {
		for _, e := range f {
			switch {
			case e.Key == "$and":
				items, _ := e.Value.(bson.A)
				for _, item := range items {
					if d, ok := item.(bson.D); ok {
						collect(d)
					}
				}
			case e.Key == prefix || strings.HasPrefix(e.Key, prefix+"."):
				conds = append(conds, bson.E{Key: "e" + e.Key[len(prefix):], Value: e.Value})
			}
		}
	}
	collect(filter)
	if len(conds) == 0 {
		return 0, notFound
	}
	for i, item := range arr {
		// Wrapping the element in a one-element array gives each condition
		// MongoDB's array-matching semantics for exactly this element.
		probe := bson.D{{Key: "e", Value: bson.A{item}}}
		ok, err := mongokit.Match(&probe, &conds)
		if err != nil {
			return 0, errf(codeBadValue, "%v", err)
		}
		if ok {
			return i, nil
		}
	}
	return 0, notFound
}
