package mongoserver

import (
	"sort"

	"github.com/256dpi/lungo/bsonkit"
	"go.mongodb.org/mongo-driver/bson"
)

// Access paths by _id. Documents are stored in a B-tree ordered by
// bsonkit.Compare on _id (store.go), so a filter that constrains _id does not
// need to look at every document: an equality is one lookup, $in is one
// lookup per value, and a range ($gt, $gte, $lt, $lte) is a seek to the lower
// bound and a walk that stops after the upper bound.
//
// An idPlan only narrows the candidates: every candidate still goes through
// the full matcher (query.matches), so a query answers exactly what a scan
// of the whole collection would. That holds because each narrowing below
// keeps a superset of what the matcher can accept:
//
//   - lungo's comparison operators are type-bracketed: {$gt: v} matches x only
//     when x is in v's comparison class (bsonkit.Inspect) and
//     bsonkit.Compare(x, v) > 0. The tree uses the same Compare, whose order
//     is class first, so the matches of {$gt: v} are the tree interval
//     (v, end of v's class].
//   - {$in: [a, b]} matches x when Compare(x, a) == 0 or Compare(x, b) == 0,
//     which is what a tree lookup finds.
//   - _id is never an array (checkID), so matching never unwinds it.
//   - Conditions on _id are ANDed with everything else, whether several
//     operators in one document, several _id keys, or items of a top-level
//     $and; each may only shrink the candidates, so they intersect.
//
// An operand that bsonkit cannot order (MinKey, MaxKey, undefined, code,
// symbol, DBPointer, or a document holding one) makes the matcher fail; such
// a query is given no plan and scans, so it fails exactly as the scan does.
// Error parity has one known limit, shared with the equality lookup that
// predates this file: an invalid condition on another field surfaces only
// when some document is matched, so a plan with no candidates returns an
// empty result where a scan of a non-empty collection returns the error.

// idPlan is the set of _id values a filter can possibly match. The zero
// idPlan allows every _id.
type idPlan struct {
	scan   bool          // no narrowing: walk every document
	eq     interface{}   // non-nil: only this _id (from an equality)
	points []interface{} // non-nil: only these _ids (from $in), sorted, distinct
	lo, hi *idBound      // else the interval [lo, hi]; nil is unbounded
}

// idBound is one end of an _id interval. v is an _id value or a classEdge.
type idBound struct {
	v    interface{}
	incl bool
}

// classEdge is a B-tree pivot that sorts just before (end false) or just
// after (end true) every value of one comparison class. It lets a range
// stop at the end of its type bracket without a real sentinel value.
type classEdge struct {
	class bsonkit.Class
	end   bool
}

// compareIDs is bsonkit.Compare extended to classEdge pivots. Stored _ids
// are never edges; only pivots built by a plan are.
func compareIDs(a, b interface{}) int {
	if ea, ok := a.(classEdge); ok {
		return ea.compare(b)
	}
	if eb, ok := b.(classEdge); ok {
		return -eb.compare(a)
	}
	return bsonkit.Compare(a, b)
}

func (e classEdge) compare(v interface{}) int {
	var class bsonkit.Class
	other := 0 // where v sits within its class: -1 start edge, 0 value, 1 end edge
	if ev, ok := v.(classEdge); ok {
		class, other = ev.class, -1
		if ev.end {
			other = 1
		}
	} else {
		class, _ = bsonkit.Inspect(v)
	}
	self := -1
	if e.end {
		self = 1
	}
	switch {
	case e.class < class:
		return -1
	case e.class > class:
		return 1
	case self < other:
		return -1
	case self > other:
		return 1
	}
	return 0
}

// planIDs derives the plan of a decoded filter.
func planIDs(filter bson.D) idPlan {
	var p idPlan
	p.constrainFilter(filter)
	if p.scan {
		return idPlan{scan: true}
	}
	return p
}

// constrainFilter applies the _id conditions of one (sub)filter.
func (p *idPlan) constrainFilter(filter bson.D) {
	for _, e := range filter {
		switch e.Key {
		case "_id":
			p.constrainID(e.Value)
		case "$and":
			items, _ := e.Value.(bson.A)
			for _, item := range items {
				if sub, ok := item.(bson.D); ok {
					p.constrainFilter(sub)
				}
			}
		}
	}
}

// constrainID applies "_id: v", a literal or an operator document.
func (p *idPlan) constrainID(v interface{}) {
	ops, isDoc := v.(bson.D)
	if !isDoc || len(ops) == 0 || !allOperators(ops) {
		p.constrainEq(v)
		return
	}
	for _, op := range ops {
		switch op.Key {
		case "$eq":
			p.constrainEq(op.Value)
		case "$in":
			p.constrainIn(op.Value)
		case "$gt", "$gte":
			if !rangeable(op.Value) {
				p.scan = true
				continue
			}
			class, _ := bsonkit.Inspect(op.Value)
			p.raiseLo(&idBound{v: op.Value, incl: op.Key == "$gte"})
			p.lowerHi(&idBound{v: classEdge{class: class, end: true}})
		case "$lt", "$lte":
			if !rangeable(op.Value) {
				p.scan = true
				continue
			}
			class, _ := bsonkit.Inspect(op.Value)
			p.raiseLo(&idBound{v: classEdge{class: class}})
			p.lowerHi(&idBound{v: op.Value, incl: op.Key == "$lte"})
		}
	}
}

// constrainEq applies an equality: one lookup when v can only equal one
// stored _id (see equalityValue), a scan when the matcher cannot compare v.
func (p *idPlan) constrainEq(v interface{}) {
	if !rangeable(v) {
		p.scan = true
	} else if id := equalityValue(v); id != nil {
		p.eq = id
	}
}

