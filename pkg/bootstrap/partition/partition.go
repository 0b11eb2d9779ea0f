// Package partition splits the collections of a replication scope into _id ranges that
// bootstrap and verify work on in parallel, and orders _id values the way the server does.
//
// A range is a half-open interval [Lo, Hi) of _id values; the first range has no lower bound
// and the last no upper bound. Range queries ($gte, $lt) only match values of the operand's
// type bracket (an ObjectId bound never matches a string _id), so ranges are only cut when every
// _id of the collection lies in one bracket; otherwise the collection is one unbounded range,
// which is always correct, just not parallel.
package partition

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Range is the half-open _id interval [Lo, Hi). A zero Lo or Hi (Type 0) is unbounded.
type Range struct {
	Lo bson.RawValue
	Hi bson.RawValue
}

// Bounded reports whether the side v of a range has a bound.
func Bounded(v bson.RawValue) bool { return v.Type != 0 }

// Filter returns the query selecting the range's documents. When after is set (the last _id
// already processed, for resuming), the range starts just after it instead of at Lo.
func (r Range) Filter(after bson.RawValue) bson.D {
	var cond bson.D
	switch {
	case Bounded(after):
		cond = append(cond, bson.E{Key: "$gt", Value: after})
	case Bounded(r.Lo):
		cond = append(cond, bson.E{Key: "$gte", Value: r.Lo})
	}
	if Bounded(r.Hi) {
		cond = append(cond, bson.E{Key: "$lt", Value: r.Hi})
	}
	if len(cond) == 0 {
		return bson.D{}
	}
	return bson.D{{Key: "_id", Value: cond}}
}

// MinDocsPerRange keeps ranges from being cut finer than this many documents.
const MinDocsPerRange = 256

// Plan is the split of one collection.
type Plan struct {
	Ranges    []Range
	Estimated int64 // the document count the server estimated for the first collection
	// Single is set, with a reason, when the collection could not be cut and is one range.
	Single string
}

// Split cuts colls[0] into at most n ranges of about equal document counts, by streaming its
// _id values in order (only the _id field travels). The other collections (for verify: the DR
// copy) must have their _id values in the same type bracket too, or the plan is one unbounded
// range so that no document of any side is left out.
func Split(ctx context.Context, n int, colls ...*mongo.Collection) (Plan, error) {
	if len(colls) == 0 {
		return Plan{}, errors.New("split: no collection")
	}
	src := colls[0]
	est, err := src.EstimatedDocumentCount(ctx)
	if err != nil {
		return Plan{}, fmt.Errorf("count %s: %w", src.Name(), err)
	}
	plan := Plan{Ranges: []Range{{}}, Estimated: est}
	if n <= 1 {
		plan.Single = "one range requested"
		return plan, nil
	}
	if max := est / MinDocsPerRange; int64(n) > max {
		n = int(max)
	}
	if n <= 1 {
		plan.Single = "collection too small to split"
		return plan, nil
	}
	bracket := -1
	for _, c := range colls {
		for _, dir := range []int{1, -1} {
			id, ok, err := edgeID(ctx, c, dir)
			if err != nil {
				return Plan{}, err
			}
			if !ok {
				continue
			}
			b := Bracket(id.Type)
			if bracket == -1 {
				bracket = b
			} else if b != bracket {
				plan.Single = fmt.Sprintf("_id values of %s span several BSON types", c.Name())
				return plan, nil
			}
		}
	}

	step := est / int64(n)
	cur, err := src.Find(ctx, bson.D{}, options.Find().
		SetSort(bson.D{{Key: "_id", Value: 1}}).
		SetProjection(bson.D{{Key: "_id", Value: 1}}).
		SetBatchSize(10000))
	if err != nil {
		return Plan{}, fmt.Errorf("scan _id of %s: %w", src.Name(), err)
	}
	defer cur.Close(ctx)
	var bounds []bson.RawValue
	for i := int64(0); cur.Next(ctx); i++ {
		if i == 0 || i%step != 0 {
			continue
		}
		id := cur.Current.Lookup("_id")
		bounds = append(bounds, bson.RawValue{Type: id.Type, Value: slices.Clone(id.Value)})
		if len(bounds) == n-1 {
			break
		}
	}
	if err := cur.Err(); err != nil {
		return Plan{}, fmt.Errorf("scan _id of %s: %w", src.Name(), err)
	}
	if len(bounds) == 0 {
		return plan, nil
	}
	plan.Ranges = make([]Range, 0, len(bounds)+1)
	var lo bson.RawValue
	for _, b := range bounds {
		plan.Ranges = append(plan.Ranges, Range{Lo: lo, Hi: b})
		lo = b
	}
	plan.Ranges = append(plan.Ranges, Range{Lo: lo})
	return plan, nil
}

// edgeID returns the smallest (dir 1) or largest (dir -1) _id of c; ok is false when c is empty.
func edgeID(ctx context.Context, c *mongo.Collection, dir int) (bson.RawValue, bool, error) {
	raw, err := c.FindOne(ctx, bson.D{}, options.FindOne().
		SetSort(bson.D{{Key: "_id", Value: dir}}).
		SetProjection(bson.D{{Key: "_id", Value: 1}})).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return bson.RawValue{}, false, nil
	}
	if err != nil {
		return bson.RawValue{}, false, fmt.Errorf("read edge _id of %s: %w", c.Name(), err)
	}
	return raw.Lookup("_id"), true, nil
}
