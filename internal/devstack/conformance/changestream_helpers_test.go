package conformance

// Helpers for the change stream tests: opening streams, reading events with a deadline,
// asserting silence, and a decoded view of a change event.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// awaitTime is the maxAwaitTimeMS of every stream here: short, so an idle getMore returns
// quickly and "no event" can be asserted without long waits.
const awaitTime = 200 * time.Millisecond

// eventTimeout bounds the wait for one expected event.
const eventTimeout = 15 * time.Second

// watcher is what a collection, a database and a client have in common.
type watcher interface {
	Watch(ctx context.Context, pipeline any, opts ...*options.ChangeStreamOptions) (*mongo.ChangeStream, error)
}

// streamOpts is the base options of every stream in this suite.
func streamOpts() *options.ChangeStreamOptions {
	return options.ChangeStream().SetMaxAwaitTime(awaitTime)
}

// openStream opens a change stream that is closed when the test ends.
func openStream(t *testing.T, w watcher, opts ...*options.ChangeStreamOptions) *mongo.ChangeStream {
	t.Helper()
	cs, err := w.Watch(testContext(t), mongo.Pipeline{}, append([]*options.ChangeStreamOptions{streamOpts()}, opts...)...)
	requireNoError(t, err, "watch")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cs.Close(ctx)
	})
	return cs
}

// openStreamErr opens a stream that is expected to fail, and returns the error from Watch
// or, when the server only reports it on the first getMore, from the first read.
func openStreamErr(t *testing.T, w watcher, opts ...*options.ChangeStreamOptions) error {
	t.Helper()
	ctx := testContext(t)
	cs, err := w.Watch(ctx, mongo.Pipeline{}, append([]*options.ChangeStreamOptions{streamOpts()}, opts...)...)
	if err != nil {
		return err
	}
	defer cs.Close(ctx)
	for i := 0; i < 3 && cs.Err() == nil; i++ {
		if cs.TryNext(ctx) {
			return fmt.Errorf("stream opened and returned an event: %s", cs.Current)
		}
	}
	return cs.Err()
}

type namespace struct {
	DB   string `bson:"db"`
	Coll string `bson:"coll"`
}

func (n namespace) String() string { return n.DB + "." + n.Coll }

// changeEvent is the decoded part of a change event the tests look at
// (manual: reference/change-events).
type changeEvent struct {
	Raw          bson.Raw
	Token        bson.Raw // _id, the event's resume token
	Op           string
	NS           namespace
	To           namespace
	DocumentKey  bson.Raw
	FullDocument bson.RawValue // zero when absent; Type Null when null
	ClusterTime  primitive.Timestamp
	Updated      bson.Raw
	Removed      []string
	HasUpdDesc   bool
}

func parseEvent(t *testing.T, raw bson.Raw) changeEvent {
	t.Helper()
	raw = append(bson.Raw(nil), raw...)
	ev := changeEvent{Raw: raw, FullDocument: raw.Lookup("fullDocument")}
	token, ok := raw.Lookup("_id").DocumentOK()
	if !ok {
		t.Fatalf("change event without an _id (resume token) document: %s", raw)
	}
	ev.Token = token
	ev.Op, _ = raw.Lookup("operationType").StringValueOK()
	if v, err := raw.LookupErr("ns"); err == nil {
		_ = v.Unmarshal(&ev.NS)
	}
	if v, err := raw.LookupErr("to"); err == nil {
		_ = v.Unmarshal(&ev.To)
	}
	ev.DocumentKey, _ = raw.Lookup("documentKey").DocumentOK()
	if ts, i, ok := raw.Lookup("clusterTime").TimestampOK(); ok {
		ev.ClusterTime = primitive.Timestamp{T: ts, I: i}
	} else {
		t.Errorf("change event without a timestamp clusterTime: %s", raw)
	}
	if ud, ok := raw.Lookup("updateDescription").DocumentOK(); ok {
		ev.HasUpdDesc = true
		ev.Updated, _ = ud.Lookup("updatedFields").DocumentOK()
		if arr, ok := ud.Lookup("removedFields").ArrayOK(); ok {
			vals, _ := arr.Values()
			for _, v := range vals {
				ev.Removed = append(ev.Removed, v.StringValue())
			}
		}
	}
	return ev
}

// key renders the documentKey's _id for messages and comparisons.
func (e changeEvent) key() string {
	if e.DocumentKey == nil {
		return ""
	}
	return e.DocumentKey.Lookup("_id").String()
}

// summary is a compact "op coll id" form used to compare sequences of events.
func (e changeEvent) summary() string {
	s := e.Op
	if e.NS.Coll != "" {
		s += " " + e.NS.Coll
	}
	if k := e.key(); k != "" {
		s += " " + k
	}
	return s
}

// nextEvent waits for the next event of cs.
func nextEvent(t *testing.T, cs *mongo.ChangeStream) changeEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), eventTimeout)
	defer cancel()
	if !cs.Next(ctx) {
		t.Fatalf("no change event within %s: err = %v", eventTimeout, cs.Err())
	}
	return parseEvent(t, cs.Current)
}

// nextEvents reads n events.
func nextEvents(t *testing.T, cs *mongo.ChangeStream, n int) []changeEvent {
	t.Helper()
	out := make([]changeEvent, n)
	for i := range out {
		out[i] = nextEvent(t, cs)
	}
	return out
}

// requireNoEvent asserts that cs stays silent for a few idle getMores.
func requireNoEvent(t *testing.T, cs *mongo.ChangeStream) {
	t.Helper()
	ctx := testContext(t)
	for i := 0; i < 3; i++ {
		if cs.TryNext(ctx) {
			t.Fatalf("unexpected change event: %s", cs.Current)
		}
		if err := cs.Err(); err != nil {
			t.Fatalf("stream failed while idle: %v", err)
		}
	}
}

// requireClosedByServer asserts that the server closed the stream's cursor (as it does after
// an invalidate event) without an error.
func requireClosedByServer(t *testing.T, cs *mongo.ChangeStream) {
	t.Helper()
	ctx := testContext(t)
	if cs.TryNext(ctx) {
		t.Fatalf("event after the stream should have closed: %s", cs.Current)
	}
	if cs.Err() != nil {
		t.Fatalf("stream ended with an error: %v", cs.Err())
	}
	if cs.ID() != 0 {
		t.Fatalf("cursor id = %d after invalidate, want 0 (closed by the server)", cs.ID())
	}
}

func summaries(evs []changeEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.summary()
	}
	return out
}

// intKey renders an int32 _id the way changeEvent.key does.
func intKey(v int32) string { return intIDs(v)[0] }

// timestampLess orders cluster times.
func timestampLess(a, b primitive.Timestamp) bool {
	return a.T < b.T || (a.T == b.T && a.I < b.I)
}

// serverFor returns a server URI whose maxWireVersion is at least min: the server under test
// when it is recent enough; otherwise, for the embedded server, a dedicated one started with
// that wire version; a real deployment that is too old skips the test.
func serverFor(t *testing.T, min int32, feature string) string {
	t.Helper()
	uri := serverURI(t)
	client := connect(t, uri)
	if maxWireVersion(t, testContext(t), client) >= min {
		return uri
	}
	if external() {
		t.Skipf("%s needs maxWireVersion >= %d", feature, min)
	}
	return dedicatedServerWire(t, int(min))
}

// isNull reports whether a looked-up value is present and BSON null.
func isNull(v bson.RawValue) bool { return v.Type == bson.TypeNull }