// constrainIn turns {$in: [...]} into point lookups. Arrays and regular
// expressions never equal an _id, so they add no point; an operand the
// matcher cannot compare forces a scan.
func (p *idPlan) constrainIn(v interface{}) {
	items, ok := v.(bson.A)
	if !ok {
		return // the matcher reports the error
	}
	points := make([]interface{}, 0, len(items))
	for _, item := range items {
		if !rangeable(item) {
			p.scan = true
			return
		}
		class, _ := bsonkit.Inspect(item)
		if class == bsonkit.Array || class == bsonkit.Regex {
			continue
		}
		points = append(points, item)
	}
	points = sortIDs(points)
	if p.points == nil || len(points) < len(p.points) {
		p.points = points // of two $in, the shorter one
	}
}

// sortIDs sorts values in tree order and drops duplicates (1 and 1.0 are
// the same _id).
func sortIDs(ids []interface{}) []interface{} {
	sort.Slice(ids, func(i, j int) bool { return compareIDs(ids[i], ids[j]) < 0 })
	out := ids[:0]
	for _, id := range ids {
		if len(out) == 0 || compareIDs(out[len(out)-1], id) != 0 {
			out = append(out, id)
		}
	}
	return out
}

func (p *idPlan) raiseLo(b *idBound) {
	if p.lo == nil {
		p.lo = b
		return
	}
	switch r := compareIDs(b.v, p.lo.v); {
	case r > 0:
		p.lo = b
	case r == 0 && !b.incl:
		p.lo.incl = false
	}
}

func (p *idPlan) lowerHi(b *idBound) {
	if p.hi == nil {
		p.hi = b
		return
	}
	switch r := compareIDs(b.v, p.hi.v); {
	case r < 0:
		p.hi = b
	case r == 0 && !b.incl:
		p.hi.incl = false
	}
}

// rangeable reports whether v can be placed in the tree order (and compared
// by the matcher without failing).
func rangeable(v interface{}) bool { return checkComparable(v) == nil }

func allOperators(d bson.D) bool {
	for _, e := range d {
		if len(e.Key) == 0 || e.Key[0] != '$' {
			return false
		}
	}
	return true
}

// below reports whether id lies before the interval's lower end.
func (b *idBound) below(id interface{}) bool {
	if b == nil {
		return false
	}
	r := compareIDs(id, b.v)
	return r < 0 || (r == 0 && !b.incl)
}

// above reports whether id lies past the interval's upper end.
func (b *idBound) above(id interface{}) bool {
	if b == nil {
		return false
	}
	r := compareIDs(id, b.v)
	return r > 0 || (r == 0 && !b.incl)
}

// candidates calls fn, in _id order (descending when reverse), for every
// stored document the plan allows, starting strictly after `after` in that
// order when it is non-nil, until fn returns false.
func (p *idPlan) candidates(c *collection, after *record, reverse bool, fn func(*record) bool) {
	// past reports whether r is at or before `after` in walk order.
	past := func(r *record) bool {
		if after == nil {
			return false
		}
		if reverse {
			return !lessRecord(r, after)
		}
		return !lessRecord(after, r)
	}
	switch {
	case p.scan || (p.eq == nil && p.points == nil && p.lo == nil && p.hi == nil):
		switch {
		case after == nil && reverse:
			c.docs.Reverse(fn)
		case after == nil:
			c.docs.Scan(fn)
		case reverse:
			c.docs.Descend(after, func(r *record) bool { return past(r) || fn(r) })
		default:
			c.docs.Ascend(after, func(r *record) bool { return past(r) || fn(r) })
		}
	case p.eq != nil:
		if r, ok := c.get(p.eq); ok && !past(r) {
			fn(r)
		}
	case p.points != nil:
		for i := range p.points {
			id := p.points[i]
			if reverse {
				id = p.points[len(p.points)-1-i]
			}
			if r, ok := c.get(id); ok && !past(r) && !fn(r) {
				return
			}
		}
	default:
		p.walkRange(c, after, reverse, past, fn)
	}
}

// walkRange seeks to the first end of [lo, hi] in walk order (or to after,
// when that is further) and walks until the other end.
func (p *idPlan) walkRange(c *collection, after *record, reverse bool, past func(*record) bool, fn func(*record) bool) {
	if p.lo != nil && p.hi != nil {
		if r := compareIDs(p.lo.v, p.hi.v); r > 0 || (r == 0 && !(p.lo.incl && p.hi.incl)) {
			return // empty interval, e.g. bounds in different type brackets
		}
	}
	if !reverse {
		visit := func(r *record) bool {
			switch {
			case past(r) || p.lo.below(r.id):
				return true
			case p.hi.above(r.id):
				return false
			}
			return fn(r)
		}
		pivot := after
		if p.lo != nil && (pivot == nil || compareIDs(p.lo.v, pivot.id) > 0) {
			pivot = &record{id: p.lo.v}
		}
		if pivot == nil {
			c.docs.Scan(visit)
		} else {
			c.docs.Ascend(pivot, visit)
		}
		return
	}
	visit := func(r *record) bool {
		switch {
		case past(r) || p.hi.above(r.id):
			return true
		case p.lo.below(r.id):
			return false
		}
		return fn(r)
	}
	pivot := after
	if p.hi != nil && (pivot == nil || compareIDs(p.hi.v, pivot.id) < 0) {
		pivot = &record{id: p.hi.v}
	}
	if pivot == nil {
		c.docs.Reverse(visit)
	} else {
		c.docs.Descend(pivot, visit)
	}
}
