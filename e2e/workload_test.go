package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// The workload writes random documents to the primary and keeps a model of what DR must end up
// holding. It runs in one goroutine, so after each write the primary's document (read back) is
// the document's current version; the model keeps, per namespace and _id, the current version
// (or none once deleted) and the version just before the last delete.

// ns is a namespace the workload writes to.
type ns struct{ db, coll string }

func (n ns) String() string { return n.db + "." + n.coll }

// idKey identifies an _id by BSON type and bytes. The workload never makes two _ids that the
// server would treat as equal with different bytes (numbers are unique across numeric types).
type idKey string

func keyOf(id bson.RawValue) idKey { return idKey(append([]byte{byte(id.Type)}, id.Value...)) }

// docModel is one _id's history in one namespace.
type docModel struct {
	id            bson.RawValue
	current       bson.Raw // nil while deleted
	beforeLastDel bson.Raw // the version the last delete removed; nil if never deleted
	// deletedVersions are the versions its deletes removed, in order: what the archive's
	// before-images must be.
	deletedVersions []bson.Raw
}

// nsModel is one namespace's documents.
type nsModel struct {
	docs  map[idKey]*docModel
	order []idKey // insertion order of keys, for reproducible random picks
}

// workload is the random writer and its model.
type workload struct {
	rng     *rand.Rand
	primary *mongo.Client
	watched []ns // replicated namespaces
	others  []ns // namespaces capture must ignore
	models  map[ns]*nsModel
	nextNum int64 // numeric _ids and values are unique across types

	// Counts, for the report and the archive check.
	ops     map[string]int
	deletes map[ns]int // delete events produced, per namespace
	bigDocs int        // documents over KAFKA_MAX_MESSAGE_BYTES (claim-checked by capture)
	bigSize int        // size of a big string field; 0: no big documents
}

func newWorkload(rng *rand.Rand, primary *mongo.Client, watched, others []ns, bigSize int) *workload {
	w := &workload{
		rng: rng, primary: primary, watched: watched, others: others, bigSize: bigSize,
		models: map[ns]*nsModel{}, ops: map[string]int{}, deletes: map[ns]int{}, nextNum: 1,
	}
	for _, n := range slices.Concat(watched, others) {
		w.models[n] = &nsModel{docs: map[idKey]*docModel{}}
	}
	return w
}

// run performs n operations, sleeping up to maxPause between them so that capture and apply
// interleave with the writes.
func (w *workload) run(ctx context.Context, n int, maxPause time.Duration) error {
	for i := range n {
		if err := w.step(ctx); err != nil {
			return fmt.Errorf("workload operation %d: %w", i, err)
		}
		if maxPause > 0 {
			time.Sleep(time.Duration(w.rng.Int64N(int64(maxPause))))
		}
	}
	return nil
}

// step performs one random operation: mostly on watched namespaces, some on ignored ones.
func (w *workload) step(ctx context.Context) error {
	target := w.watched[w.rng.IntN(len(w.watched))]
	if len(w.others) > 0 && w.rng.IntN(4) == 0 {
		target = w.others[w.rng.IntN(len(w.others))]
	}
	m := w.models[target]
	live, dead := m.live(), m.dead()
	x := w.rng.Float64()
	switch {
	case len(live) == 0 || x < 0.25:
		if len(dead) > 0 && w.rng.IntN(3) == 0 {
			return w.reinsert(ctx, target, dead[w.rng.IntN(len(dead))])
		}
		return w.insert(ctx, target)
	case x < 0.55:
		return w.update(ctx, target, live[w.rng.IntN(len(live))])
	case x < 0.68:
		return w.replace(ctx, target, live[w.rng.IntN(len(live))])
	case x < 0.72 && len(dead) > 0:
		return w.upsert(ctx, target, dead[w.rng.IntN(len(dead))])
	case x < 0.78 && len(live) >= 3:
		return w.deleteMany(ctx, target, live)
	default:
		return w.deleteOne(ctx, target, live[w.rng.IntN(len(live))])
	}
}

