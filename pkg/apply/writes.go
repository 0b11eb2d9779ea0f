package apply

import (
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// replaceWrites returns the DR writes that make the document with _id id equal to full: a
// ReplaceOne with upsert, or, when full has a top-level $-prefixed field (MongoDB 5.0+ accepts
// one on insert, never in a replacement), a DeleteOne then an InsertOne, the form that a server
// accepting such fields takes.
func replaceWrites(id bson.RawValue, full bson.Raw) []Write {
	if topLevelDollar(full) {
		return []Write{{Kind: DeleteOne, ID: id}, {Kind: InsertOne, ID: id, Doc: full}}
	}
	return []Write{{Kind: ReplaceOne, ID: id, Doc: full}}
}

// topLevelDollar reports whether a document has a top-level field whose name starts with $. It
// reads the element headers in place, allocating nothing (it runs for every insert and replace).
func topLevelDollar(doc bson.Raw) bool {
	if len(doc) < 5 {
		return false
	}
	rest := []byte(doc[4 : len(doc)-1])
	for len(rest) > 0 {
		if len(rest) > 1 && rest[1] == '$' {
			return true
		}
		_, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return false
		}
		rest = r
	}
	return false
}

// deltaWrites returns an update event's delta as DR writes, so that DR's server computes the new
// version from the one it holds exactly as the primary did: UpdateOne without upsert,
// truncatedArrays as $push {$each: [], $slice: newSize}, then updatedFields as $set and
// removedFields as $unset. A truncation and a $set/$unset on overlapping paths cannot share one
// update (MongoDB reports a path conflict), so they are sent as two UpdateOnes, truncation first.
// Every write is absolute: applying it twice gives the same document. An update that changes
// nothing gives no write.
func deltaWrites(id bson.RawValue, ud *changeevent.UpdateDescription) ([]Write, error) {
	var set bson.Raw
	if len(ud.UpdatedFields) > 5 { // 5 bytes is the empty document
		set = ud.UpdatedFields
	}
	var unset bson.D
	for _, f := range ud.RemovedFields {
		unset = append(unset, bson.E{Key: f, Value: ""})
	}
	var push bson.D
	for _, t := range ud.TruncatedArrays {
		push = append(push, bson.E{Key: t.Field, Value: bson.D{{Key: "$each", Value: bson.A{}}, {Key: "$slice", Value: t.NewSize}}})
	}

	var fieldOps bson.D
	if set != nil {
		fieldOps = append(fieldOps, bson.E{Key: "$set", Value: set})
	}
	if unset != nil {
		fieldOps = append(fieldOps, bson.E{Key: "$unset", Value: unset})
	}
	var docs []bson.D
	switch {
	case push == nil && fieldOps == nil:
		return nil, nil
	case push == nil:
		docs = []bson.D{fieldOps}
	case fieldOps == nil || !pathsOverlap(ud):
		docs = []bson.D{append(bson.D{{Key: "$push", Value: push}}, fieldOps...)}
	default:
		docs = []bson.D{{{Key: "$push", Value: push}}, fieldOps}
	}
	writes := make([]Write, 0, len(docs))
	for _, d := range docs {
		b, err := bson.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("encode update: %w", err)
		}
		writes = append(writes, Write{Kind: UpdateOne, ID: id, Doc: b})
	}
	return writes, nil
}

// pathsOverlap reports whether a truncated array's path equals, contains or lies inside a path
// that the update sets or removes.
func pathsOverlap(ud *changeevent.UpdateDescription) bool {
	var paths []string
	if elems, err := ud.UpdatedFields.Elements(); err == nil {
		for _, e := range elems {
			paths = append(paths, e.Key())
		}
	}
	paths = append(paths, ud.RemovedFields...)
	for _, t := range ud.TruncatedArrays {
		for _, p := range paths {
			if p == t.Field || strings.HasPrefix(p, t.Field+".") || strings.HasPrefix(t.Field, p+".") {
				return true
			}
		}
	}
	return false
}
