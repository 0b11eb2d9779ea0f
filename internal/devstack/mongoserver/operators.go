package mongoserver

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
)

// Array update operators lungo lacks or implements partially. $push gains
// the $each, $position, $slice and $sort modifiers (the DR apply truncates
// arrays with {$push: {f: {$each: [], $slice: n}}}); $addToSet, $pull and
// $pullAll are added. They register in mongokit's operator table, so
// mongokit.Apply resolves paths (including positional ones) as usual.

func init() {
	mongokit.FieldUpdateOperators["$push"] = applyPush
	mongokit.FieldUpdateOperators["$addToSet"] = applyAddToSet
	mongokit.FieldUpdateOperators["$pull"] = applyPull
	mongokit.FieldUpdateOperators["$pullAll"] = applyPullAll
}

// arrayAt returns the array at path; missing is reported separately, and a
// non-array value is an error.
func arrayAt(doc bsonkit.Doc, op, path string) (arr bson.A, missing bool, err error) {
	switch v := bsonkit.Get(doc, path).(type) {
	case bson.A:
		return v, false, nil
	case bsonkit.MissingType:
		return nil, true, nil
	default:
		return nil, false, errf(codeBadValue, "%s: the field '%s' must be an array but is of type %T", op, path, v)
	}
}

// recordChange notes a change in mongokit's change set (for updateDescription).
func recordChange(ctx mongokit.Context, path string, v interface{}) error {
	return ctx.Value.(*mongokit.Changes).Record(path, v)
}

// recordAppend records appended elements as "path.<index>" entries, or the
// whole array when the array is new.
func recordAppend(ctx mongokit.Context, path string, arr bson.A, from int, created bool) error {
	if created {
		return recordChange(ctx, path, arr)
	}
	for i := from; i < len(arr); i++ {
		if err := recordChange(ctx, path+"."+strconv.Itoa(i), arr[i]); err != nil {
			return err
		}
	}
	return nil
}

// eachArg splits {$each: [...], modifiers...} from a plain value.
func eachArg(op string, v interface{}) (items bson.A, mods bson.D, err error) {
	d, ok := v.(bson.D)
	if !ok || len(d) == 0 || !strings.HasPrefix(d[0].Key, "$") {
		return bson.A{v}, nil, nil
	}
	for _, e := range d {
		if e.Key == "$each" {
			if items, ok = e.Value.(bson.A); !ok {
				return nil, nil, errf(codeBadValue, "%s: the argument to $each must be an array", op)
			}
		} else {
			mods = append(mods, e)
		}
	}
	if items == nil {
		return nil, nil, errf(codeBadValue, "%s: modifiers require $each", op)
	}
	return items, mods, nil
}

func applyPush(ctx mongokit.Context, doc bsonkit.Doc, op, path string, v interface{}) error {
	items, mods, err := eachArg(op, v)
	if err != nil {
		return err
	}
	arr, missing, err := arrayAt(doc, op, path)
	if err != nil {
		return err
	}
	oldLen := len(arr)
	position, slice, hasSlice := -1, 0, false
	var sortSpec interface{}
	for _, m := range mods {
		switch m.Key {
		case "$position":
			n, ok := toInt(m.Value)
			if !ok {
				return errf(codeBadValue, "$position must be an integer")
			}
			if n < 0 {
				n = max(len(arr)+n, 0)
			}
			position = min(n, len(arr))
		case "$slice":
			n, ok := toInt(m.Value)
			if !ok {
				return errf(codeBadValue, "$slice must be an integer")
			}
			slice, hasSlice = n, true
		case "$sort":
			sortSpec = m.Value
		default:
			return errf(codeBadValue, "unrecognized $push modifier %s", m.Key)
		}
	}
	out := make(bson.A, 0, len(arr)+len(items))
	if position < 0 {
		out = append(append(out, arr...), items...)
	} else {
		out = append(append(append(out, arr[:position]...), items...), arr[position:]...)
	}
	if sortSpec != nil {
		if out, err = sortArray(out, sortSpec); err != nil {
			return err
		}
	}
	if hasSlice {
		switch {
		case slice >= 0 && slice < len(out):
			out = out[:slice]
		case slice < 0 && -slice < len(out):
			out = out[len(out)+slice:]
		}
	}
	if _, err := bsonkit.Put(doc, path, out, false); err != nil {
		return err
	}
	if position < 0 && sortSpec == nil && !hasSlice {
		return recordAppend(ctx, path, out, oldLen, missing)
	}
	return recordChange(ctx, path, out)
}