func (m *nsModel) live() []*docModel {
	var out []*docModel
	for _, k := range m.order {
		if d := m.docs[k]; d.current != nil {
			out = append(out, d)
		}
	}
	return out
}

func (m *nsModel) dead() []*docModel {
	var out []*docModel
	for _, k := range m.order {
		if d := m.docs[k]; d.current == nil {
			out = append(out, d)
		}
	}
	return out
}

func (w *workload) coll(n ns) *mongo.Collection { return w.primary.Database(n.db).Collection(n.coll) }

func (w *workload) insert(ctx context.Context, n ns) error {
	id := w.newID()
	doc := append(bson.D{{Key: "_id", Value: id}}, w.body()...)
	if _, err := w.coll(n).InsertOne(ctx, doc); err != nil {
		return fmt.Errorf("insert into %s: %w", n, err)
	}
	w.ops["insert"]++
	raw, err := bson.Marshal(bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return err
	}
	rv := bson.Raw(raw).Lookup("_id")
	m := w.models[n]
	k := keyOf(rv)
	m.docs[k] = &docModel{id: rv}
	m.order = append(m.order, k)
	return w.refresh(ctx, n, m.docs[k])
}

func (w *workload) reinsert(ctx context.Context, n ns, d *docModel) error {
	doc := append(bson.D{{Key: "_id", Value: d.id}}, w.body()...)
	if _, err := w.coll(n).InsertOne(ctx, doc); err != nil {
		return fmt.Errorf("re-insert into %s: %w", n, err)
	}
	w.ops["reinsert"]++
	return w.refresh(ctx, n, d)
}

// update changes nested paths ($set with dotted names), adds and removes fields ($unset) and
// increments a counter.
func (w *workload) update(ctx context.Context, n ns, d *docModel) error {
	set := bson.D{}
	unset := bson.D{}
	var doc bson.D
	if err := bson.Unmarshal(d.current, &doc); err != nil {
		return err
	}
	for range 1 + w.rng.IntN(3) {
		switch w.rng.IntN(6) {
		case 0:
			set = append(set, bson.E{Key: "nested.a.b", Value: w.value()})
		case 1:
			set = append(set, bson.E{Key: fmt.Sprintf("nested.k%d", w.rng.IntN(4)), Value: w.value()})
		case 2:
			set = append(set, bson.E{Key: fmt.Sprintf("f%d", w.rng.IntN(6)), Value: w.value()})
		case 3:
			unset = append(unset, bson.E{Key: "nested.a.b", Value: ""})
		case 4:
			if len(doc) > 1 {
				if f := doc[1+w.rng.IntN(len(doc)-1)].Key; !hasKey(set, f) {
					unset = append(unset, bson.E{Key: f, Value: ""})
				}
			}
		case 5:
			set = append(set, bson.E{Key: "nested.a.arr", Value: bson.A{w.value(), w.value()}})
		}
	}
	update := bson.D{}
	if len(set) > 0 {
		update = append(update, bson.E{Key: "$set", Value: dedupe(set)})
	}
	if unset = conflictFree(dedupe(unset), set); len(unset) > 0 {
		update = append(update, bson.E{Key: "$unset", Value: unset})
	}
	if len(update) == 0 {
		return nil
	}
	if _, err := w.coll(n).UpdateOne(ctx, bson.D{{Key: "_id", Value: d.id}}, update); err != nil {
		return fmt.Errorf("update %s in %s with %v: %w", d.id, n, update, err)
	}
	w.ops["update"]++
	return w.refresh(ctx, n, d)
}

func (w *workload) replace(ctx context.Context, n ns, d *docModel) error {
	if _, err := w.coll(n).ReplaceOne(ctx, bson.D{{Key: "_id", Value: d.id}}, w.body()); err != nil {
		return fmt.Errorf("replace %s in %s: %w", d.id, n, err)
	}
	w.ops["replace"]++
	return w.refresh(ctx, n, d)
}

