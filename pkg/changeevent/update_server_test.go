package changeevent_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// conformanceURI, when set, runs the property test against a real replica-set primary too.
const conformanceURI = "DOCDBDR_CONFORMANCE_URI"

// TestApplyToMatchesTheServer is the property behind apply's event-time versions: for random
// documents and random operator updates ($set of new, existing and nested fields and array
// elements, $unset, $inc, $mul, $min, $max, $rename, $push with and without modifiers, $pop,
// $addToSet, $pull, $currentDate), the post-image the server stores equals, byte for byte,
// ApplyTo(pre-image, the updateDescription of the update's change event).
func TestApplyToMatchesTheServer(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { checkApplyTo(t, mongotest.Client(t), 1, 600) })
	if uri := os.Getenv(conformanceURI); uri != "" {
		t.Run("real", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
			checkApplyTo(t, c, 2, 600)
		})
	}
}

func checkApplyTo(t *testing.T, client *mongo.Client, seed uint64, updates int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	coll := client.Database("applyto").Collection(fmt.Sprintf("c%d", time.Now().UnixNano()))
	t.Cleanup(func() { _ = coll.Drop(context.Background()) })
	rng := rand.New(rand.NewPCG(seed, 7))
	const docs = 12
	for i := range docs {
		if _, err := coll.InsertOne(ctx, randomDoc(rng, int32(i))); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := coll.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close(ctx)

	compared, byOp := 0, map[string]int{}
	for n := 0; n < updates; n++ {
		id := int32(rng.IntN(docs))
		pre, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
		if err != nil {
			t.Fatal(err)
		}
		upd, ops := randomUpdate(rng, pre)
		res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, upd)
		if err != nil || res.ModifiedCount == 0 {
			continue // a conflicting or no-op random update: no event
		}
		if !stream.Next(ctx) {
			t.Fatalf("no change event for update %d: %v", n, stream.Err())
		}
		ev, err := changeevent.FromChangeStream(stream.Current)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Operation != changeevent.Update || ev.UpdateDescription == nil {
			t.Fatalf("update %d: event %s without updateDescription", n, ev.Operation)
		}
		post, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ev.UpdateDescription.ApplyTo(pre)
		if err != nil {
			t.Fatalf("update %d %s on %s:\nApplyTo: %v\nevent %s", n, ext(upd), ext(pre), err, ext(stream.Current))
		}
		if !bytes.Equal(got, post) {
			t.Fatalf("update %d %s\n pre %s\nevent %s\nserver  %s\nApplyTo %s", n, ext(upd), ext(pre),
				ext(stream.Current), ext(post), ext(got))
		}
		compared++
		for _, op := range ops {
			byOp[op]++
		}
	}
	t.Logf("compared %d of %d updates, by operator %v", compared, updates, byOp)
	if compared < updates/3 {
		t.Fatalf("only %d of %d random updates changed a document: the generator is too weak", compared, updates)
	}
	for _, op := range updateOps {
		if byOp[op] == 0 {
			t.Errorf("no compared update used %s", op)
		}
	}
}

func ext(v any) string {
	b, err := bson.MarshalExtJSON(v, true, false)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// randomValue is a scalar of a random BSON type, or (depth allowing) a document or an array.
func randomValue(rng *rand.Rand, depth int) any {
	k := rng.IntN(14)
	if depth >= 3 && k >= 12 {
		k = rng.IntN(12)
	}
	switch k {
	case 0:
		return int32(rng.IntN(100))
	case 1:
		return int64(rng.IntN(1000)) << 33
	case 2:
		return float64(rng.IntN(100)) / 4
	case 3:
		return "s" + strconv.Itoa(rng.IntN(50))
	case 4:
		return rng.IntN(2) == 0
	case 5:
		return nil
	case 6:
		return primitive.NewDateTimeFromTime(time.Unix(int64(rng.IntN(1<<30)), 0))
	case 7:
		return primitive.NewObjectIDFromTimestamp(time.Unix(int64(rng.IntN(1<<30)), 0))
	case 8:
		d, _ := primitive.ParseDecimal128(strconv.Itoa(rng.IntN(1000)) + ".5")
		return d
	case 9:
		return primitive.Binary{Subtype: byte(rng.IntN(2) * 4), Data: []byte{byte(rng.IntN(256))}}
	case 10:
		return primitive.Timestamp{T: uint32(rng.IntN(1 << 30)), I: 1}
	case 11:
		return int32(-rng.IntN(100))
	case 12:
		n := rng.IntN(4)
		d := bson.D{}
		for i := range n {
			d = append(d, bson.E{Key: fieldName(rng, i), Value: randomValue(rng, depth+1)})
		}
		return dedupe(d)
	default:
		n := rng.IntN(5)
		a := bson.A{}
		for range n {
			a = append(a, randomValue(rng, depth+1))
		}
		return a
	}
}

func fieldName(rng *rand.Rand, i int) string {
	return string(rune('a'+rng.IntN(8))) + strconv.Itoa(i%3)
}

func dedupe(d bson.D) bson.D {
	seen := map[string]bool{}
	out := bson.D{}
	for _, e := range d {
		if !seen[e.Key] {
			seen[e.Key] = true
			out = append(out, e)
		}
	}
	return out
}

func randomDoc(rng *rand.Rand, id int32) bson.D {
	d := bson.D{{Key: "_id", Value: id}}
	for i := range 3 + rng.IntN(5) {
		d = append(d, bson.E{Key: fieldName(rng, i), Value: randomValue(rng, 0)})
	}
	return dedupe(d)
}

// paths lists the dotted paths of a document (into embedded documents and array elements),
// with the value at each.
func paths(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case bson.D:
		for _, e := range x {
			p := e.Key
			if prefix != "" {
				p = prefix + "." + e.Key
			}
			out[p] = e.Value
			paths(p, e.Value, out)
		}
	case bson.A:
		for i, e := range x {
			p := prefix + "." + strconv.Itoa(i)
			out[p] = e
			paths(p, e, out)
		}
	}
}

