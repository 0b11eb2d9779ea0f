package mongoserver

import (
	"sort"
	"strings"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// Projection and sorting. lungo's mongokit.Project keeps only the last of
// several excluded fields (it appends exclusions to the inclusion list), and
// bsonkit.Compare panics on MinKey/MaxKey, so both are done here, with
// MongoDB's rules: inclusion keeps the document's own field order, _id is
// kept unless excluded, dotted paths descend into embedded documents and
// arrays of documents; sort orders arrays by their smallest (ascending) or
// largest (descending) element, across types in BSON comparison order.

// projection is a compiled find/$project projection.
type projection struct {
	inclusion bool
	hideID    bool
	tree      pathTree
	slices    map[string]interface{} // path -> $slice argument
}

// pathTree maps a field name to its sub-paths; a nil subtree is a leaf.
type pathTree map[string]pathTree

func (t pathTree) add(path string) {
	head, rest, dotted := strings.Cut(path, ".")
	if !dotted {
		t[head] = nil
		return
	}
	sub, exists := t[head]
	if exists && sub == nil {
		return // the whole field is already selected
	}
	if sub == nil {
		sub = pathTree{}
		t[head] = sub
	}
	sub.add(rest)
}

// compileProjection validates spec and decides between inclusion and
// exclusion.
func compileProjection(spec bson.D) (*projection, error) {
	p := &projection{tree: pathTree{}, slices: map[string]interface{}{}}
	mode := 0 // 1 inclusion, -1 exclusion
	for _, e := range spec {
		if d, ok := e.Value.(bson.D); ok && len(d) == 1 && d[0].Key == "$slice" {
			p.slices[e.Key] = d[0].Value
			continue
		}
		if _, ok := e.Value.(bson.D); ok || strings.Contains(e.Key, "$") {
			return nil, errf(codeBadValue, "projection operator in %q is not supported by this server", e.Key)
		}
		include := truthyValue(e.Value)
		if e.Key == "_id" {
			p.hideID = !include
			continue
		}
		want := -1
		if include {
			want = 1
		}
		if mode != 0 && mode != want {
			kind := "exclusion"
			if mode == 1 {
				kind = "inclusion"
			}
			return nil, errf(31254, "Cannot do %s on field %s in %s projection", map[bool]string{true: "inclusion", false: "exclusion"}[include], e.Key, kind)
		}
		mode = want
		p.tree.add(e.Key)
	}
	p.inclusion = mode == 1
	return p, nil
}

func truthyValue(v interface{}) bool {
	switch x := v.(type) {
	case bool:
		return x
	case int32:
		return x != 0
	case int64:
		return x != 0
	case float64:
		return x != 0
	case nil:
		return false
	}
	return true
}

// apply returns the projected copy of d.
func (p *projection) apply(d bson.D) bson.D {
	var out bson.D
	if p.inclusion {
		out = includeFields(d, p.tree, true)
		if !p.hideID {
			for _, e := range d {
				if e.Key == "_id" {
					out = append(bson.D{e}, out...)
					break
				}
			}
		}
	} else {
		out = excludeFields(d, p.tree)
		if p.hideID {
			out = excludeFields(out, pathTree{"_id": nil})
		}
	}
	for path, arg := range p.slices {
		if arr, ok := bsonkit.Get(&out, path).(bson.A); ok {
			_, _ = bsonkit.Put(&out, path, sliceArray(arr, arg), false)
		}
	}
	return out
}

// includeFields keeps the selected fields of d in d's order.
func includeFields(d bson.D, t pathTree, top bool) bson.D {
	out := bson.D{}
	for _, e := range d {
		sub, ok := t[e.Key]
		if !ok || (top && e.Key == "_id" && sub == nil) {
			continue
		}
		if sub == nil {
			out = append(out, e)
			continue
		}
		switch v := e.Value.(type) {
		case bson.D:
			out = append(out, bson.E{Key: e.Key, Value: includeFields(v, sub, false)})
		case bson.A:
			arr := bson.A{}
			for _, item := range v {
				if sd, ok := item.(bson.D); ok {
					arr = append(arr, includeFields(sd, sub, false))
				}
			}
			out = append(out, bson.E{Key: e.Key, Value: arr})
		}
	}
	return out
}

// excludeFields copies d without the selected fields.
func excludeFields(d bson.D, t pathTree) bson.D {
	out := make(bson.D, 0, len(d))
	for _, e := range d {
		sub, ok := t[e.Key]
		switch {
		case !ok:
			out = append(out, e)
		case sub == nil:
			// excluded
		default:
			switch v := e.Value.(type) {
			case bson.D:
				out = append(out, bson.E{Key: e.Key, Value: excludeFields(v, sub)})
			case bson.A:
				arr := make(bson.A, 0, len(v))
				for _, item := range v {
					if sd, ok := item.(bson.D); ok {
						item = excludeFields(sd, sub)
					}
					arr = append(arr, item)
				}
				out = append(out, bson.E{Key: e.Key, Value: arr})
			default:
				out = append(out, e)
			}
		}
	}
	return out
}

// sliceArray implements {$slice: n} and {$slice: [skip, n]}.
func sliceArray(arr bson.A, arg interface{}) bson.A {
	if pair, ok := arg.(bson.A); ok && len(pair) == 2 {
		skip, _ := toInt(pair[0])
		n, _ := toInt(pair[1])
		if skip < 0 {
			skip = max(len(arr)+skip, 0)
		}
		skip = min(skip, len(arr))
		return arr[skip:min(skip+max(n, 0), len(arr))]
	}
	n, _ := toInt(arg)
	if n >= 0 {
		return arr[:min(n, len(arr))]
	}
	return arr[max(len(arr)+n, 0):]
}

// sortDocs sorts list stably by a sort specification.
func sortDocs(list []*bson.D, spec *bson.D) error {
	cols, err := mongokit.Columns(spec)
	if err != nil {
		return errf(codeBadValue, "sort: %v", err)
	}
	keys := make([][]interface{}, len(list))
	for i, d := range list {
		keys[i] = make([]interface{}, len(cols))
		for j, c := range cols {
			keys[i][j] = sortKey(bsonkit.Get(d, c.Path), c.Reverse)
		}
	}
	idx := make([]int, len(list))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		for j, c := range cols {
			r := compareValues(keys[idx[a]][j], keys[idx[b]][j])
			if r != 0 {
				return (r < 0) != c.Reverse
			}
		}
		return false
	})
	sorted := make([]*bson.D, len(list))
	for i, k := range idx {
		sorted[i] = list[k]
	}
	copy(list, sorted)
	return nil
}