// upsert brings a deleted _id back with an update that inserts.
func (w *workload) upsert(ctx context.Context, n ns, d *docModel) error {
	update := bson.D{{Key: "$set", Value: bson.D{{Key: "revived", Value: true}, {Key: "nested.a.b", Value: w.value()}}}}
	if _, err := w.coll(n).UpdateOne(ctx, bson.D{{Key: "_id", Value: d.id}}, update, options.Update().SetUpsert(true)); err != nil {
		return fmt.Errorf("upsert %s in %s: %w", d.id, n, err)
	}
	w.ops["upsert"]++
	return w.refresh(ctx, n, d)
}

func (w *workload) deleteOne(ctx context.Context, n ns, d *docModel) error {
	res, err := w.coll(n).DeleteOne(ctx, bson.D{{Key: "_id", Value: d.id}})
	if err != nil {
		return fmt.Errorf("delete %s from %s: %w", d.id, n, err)
	}
	if res.DeletedCount != 1 {
		return fmt.Errorf("delete %s from %s deleted %d documents", d.id, n, res.DeletedCount)
	}
	w.ops["delete"]++
	w.deleted(n, d)
	return nil
}

// deleteMany deletes two or three documents with one command ($in), which makes one delete
// event each.
func (w *workload) deleteMany(ctx context.Context, n ns, live []*docModel) error {
	picked := make([]*docModel, 0, 3)
	ids := bson.A{}
	for _, i := range w.rng.Perm(len(live))[:2+w.rng.IntN(2)] {
		picked = append(picked, live[i])
		ids = append(ids, live[i].id)
	}
	res, err := w.coll(n).DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return fmt.Errorf("deleteMany from %s: %w", n, err)
	}
	if int(res.DeletedCount) != len(picked) {
		return fmt.Errorf("deleteMany from %s deleted %d documents, want %d", n, res.DeletedCount, len(picked))
	}
	w.ops["deleteMany"]++
	for _, d := range picked {
		w.deleted(n, d)
	}
	return nil
}

func (w *workload) deleted(n ns, d *docModel) {
	d.beforeLastDel, d.current = d.current, nil
	d.deletedVersions = append(d.deletedVersions, d.beforeLastDel)
	w.deletes[n]++
}

// refresh reads the document back from the primary: its current version.
func (w *workload) refresh(ctx context.Context, n ns, d *docModel) error {
	raw, err := w.coll(n).FindOne(ctx, bson.D{{Key: "_id", Value: d.id}}).Raw()
	if err != nil {
		return fmt.Errorf("read back %s from %s: %w", d.id, n, err)
	}
	d.current = slices.Clone(raw)
	if w.bigSize > 0 && len(raw) > w.bigSize {
		w.bigDocs++
	}
	return nil
}

// newID returns an _id of a random type. Numbers are unique across numeric types.
func (w *workload) newID() any {
	n := w.nextNum
	w.nextNum++
	switch w.rng.IntN(8) {
	case 0, 1:
		var oid primitive.ObjectID
		for i := range oid {
			oid[i] = byte(w.rng.IntN(256))
		}
		return oid
	case 2:
		return int32(n)
	case 3:
		return n + 1<<40
	case 4:
		return fmt.Sprintf("s-%d-%x", n, w.rng.Uint32())
	case 5:
		return float64(n) + 0.5
	case 6:
		return bson.D{{Key: "tenant", Value: fmt.Sprintf("t%d", w.rng.IntN(3))}, {Key: "seq", Value: n}}
	default:
		b := make([]byte, 16)
		for i := range b {
			b[i] = byte(w.rng.IntN(256))
		}
		return primitive.Binary{Subtype: 4, Data: b}
	}
}