var updateOps = []string{"$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$push", "$pop", "$addToSet", "$pull", "$currentDate"}

// randomUpdate builds an operator update of one to three operators on distinct top-level fields
// of pre (so they do not conflict), and names the operators used.
func randomUpdate(rng *rand.Rand, pre bson.Raw) (bson.D, []string) {
	var doc bson.D
	if err := bson.Unmarshal(pre, &doc); err != nil {
		panic(err)
	}
	all := map[string]any{}
	paths("", doc, all)
	var keys []string
	for p := range all {
		if p != "_id" && !strings.HasPrefix(p, "_id.") {
			keys = append(keys, p)
		}
	}
	sort.Strings(keys)
	used := map[string]bool{"_id": true}
	top := func(p string) string { return strings.SplitN(p, ".", 2)[0] }
	pick := func(filter func(string, any) bool) (string, bool) {
		var c []string
		for _, k := range keys {
			if !used[top(k)] && filter(k, all[k]) {
				c = append(c, k)
			}
		}
		if len(c) == 0 {
			return "", false
		}
		k := c[rng.IntN(len(c))]
		used[top(k)] = true
		return k, true
	}
	fresh := func() string {
		for {
			n := "n" + strconv.Itoa(rng.IntN(30))
			if _, ok := all[n]; !ok && !used[n] {
				used[n] = true
				return n
			}
		}
	}
	isArr := func(_ string, v any) bool { _, ok := v.(bson.A); return ok }
	isNum := func(_ string, v any) bool {
		switch v.(type) {
		case int32, int64, float64:
			return true
		}
		return false
	}
	anyPath := func(string, any) bool { return true }
	byOp := map[string]bson.D{}
	var order, names []string
	add := func(op, path string, v any) {
		if _, ok := byOp[op]; !ok {
			order = append(order, op)
		}
		byOp[op] = append(byOp[op], bson.E{Key: path, Value: v})
		names = append(names, op)
	}
	for range 1 + rng.IntN(3) {
		switch rng.IntN(16) {
		case 0, 1: // $set of an existing path (field, nested field, array element)
			if p, ok := pick(anyPath); ok {
				add("$set", p, randomValue(rng, 1))
			}
		case 2: // $set of a new top-level field
			add("$set", fresh(), randomValue(rng, 0))
		case 3: // $set of a new field inside an existing document, or a new nested path
			if p, ok := pick(func(_ string, v any) bool { _, ok := v.(bson.D); return ok }); ok {
				add("$set", p+".x"+strconv.Itoa(rng.IntN(3)), randomValue(rng, 1))
			} else {
				add("$set", fresh()+".deep.k", randomValue(rng, 2))
			}
		case 4: // $set of an array index at or past the end
			if p, ok := pick(isArr); ok {
				add("$set", p+"."+strconv.Itoa(len(all[p].(bson.A))+rng.IntN(3)), randomValue(rng, 1))
			}
		case 5, 6:
			if p, ok := pick(anyPath); ok {
				add("$unset", p, "")
			}
		case 7:
			if p, ok := pick(isNum); ok {
				add("$inc", p, int32(1+rng.IntN(5)))
			} else {
				add("$inc", fresh(), int64(rng.IntN(5)))
			}
		case 8:
			if p, ok := pick(isNum); ok {
				add("$mul", p, int32(2))
			}
		case 9:
			if p, ok := pick(isNum); ok {
				add([]string{"$min", "$max"}[rng.IntN(2)], p, int32(rng.IntN(60)))
			}
		case 10:
			if p, ok := pick(func(k string, _ any) bool { return !strings.Contains(k, ".") }); ok {
				add("$rename", p, fresh())
			}
		case 11:
			if p, ok := pick(isArr); ok {
				if rng.IntN(2) == 0 {
					add("$push", p, randomValue(rng, 2))
				} else {
					add("$push", p, bson.D{{Key: "$each", Value: bson.A{int32(1), int32(2)}}, {Key: "$slice", Value: int32(rng.IntN(4))}})
				}
			} else {
				add("$push", fresh(), int32(1))
			}
		case 12:
			if p, ok := pick(isArr); ok {
				add("$pop", p, []int32{1, -1}[rng.IntN(2)])
			}
		case 13:
			if p, ok := pick(isArr); ok {
				add("$addToSet", p, int32(rng.IntN(3)))
			}
		case 14:
			if p, ok := pick(isArr); ok {
				add("$pull", p, bson.D{{Key: "$in", Value: bson.A{int32(1), nil, true}}})
			}
		case 15:
			add("$currentDate", fresh(), true)
		}
	}
	if len(order) == 0 {
		add("$set", fresh(), int32(0))
	}
	upd := bson.D{}
	for _, op := range order {
		upd = append(upd, bson.E{Key: op, Value: byOp[op]})
	}
	return upd, names
}