// sortKey is the value a document sorts by: missing is null, an array its
// smallest element ascending or largest descending.
func sortKey(v interface{}, descending bool) interface{} {
	if v == bsonkit.Missing {
		return nil
	}
	arr, ok := v.(bson.A)
	if !ok {
		return v
	}
	if len(arr) == 0 {
		return primitive.Undefined{} // sorts before null, as MongoDB's empty array
	}
	best := arr[0]
	for _, item := range arr[1:] {
		if r := compareValues(item, best); (r < 0 && !descending) || (r > 0 && descending) {
			best = item
		}
	}
	return best
}

// compareValues orders any two BSON values: MinKey first, MaxKey last,
// undefined (empty arrays) just before null, the rest by bsonkit.Compare.
func compareValues(a, b interface{}) (r int) {
	ra, rb := valueRank(a), valueRank(b)
	if ra != rb || ra != 0 {
		switch {
		case ra < rb:
			return -1
		case ra > rb:
			return 1
		}
		return 0
	}
	defer func() {
		if recover() != nil {
			r = 0 // values bsonkit cannot order (embedded MinKey, code): treat as equal
		}
	}()
	return bsonkit.Compare(a, b)
}

func valueRank(v interface{}) int {
	switch v.(type) {
	case primitive.MinKey:
		return -2
	case primitive.Undefined:
		return -1
	case primitive.MaxKey:
		return 2
	case primitive.JavaScript, primitive.CodeWithScope, primitive.Symbol, primitive.DBPointer:
		return 1
	}
	return 0
}