// sortArray implements $push's $sort: 1/-1 on values or a sort document on
// embedded documents.
func sortArray(arr bson.A, spec interface{}) (bson.A, error) {
	list := make(bsonkit.List, len(arr))
	for i, item := range arr {
		list[i] = &bson.D{{Key: "v", Value: item}}
	}
	var cols []bsonkit.Column
	if n, ok := toInt(spec); ok && (n == 1 || n == -1) {
		cols = []bsonkit.Column{{Path: "v", Reverse: n == -1}}
	} else if d, ok := spec.(bson.D); ok {
		c, err := mongokit.Columns(&d)
		if err != nil {
			return nil, errf(codeBadValue, "$sort: %v", err)
		}
		for _, col := range c {
			cols = append(cols, bsonkit.Column{Path: "v." + col.Path, Reverse: col.Reverse})
		}
	} else {
		return nil, errf(codeBadValue, "$sort must be 1, -1 or a sort document")
	}
	bsonkit.Sort(list, cols, false)
	out := make(bson.A, len(list))
	for i, d := range list {
		out[i] = (*d)[0].Value
	}
	return out, nil
}

func applyAddToSet(ctx mongokit.Context, doc bsonkit.Doc, op, path string, v interface{}) error {
	items, mods, err := eachArg(op, v)
	if err != nil {
		return err
	}
	if len(mods) > 0 {
		return errf(codeBadValue, "$addToSet supports only the $each modifier")
	}
	arr, missing, err := arrayAt(doc, op, path)
	if err != nil {
		return err
	}
	oldLen := len(arr)
	out := append(bson.A{}, arr...)
	for _, item := range items {
		if !containsValue(out, item) {
			out = append(out, item)
		}
	}
	if len(out) == oldLen && !missing {
		return nil
	}
	if _, err := bsonkit.Put(doc, path, out, false); err != nil {
		return err
	}
	return recordAppend(ctx, path, out, oldLen, missing)
}

func containsValue(arr bson.A, v interface{}) bool {
	for _, have := range arr {
		if bsonkit.Compare(have, v) == 0 {
			return true
		}
	}
	return false
}

// applyPull removes the elements equal to v or, when v is a condition,
// matching it (a query on document elements, an operator expression on
// scalars).
func applyPull(ctx mongokit.Context, doc bsonkit.Doc, op, path string, v interface{}) error {
	arr, missing, err := arrayAt(doc, op, path)
	if err != nil || missing {
		return err
	}
	cond, isDoc := v.(bson.D)
	isOperator := isDoc && len(cond) > 0 && strings.HasPrefix(cond[0].Key, "$")
	matches := func(item interface{}) (bool, error) {
		switch {
		case isOperator:
			return mongokit.Match(&bson.D{{Key: "v", Value: item}}, &bson.D{{Key: "v", Value: cond}})
		case isDoc:
			if d, ok := item.(bson.D); ok {
				return mongokit.Match(&d, &cond)
			}
			return false, nil
		default:
			return bsonkit.Compare(item, v) == 0, nil
		}
	}
	return filterArray(ctx, doc, path, arr, matches)
}

func applyPullAll(ctx mongokit.Context, doc bsonkit.Doc, op, path string, v interface{}) error {
	values, ok := v.(bson.A)
	if !ok {
		return errf(codeBadValue, "$pullAll requires an array argument but was given a %T", v)
	}
	arr, missing, err := arrayAt(doc, op, path)
	if err != nil || missing {
		return err
	}
	return filterArray(ctx, doc, path, arr, func(item interface{}) (bool, error) {
		return containsValue(values, item), nil
	})
}

// filterArray removes the elements for which remove is true and records the
// new array if anything changed.
func filterArray(ctx mongokit.Context, doc bsonkit.Doc, path string, arr bson.A, remove func(interface{}) (bool, error)) error {
	out := make(bson.A, 0, len(arr))
	for _, item := range arr {
		drop, err := remove(item)
		if err != nil {
			return fmt.Errorf("$pull: %w", err)
		}
		if !drop {
			out = append(out, item)
		}
	}
	if len(out) == len(arr) {
		return nil
	}
	if _, err := bsonkit.Put(doc, path, out, false); err != nil {
		return err
	}
	return recordChange(ctx, path, out)
}
