package mongoserver

import (
	"strconv"
	"strings"

	"github.com/256dpi/lungo/bsonkit"
	"github.com/256dpi/lungo/mongokit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// aggregate: a small pipeline engine ($match, $sort, $limit, $skip, $project,
// $count, $group, $addFields/$set, $unset, $replaceRoot, $unwind) on top of
// mongokit, plus change streams when the first stage is $changeStream.

func init() {
	register(cmdAggregate, false, "aggregate")
	register(cmdModifyChangeStreams, false, "modifyChangeStreams")
}

// stage transforms a list of documents.
type stage func(bsonkit.List) (bsonkit.List, error)

func cmdAggregate(c *cmdCtx, dst []byte) ([]byte, error) {
	pv := c.value("pipeline")
	arr, ok := pv.ArrayOK()
	if !ok {
		return nil, errf(codeTypeMismatch, "'pipeline' option must be specified as an array")
	}
	vals, err := arr.Values()
	if err != nil {
		return nil, errf(codeFailedToParse, "pipeline: %v", err)
	}
	pipeline := make([]bsoncore.Document, 0, len(vals))
	for _, v := range vals {
		d, ok := v.DocumentOK()
		if !ok {
			return nil, errf(codeTypeMismatch, "each pipeline stage must be a document")
		}
		pipeline = append(pipeline, d)
	}
	cursorOpts, err := c.doc("cursor")
	if err != nil {
		return nil, err
	}
	if cursorOpts == nil && !c.has("explain") {
		return nil, errf(codeFailedToParse, "The 'cursor' option is required, except for aggregate with the explain argument")
	}
	batchSize := int64(101)
	if cursorOpts != nil {
		if batchSize, err = intValue("aggregate", "cursor.batchSize", cursorOpts.Lookup("batchSize"), 101); err != nil {
			return nil, err
		}
	}
	first := int(batchSize)
	if batchSize == 0 {
		first = -1
	}

	target := c.value("aggregate")
	collName, isColl := target.StringValueOK()
	if !isColl && !truthy(target, false) {
		return nil, errf(codeFailedToParse, "aggregate: the first field must be a collection name or 1")
	}

	if len(pipeline) > 0 {
		if spec, err := pipeline[0].LookupErr("$changeStream"); err == nil {
			return openChangeStream(c, dst, spec, pipeline[1:], collName, isColl, first)
		}
		if _, err := pipeline[0].LookupErr("$listChangeStreams"); err == nil {
			return listChangeStreams(c, dst, pipeline[1:])
		}
	}
	if !isColl {
		return nil, errf(codeInvalidNamespace, "{aggregate: 1} is only supported with $changeStream or $listChangeStreams")
	}

	// Source: the collection, with a leading $match answered by the query
	// engine (one lookup for an _id equality).
	q := &query{}
	if len(pipeline) > 0 {
		if m, err := pipeline[0].LookupErr("$match"); err == nil {
			md, ok := m.DocumentOK()
			if !ok {
				return nil, errf(codeTypeMismatch, "$match must be a document")
			}
			if q, err = newQuery(md); err != nil {
				return nil, err
			}
			pipeline = pipeline[1:]
		}
	}
	stages, err := parseStages(pipeline, false)
	if err != nil {
		return nil, err
	}
	var list bsonkit.List
	c.e.mu.RLock()
	err = q.each(c.e.collection(c.db, collName), nil, func(r *record) bool {
		d := mustD(r.raw)
		list = append(list, &d)
		return true
	})
	c.e.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	for _, st := range stages {
		if list, err = st(list); err != nil {
			return nil, asCmdError(err, codeBadValue)
		}
	}
	out := make([]bsoncore.Document, 0, len(list))
	for _, d := range list {
		raw, err := fromD(*d)
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	ns := c.db + "." + collName
	cur := &listCursor{docs: out}
	if first < 0 {
		id := c.e.cursors.add(ns, cur).id
		return appendCursorReply(dst, "firstBatch", id, ns, batch{}), nil
	}
	return openCursor(c, dst, ns, cur, first, false)
}

// openChangeStream handles aggregate [{$changeStream: {...}}, ...].
func openChangeStream(c *cmdCtx, dst []byte, specVal bsoncore.Value, rest []bsoncore.Document, coll string, isColl bool, first int) ([]byte, error) {
	spec, ok := specVal.DocumentOK()
	if !ok {
		return nil, errf(codeTypeMismatch, "$changeStream must be a document")
	}
	var scope streamScope
	switch {
	case isColl:
		scope = streamScope{db: c.db, coll: coll}
	case truthy(spec.Lookup("allChangesForCluster"), false):
		if c.db != "admin" {
			return nil, errf(codeInvalidOptions, "A $changeStream with 'allChangesForCluster:true' may only be opened on the 'admin' database")
		}
	default:
		if c.db == "admin" {
			return nil, errf(codeInvalidOptions, "$changeStream on the admin database requires allChangesForCluster: true")
		}
		scope = streamScope{db: c.db}
	}
	var so streamOptions
	elems, _ := spec.Elements()
	for _, e := range elems {
		v := e.Value()
		switch e.Key() {
		case "resumeAfter", "startAfter":
			d, ok := v.DocumentOK()
			if !ok {
				return nil, errf(codeTypeMismatch, "%s must be a resume token document", e.Key())
			}
			if e.Key() == "resumeAfter" {
				so.resumeAfter = d
			} else {
				so.startAfter = d
			}
		case "startAtOperationTime":
			t, i, ok := v.TimestampOK()
			if !ok {
				return nil, errf(codeTypeMismatch, "startAtOperationTime must be a timestamp")
			}
			so.startAtOperationTime = &primitive.Timestamp{T: t, I: i}
		case "fullDocument":
			switch s, _ := v.StringValueOK(); s {
			case "default":
			case "updateLookup":
				so.updateLookup = true
			default:
				return nil, errf(codeBadValue, "unsupported fullDocument option %q", s)
			}
		case "allChangesForCluster", "showExpandedEvents", "fullDocumentBeforeChange":
		default:
			return nil, errf(codeFailedToParse, "unrecognized $changeStream option %q", e.Key())
		}
	}
	if n := btoi(so.resumeAfter != nil) + btoi(so.startAfter != nil) + btoi(so.startAtOperationTime != nil); n > 1 {
		return nil, errf(codeBadValue, "Only one type of resume option is allowed, but multiple were found")
	}
	stages, err := parseStages(rest, true)
	if err != nil {
		return nil, err
	}

	c.e.mu.RLock()
	if c.s.opts.DocumentDB && !c.e.streamsEnabledFor(scope) {
		c.e.mu.RUnlock()
		return nil, errf(codeCappedPositionLost, "modifyChangeStreams has not been run for this collection/database/cluster (%s); enable it with db.adminCommand({modifyChangeStreams: 1, database, collection, enable: true})", scopeName(scope))
	}
	sc, err := c.e.openStream(scope, so, stages)
	c.e.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	ns := scope.cursorNS()
	var b batch
	if first >= 0 {
		if b, err = sc.nextBatch(c, first, 0, nil); err != nil {
			return nil, err
		}
	} else {
		p := sc.pbrt
		b.pbrt = &p
	}
	var id int64
	if !b.exhausted {
		id = c.e.cursors.add(ns, sc).id
	}
	return appendCursorReply(dst, "firstBatch", id, ns, b), nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func scopeName(sc streamScope) string {
	switch {
	case sc.cluster():
		return "the cluster"
	case sc.database():
		return "database " + sc.db
	default:
		return sc.db + "." + sc.coll
	}
}

// streamsEnabledFor applies DocumentDB's modifyChangeStreams grants: a
// collection stream needs its collection, its database or the cluster
// enabled; a database stream its database or the cluster; a cluster stream
// the cluster. Caller holds e.mu.
func (e *engine) streamsEnabledFor(sc streamScope) bool {
	if e.streamsEnabled[""] {
		return true
	}
	if sc.cluster() {
		return false
	}
	if e.streamsEnabled[sc.db+"."] {
		return true
	}
	return !sc.database() && e.streamsEnabled[sc.db+"."+sc.coll]
}

// cmdModifyChangeStreams is DocumentDB's admin command to enable or disable
// change streams for a collection, a database (collection "") or the whole
// cluster (database ""). Outside DocumentDB mode it is accepted and recorded.
func cmdModifyChangeStreams(c *cmdCtx, dst []byte) ([]byte, error) {
	if c.db != "admin" {
		return nil, errf(codeUnauthorized, "modifyChangeStreams may only be run against the admin database")
	}
	db, err := c.str("database")
	if err != nil {
		return nil, err
	}
	coll, err := c.str("collection")
	if err != nil {
		return nil, err
	}
	if !c.has("enable") || !c.has("database") || !c.has("collection") {
		return nil, errf(codeFailedToParse, "modifyChangeStreams requires database, collection and enable")
	}
	if db == "" && coll != "" {
		return nil, errf(codeInvalidOptions, "a collection requires a database")
	}
	key := ""
	if db != "" {
		key = db + "." + coll
	}
	c.e.lock()
	if c.boolean("enable", false) {
		c.e.streamsEnabled[key] = true
	} else {
		delete(c.e.streamsEnabled, key)
	}
	c.e.unlock()
	return dst, nil
}

// listChangeStreams answers DocumentDB's {$listChangeStreams: 1}.
func listChangeStreams(c *cmdCtx, dst []byte, rest []bsoncore.Document) ([]byte, error) {
	stages, err := parseStages(rest, false)
	if err != nil {
		return nil, err
	}
	c.e.mu.RLock()
	var list bsonkit.List
	for key := range c.e.streamsEnabled {
		db, coll := "", ""
		if key != "" {
			i := strings.IndexByte(key, '.')
			db, coll = key[:i], key[i+1:]
		}
		list = append(list, &bson.D{{Key: "database", Value: db}, {Key: "collection", Value: coll}})
	}
	c.e.mu.RUnlock()
	for _, st := range stages {
		if list, err = st(list); err != nil {
			return nil, asCmdError(err, codeBadValue)
		}
	}
	docs := make([]bsoncore.Document, 0, len(list))
	for _, d := range list {
		raw, err := fromD(*d)
		if err != nil {
			return nil, err
		}
		docs = append(docs, raw)
	}
	return openCursor(c, dst, c.db+".$cmd.aggregate", &listCursor{docs: docs}, 0, false)
}

// runStages applies a change stream's later stages to one event. keep is
// false when a $match dropped it.
func runStages(stages []stage, ev bsoncore.Document) (bsoncore.Document, bool, error) {
	if len(stages) == 0 {
		return ev, true, nil
	}
	d, err := toD(ev)
	if err != nil {
		return nil, false, err
	}
	list := bsonkit.List{&d}
	for _, st := range stages {
		if list, err = st(list); err != nil {
			return nil, false, asCmdError(err, codeBadValue)
		}
	}
	if len(list) == 0 {
		return nil, false, nil
	}
	out, err := fromD(*list[0])
	return out, err == nil, err
}

// parseStages compiles pipeline stages. In a change stream only the
// per-document stages are allowed, as in MongoDB.
func parseStages(pipeline []bsoncore.Document, changeStream bool) ([]stage, error) {
	var out []stage
	for _, raw := range pipeline {
		d, err := toD(raw)
		if err != nil || len(d) != 1 {
			return nil, errf(codeFailedToParse, "a pipeline stage specification object must contain exactly one field")
		}
		name, arg := d[0].Key, d[0].Value
		perDoc := map[string]bool{"$match": true, "$project": true, "$addFields": true, "$set": true, "$unset": true, "$replaceRoot": true, "$replaceWith": true}
		if changeStream && !perDoc[name] {
			return nil, errf(codeIllegalOperation, "%s is not permitted in a $changeStream pipeline", name)
		}
		st, err := compileStage(name, arg)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func compileStage(name string, arg interface{}) (stage, error) {
	argDoc, isDoc := arg.(bson.D)
	switch name {
	case "$match":
		if !isDoc {
			return nil, errf(codeTypeMismatch, "$match must be a document")
		}
		return func(list bsonkit.List) (bsonkit.List, error) {
			return mongokit.Filter(list, &argDoc, 0)
		}, nil
	case "$sort":
		if !isDoc {
			return nil, errf(codeTypeMismatch, "$sort must be a document")
		}
		if _, err := mongokit.Columns(&argDoc); err != nil {
			return nil, errf(codeBadValue, "$sort: %v", err)
		}
		return func(list bsonkit.List) (bsonkit.List, error) { return list, sortDocs(list, &argDoc) }, nil
	case "$limit", "$skip":
		n, ok := toInt(arg)
		if !ok || n < 0 {
			return nil, errf(codeBadValue, "%s must be a non-negative number", name)
		}
		if name == "$limit" {
			return func(list bsonkit.List) (bsonkit.List, error) { return list[:min(n, len(list))], nil }, nil
		}
		return func(list bsonkit.List) (bsonkit.List, error) { return list[min(n, len(list)):], nil }, nil
	case "$project":
		if !isDoc {
			return nil, errf(codeTypeMismatch, "$project must be a document")
		}
		return projectStage(argDoc)
	case "$count":
		field, ok := arg.(string)
		if !ok || field == "" || strings.HasPrefix(field, "$") || strings.Contains(field, ".") {
			return nil, errf(codeBadValue, "the count field must be a non-empty string without '$' or '.'")
		}
		return func(list bsonkit.List) (bsonkit.List, error) {
			if len(list) == 0 {
				return nil, nil
			}
			return bsonkit.List{&bson.D{{Key: field, Value: int32(len(list))}}}, nil
		}, nil
	case "$group":
		if !isDoc {
			return nil, errf(codeTypeMismatch, "$group must be a document")
		}
		return groupStage(argDoc)
	case "$addFields", "$set":
		if !isDoc {
			return nil, errf(codeTypeMismatch, "%s must be a document", name)
		}
		return func(list bsonkit.List) (bsonkit.List, error) {
			for _, d := range list {
				for _, f := range argDoc {
					v, err := evalExpr(d, f.Value)
					if err != nil {
						return nil, err
					}
					if _, err := bsonkit.Put(d, f.Key, v, false); err != nil {
						return nil, err
					}
				}
			}
			return list, nil
		}, nil
	case "$unset":
		var fields []string
		switch x := arg.(type) {
		case string:
			fields = []string{x}
		case bson.A:
			for _, f := range x {
				s, ok := f.(string)
				if !ok {
					return nil, errf(codeTypeMismatch, "$unset entries must be strings")
				}
				fields = append(fields, s)
			}
		default:
			return nil, errf(codeTypeMismatch, "$unset must be a string or an array of strings")
		}
		return func(list bsonkit.List) (bsonkit.List, error) {
			for _, d := range list {
				for _, f := range fields {
					bsonkit.Unset(d, f)
				}
			}
			return list, nil
		}, nil
	case "$replaceRoot", "$replaceWith":
		expr := arg
		if name == "$replaceRoot" {
			if !isDoc || len(argDoc) != 1 || argDoc[0].Key != "newRoot" {
				return nil, errf(codeFailedToParse, "$replaceRoot requires exactly a newRoot field")
			}
			expr = argDoc[0].Value
		}
		return func(list bsonkit.List) (bsonkit.List, error) {
			out := make(bsonkit.List, 0, len(list))
			for _, d := range list {
				v, err := evalExpr(d, expr)
				if err != nil {
					return nil, err
				}
				nd, ok := v.(bson.D)
				if !ok {
					return nil, errf(40228, "'newRoot' expression must evaluate to an object, but resulting value was of type %T", v)
				}
				out = append(out, &nd)
			}
			return out, nil
		}, nil
	case "$unwind":
		path, _ := arg.(string)
		if isDoc {
			for _, e := range argDoc {
				if e.Key == "path" {
					path, _ = e.Value.(string)
				}
			}
		}
		if !strings.HasPrefix(path, "$") {
			return nil, errf(codeFailedToParse, "$unwind path must be a '$'-prefixed field path")
		}
		path = path[1:]
		return func(list bsonkit.List) (bsonkit.List, error) {
			var out bsonkit.List
			for _, d := range list {
				arr, ok := bsonkit.Get(d, path).(bson.A)
				if !ok {
					continue
				}
				for _, item := range arr {
					nd := bsonkit.Clone(d)
					if _, err := bsonkit.Put(nd, path, item, false); err != nil {
						return nil, err
					}
					out = append(out, nd)
				}
			}
			return out, nil
		}, nil
	default:
		return nil, errf(codeLocation40324, "Unrecognized pipeline stage name: '%s'", name)
	}
}

// projectStage is $project: mongokit's find-style projection, extended with
// computed fields ({field: "$path"} or an expression document).
func projectStage(spec bson.D) (stage, error) {
	var plain, computed bson.D
	for _, e := range spec {
		switch v := e.Value.(type) {
		case string:
			computed = append(computed, e)
		case bson.D:
			if len(v) > 0 && strings.HasPrefix(v[0].Key, "$") && v[0].Key != "$slice" {
				computed = append(computed, e)
				continue
			}
			plain = append(plain, e)
		default:
			plain = append(plain, e)
		}
	}
	p, err := compileProjection(plain)
	if err != nil {
		return nil, err
	}
	if len(computed) > 0 && len(plain) > 0 && !p.inclusion && !(len(plain) == 1 && plain[0].Key == "_id") {
		return nil, errf(31254, "Cannot use expressions in an exclusion projection")
	}
	return func(list bsonkit.List) (bsonkit.List, error) {
		out := make(bsonkit.List, 0, len(list))
		for _, d := range list {
			// Inclusion (possibly plus computed fields) or plain exclusion
			// go through the projection; computed fields alone start from
			// just the _id.
			var nd bsonkit.Doc
			if p.inclusion || len(computed) == 0 {
				pd := p.apply(*d)
				nd = &pd
			} else {
				nd = &bson.D{}
				if id := bsonkit.Get(d, "_id"); id != bsonkit.Missing && !p.hideID {
					*nd = append(*nd, bson.E{Key: "_id", Value: id})
				}
			}
			for _, e := range computed {
				v, err := evalExpr(d, e.Value)
				if err != nil {
					return nil, err
				}
				if v == bsonkit.Missing {
					continue
				}
				if _, err := bsonkit.Put(nd, e.Key, v, false); err != nil {
					return nil, err
				}
			}
			out = append(out, nd)
		}
		return out, nil
	}, nil
}

// evalExpr evaluates the small expression language used by $group,
// $addFields and $project: "$field.path" references, {$literal: v}, and
// documents/arrays of expressions. Other operators are refused.
func evalExpr(doc bsonkit.Doc, expr interface{}) (interface{}, error) {
	switch x := expr.(type) {
	case string:
		if strings.HasPrefix(x, "$$ROOT") {
			return *doc, nil
		}
		if strings.HasPrefix(x, "$") {
			return bsonkit.Get(doc, x[1:]), nil
		}
		return x, nil
	case bson.D:
		if len(x) == 1 && x[0].Key == "$literal" {
			return x[0].Value, nil
		}
		out := make(bson.D, 0, len(x))
		for _, e := range x {
			if strings.HasPrefix(e.Key, "$") {
				return nil, errf(codeLocation40324, "unsupported expression operator %s", e.Key)
			}
			v, err := evalExpr(doc, e.Value)
			if err != nil {
				return nil, err
			}
			if v != bsonkit.Missing {
				out = append(out, bson.E{Key: e.Key, Value: v})
			}
		}
		return out, nil
	case bson.A:
		out := make(bson.A, 0, len(x))
		for _, item := range x {
			v, err := evalExpr(doc, item)
			if err != nil {
				return nil, err
			}
			if v == bsonkit.Missing {
				v = nil
			}
			out = append(out, v)
		}
		return out, nil
	default:
		return x, nil
	}
}

// groupStage is $group with accumulators $sum, $avg, $first, $last, $min,
// $max, $push and $addToSet. Groups keep first-seen order.
func groupStage(spec bson.D) (stage, error) {
	var idExpr interface{}
	type acc struct {
		field, op string
		arg       interface{}
	}
	var accs []acc
	hasID := false
	for _, e := range spec {
		if e.Key == "_id" {
			idExpr, hasID = e.Value, true
			continue
		}
		ad, ok := e.Value.(bson.D)
		if !ok || len(ad) != 1 {
			return nil, errf(40234, "The field '%s' must be an accumulator object", e.Key)
		}
		switch ad[0].Key {
		case "$sum", "$avg", "$first", "$last", "$min", "$max", "$push", "$addToSet":
		default:
			return nil, errf(15952, "unknown group operator '%s'", ad[0].Key)
		}
		accs = append(accs, acc{field: e.Key, op: ad[0].Key, arg: ad[0].Value})
	}
	if !hasID {
		return nil, errf(15955, "a group specification must include an _id")
	}
	return func(list bsonkit.List) (bsonkit.List, error) {
		type group struct {
			key    interface{}
			values []interface{} // per accumulator
			counts []int
		}
		var groups []*group
		find := func(key interface{}) *group {
			for _, g := range groups {
				if bsonkit.Compare(g.key, key) == 0 {
					return g
				}
			}
			g := &group{key: key, values: make([]interface{}, len(accs)), counts: make([]int, len(accs))}
			for i := range g.values {
				g.values[i] = bsonkit.Missing
			}
			groups = append(groups, g)
			return g
		}
		for _, d := range list {
			key, err := evalExpr(d, idExpr)
			if err != nil {
				return nil, err
			}
			if key == bsonkit.Missing {
				key = nil
			}
			g := find(key)
			for i, a := range accs {
				v, err := evalExpr(d, a.arg)
				if err != nil {
					return nil, err
				}
				cur := g.values[i]
				switch a.op {
				case "$sum", "$avg":
					if c, _ := bsonkit.Inspect(v); c != bsonkit.Number {
						continue
					}
					if cur == bsonkit.Missing {
						cur = int32(0)
					}
					g.values[i] = bsonkit.Add(cur, v)
					g.counts[i]++
				case "$first":
					if g.counts[i] == 0 {
						g.values[i] = v
					}
					g.counts[i]++
				case "$last":
					g.values[i] = v
				case "$min", "$max":
					if v == bsonkit.Missing || v == nil {
						continue
					}
					if cur == bsonkit.Missing || (a.op == "$min") == (bsonkit.Compare(v, cur) < 0) {
						g.values[i] = v
					}
				case "$push", "$addToSet":
					arr, _ := cur.(bson.A)
					if v == bsonkit.Missing {
						continue
					}
					if a.op == "$addToSet" {
						dup := false
						for _, have := range arr {
							if bsonkit.Compare(have, v) == 0 {
								dup = true
								break
							}
						}
						if dup {
							continue
						}
					}
					g.values[i] = append(arr, v)
				}
			}
		}
		out := make(bsonkit.List, 0, len(groups))
		for _, g := range groups {
			d := bson.D{{Key: "_id", Value: g.key}}
			for i, a := range accs {
				v := g.values[i]
				switch {
				case a.op == "$avg" && g.counts[i] > 0:
					f, _ := toFloat(v)
					v = f / float64(g.counts[i])
				case v == bsonkit.Missing && a.op == "$sum":
					v = int32(0)
				case v == bsonkit.Missing && (a.op == "$push" || a.op == "$addToSet"):
					v = bson.A{}
				case v == bsonkit.Missing:
					v = nil
				}
				d = append(d, bson.E{Key: a.field, Value: v})
			}
			out = append(out, &d)
		}
		return out, nil
	}, nil
}

func toInt(v interface{}) (int, bool) {
	switch n := v.(type) {
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case float64:
		return int(n), n == float64(int(n))
	}
	return 0, false
}

func toFloat(v interface{}) (float64, bool) {
	switch n := v.(type) {
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case primitive.Decimal128:
		f, err := strconv.ParseFloat(n.String(), 64)
		return f, err == nil
	}
	return 0, false
}
