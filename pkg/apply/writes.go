package apply

import (
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// documentWrites returns the DR writes for an insert, replace or update event. The rule (see
// docs/apply.md) makes every write absolute, so applying a batch twice converges to the same DR
// state:
//
//   - insert, replace: ReplaceOne by _id with the full document, upsert.
//   - update carrying the full document (updateLookup): the same ReplaceOne. The looked-up
//     document may be newer than the event; replacing with it is still correct, as the later
//     events of that document follow in the same partition.
//   - update without it (the document was gone when capture looked it up): the delta as
//     UpdateOne without upsert: truncatedArrays as $push {$each: [], $slice: newSize}, then
//     updatedFields as $set and removedFields as $unset. A truncation and a $set/$unset on
//     overlapping paths cannot share one update (MongoDB reports a path conflict), so they are
//     sent as two UpdateOnes, truncation first. An update that changes nothing gives no write.
func documentWrites(ev *changeevent.Event) ([]Write, error) {
	id, err := ev.ID()
	if err != nil {
		return nil, err
	}
	if ev.FullDocument != nil {
		return []Write{{Kind: ReplaceOne, ID: id, Doc: ev.FullDocument}}, nil
	}
	if ev.Operation != changeevent.Update || ev.UpdateDescription == nil {
		return nil, fmt.Errorf("%s event has no fullDocument", ev.Operation)
	}
	ud := ev.UpdateDescription

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
			return nil, fmt.Errorf("encode update of %s: %w", ev.NS, err)
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