// body returns a random document body (no _id) with many BSON types, a nested document that
// updates address by dotted paths, and, when bigSize is set, sometimes a field large enough to
// exceed the Kafka message limit.
func (w *workload) body() bson.D {
	candidates := bson.D{
		{Key: "s", Value: fmt.Sprintf("str-%d", w.rng.IntN(1000))},
		{Key: "i", Value: int32(w.rng.IntN(1000))},
		{Key: "l", Value: w.rng.Int64()},
		{Key: "d", Value: w.rng.Float64() * 1000},
		{Key: "dec", Value: decimal(w.rng.IntN(100000))},
		{Key: "b", Value: w.rng.IntN(2) == 0},
		{Key: "null", Value: nil},
		{Key: "t", Value: primitive.NewDateTimeFromTime(time.UnixMilli(1_600_000_000_000 + w.rng.Int64N(1e11)))},
		{Key: "bin", Value: primitive.Binary{Subtype: 0, Data: []byte{byte(w.rng.IntN(256)), 1, 2}}},
		{Key: "re", Value: primitive.Regex{Pattern: "^a.*z$", Options: "i"}},
		{Key: "ts", Value: primitive.Timestamp{T: uint32(w.rng.IntN(1 << 30)), I: 1}},
		{Key: "min", Value: primitive.MinKey{}},
		{Key: "max", Value: primitive.MaxKey{}},
		{Key: "arr", Value: bson.A{int32(1), "two", bson.D{{Key: "three", Value: 3.0}}, bson.A{}, nil}},
		{Key: "nested", Value: bson.D{{Key: "a", Value: bson.D{{Key: "b", Value: w.value()}, {Key: "c", Value: bson.A{w.value()}}}}, {Key: "k0", Value: w.value()}}},
	}
	var out bson.D
	for _, e := range candidates {
		if w.rng.IntN(10) < 7 {
			out = append(out, e)
		}
	}
	if w.bigSize > 0 && w.rng.IntN(40) == 0 {
		big := make([]byte, w.bigSize)
		for i := range big {
			big[i] = 'a' + byte(w.rng.IntN(26))
		}
		out = append(out, bson.E{Key: "big", Value: string(big)})
	}
	return out
}

// value returns a small random value of a random type.
func (w *workload) value() any {
	switch w.rng.IntN(7) {
	case 0:
		return int32(w.rng.IntN(100))
	case 1:
		return fmt.Sprintf("v%d", w.rng.IntN(100))
	case 2:
		return w.rng.Float64()
	case 3:
		return bson.D{{Key: "deep", Value: bson.D{{Key: "er", Value: int64(w.rng.IntN(100))}}}}
	case 4:
		return bson.A{int32(w.rng.IntN(10)), "x"}
	case 5:
		return decimal(w.rng.IntN(1000))
	default:
		return nil
	}
}

func decimal(n int) primitive.Decimal128 {
	d, err := primitive.ParseDecimal128(fmt.Sprintf("%d.25", n))
	if err != nil {
		panic(err)
	}
	return d
}

func hasKey(d bson.D, k string) bool {
	return slices.ContainsFunc(d, func(e bson.E) bool { return e.Key == k })
}

// dedupe keeps the last element of each key: one update may not name a path twice.
func dedupe(d bson.D) bson.D {
	var out bson.D
	for i, e := range d {
		if !slices.ContainsFunc(d[i+1:], func(l bson.E) bool { return l.Key == e.Key }) {
			out = append(out, e)
		}
	}
	return out
}

// conflictFree drops the $unset paths that conflict with a $set path or an earlier $unset path
// (one is a prefix of the other, or they are equal): the server refuses such an update.
func conflictFree(unset, set bson.D) bson.D {
	var out bson.D
	for _, u := range unset {
		clash := func(s bson.E) bool { return conflicts(u.Key, s.Key) }
		if !slices.ContainsFunc(set, clash) && !slices.ContainsFunc(out, clash) {
			out = append(out, u)
		}
	}
	return out
}

func conflicts(a, b string) bool {
	return a == b || (len(a) < len(b) && b[:len(a)+1] == a+".") || (len(b) < len(a) && a[:len(b)+1] == b+".")
}
