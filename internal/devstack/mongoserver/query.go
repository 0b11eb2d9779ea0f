package mongoserver

import (
	"strings"

	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// A query is a decoded filter plus the plan of which _ids it can match
// (idplan.go): an _id equality is one B-tree lookup, $in a lookup per value
// and a range a seek, rather than a scan.
type query struct {
	filter bson.D      // nil or empty: match everything
	id     interface{} // non-nil: the only _id that can match (upserts take it)
	plan   idPlan
}

// newQuery decodes a filter document.
func newQuery(filter bsoncore.Document) (*query, error) {
	q := &query{}
	if len(filter) == 0 {
		return q, nil
	}
	d, err := toD(filter)
	if err != nil {
		return nil, errf(codeBadValue, "bad filter: %v", err)
	}
	q.filter = d
	for _, e := range d {
		if e.Key != "_id" {
			continue
		}
		q.id = equalityValue(e.Value)
	}
	q.plan = planIDs(d)
	return q, nil
}

// equalityValue returns v when "field: v" can only match documents whose field
// equals v exactly (a literal or {$eq: literal}), else nil.
func equalityValue(v interface{}) interface{} {
	switch x := v.(type) {
	case nil, bson.A:
		return nil // null matches missing; arrays match elements
	case bson.D:
		if len(x) == 1 && x[0].Key == "$eq" {
			return equalityValue(x[0].Value)
		}
		for _, e := range x {
			if strings.HasPrefix(e.Key, "$") {
				return nil
			}
		}
		if checkComparable(x) != nil {
			return nil
		}
		return x
	default:
		if checkComparable(x) != nil {
			return nil
		}
		switch x.(type) {
		case bson.Raw, bsoncore.Document:
			return nil
		}
		return x
	}
}

// matches reports whether a stored document satisfies the query.
func (q *query) matches(raw bsoncore.Document) (bool, error) {
	if len(q.filter) == 0 {
		return true, nil
	}
	d, err := toD(raw)
	if err != nil {
		return false, err
	}
	return q.matchesD(&d)
}

func (q *query) matchesD(d *bson.D) (bool, error) {
	if len(q.filter) == 0 {
		return true, nil
	}
	ok, err := mongokit.Match(d, &q.filter)
	if err != nil {
		return false, errf(codeBadValue, "%v", err)
	}
	return ok, nil
}

// each calls fn for every matching document of c in _id order, starting
// strictly after `after` when it is non-nil, until fn returns false.
// Caller holds e.mu (read or write).
func (q *query) each(c *collection, after *record, fn func(*record) bool) error {
	return q.walk(c, after, false, fn)
}

// walk is each in ascending or (reverse) descending _id order. Only the
// candidates of q.plan are read, and each goes through the full matcher.
// A panic while comparing values (bsonkit panics on types it cannot order)
// becomes an error, so that callers release e.mu.
func (q *query) walk(c *collection, after *record, reverse bool, fn func(*record) bool) (err error) {
	if c == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = errf(codeBadValue, "bad query: %v", r)
		}
	}()
	q.plan.candidates(c, after, reverse, func(rec *record) bool {
		var m bool
		if m, err = q.matches(rec.raw); err != nil {
			return false
		}
		return !m || fn(rec)
	})
	return err
}

// project applies a find projection to a stored document.
func project(raw bsoncore.Document, p *projection) (bsoncore.Document, error) {
	if p == nil {
		return raw, nil
	}
	d, err := toD(raw)
	if err != nil {
		return nil, err
	}
	return fromD(p.apply(d))
}
