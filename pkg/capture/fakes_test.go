package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// fakeClock is the capture's clock; the fake stream advances it as a real getMore would.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// token returns the resume token of event n (or, for a post-batch token, of position n).
func token(n int) bson.Raw {
	b, _ := bson.Marshal(bson.D{{Key: "_data", Value: fmt.Sprintf("%08d", n)}})
	return b
}

// tokenIndex reverses token.
func tokenIndex(t bson.Raw) int {
	var n int
	fmt.Sscanf(t.Lookup("_data").StringValue(), "%d", &n)
	return n
}

// event builds a raw change stream event number n.
func event(n int, op, db, coll string, extra ...bson.E) bson.Raw {
	d := bson.D{
		{Key: "_id", Value: token(n)},
		{Key: "operationType", Value: op},
		{Key: "clusterTime", Value: primitive.Timestamp{T: uint32(1714564800 + n), I: 1}},
	}
	if op != "dropDatabase" && op != "invalidate" {
		d = append(d, bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: db}, {Key: "coll", Value: coll}}})
	} else if op == "dropDatabase" {
		d = append(d, bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: db}}})
	}
	switch op {
	case "insert", "update", "replace", "delete":
		d = append(d, bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int32(n)}}})
	}
	switch op {
	case "insert", "replace":
		d = append(d, bson.E{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int32(n)}, {Key: "x", Value: n}}})
	case "update":
		d = append(d, bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "x", Value: n}}}, {Key: "removedFields", Value: bson.A{}}}})
	}
	d = append(d, extra...)
	b, err := bson.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

func inserts(from, to int) []bson.Raw {
	var out []bson.Raw
	for n := from; n <= to; n++ {
		out = append(out, event(n, "insert", "bar", "foo"))
	}
	return out
}

// fakeStream returns its events one per TryNext, then reports empty batches: each waits a
// millisecond of real time (so the drain keeps up with the reader, as it does with a real server)
// and advances the fake clock by maxAwait, as a getMore would wait. err, when set, is returned
// once the events are exhausted. gap is fake clock time between events.
type fakeStream struct {
	clock    *fakeClock
	events   []bson.Raw
	maxAwait time.Duration
	gap      time.Duration
	err      error
	pbrt     int // post-batch position reported when exhausted (0: the last event's)

	i       int
	current bson.Raw
	failed  error
	closed  bool
}

func (s *fakeStream) TryNext(ctx context.Context) bool {
	if s.failed != nil {
		return false
	}
	if s.i < len(s.events) {
		s.clock.Add(s.gap)
		s.current = s.events[s.i]
		s.i++
		return true
	}
	if s.err != nil {
		s.failed = s.err
		return false
	}
	select {
	case <-time.After(time.Millisecond):
	case <-ctx.Done():
		s.failed = ctx.Err()
		return false
	}
	s.clock.Add(s.maxAwait)
	return false
}

func (s *fakeStream) Current() bson.Raw { return s.current }
func (s *fakeStream) ResumeToken() bson.Raw {
	if s.i == len(s.events) && s.pbrt > 0 {
		return token(s.pbrt)
	}
	if s.current == nil {
		return nil
	}
	return s.current.Lookup("_id").Document()
}
func (s *fakeStream) Err() error                      { return s.failed }
func (s *fakeStream) Close(ctx context.Context) error { s.closed = true; return nil }

// fakeOpener hands out one stream, or fails.
type fakeOpener struct {
	stream *fakeStream
	err    error
	got    []Start
	// batch, when positive, makes the stream say it holds events (buffered) in batches of this
	// many, as the driver does: the reader then hands them on in groups.
	batch int
}

func (o *fakeOpener) Open(ctx context.Context, sc scope.Scope, start Start) (Stream, error) {
	o.got = append(o.got, start)
	if o.err != nil {
		return nil, o.err
	}
	if o.batch > 0 {
		return bufferedStream{o.stream, o.batch}, nil
	}
	return o.stream, nil
}

// bufferedStream is a fakeStream that reports the events left in the current batch of size
// batch (RemainingBatchLength), as the driver's stream does.
type bufferedStream struct {
	*fakeStream
	batch int
}

func (s bufferedStream) RemainingBatchLength() int {
	left := len(s.events) - s.i
	if left <= 0 {
		return 0
	}
	return min(left, s.batch-s.i%s.batch) % s.batch
}

// fakeBatch acknowledges messages as its policy says.
type fakeBatch struct {
	mu       sync.Mutex
	msgs     []kafka.Message
	ackLimit int   // acknowledge at most this many messages (-1: all)
	failAt   int   // fail the message with this sequence number (0: never)
	err      error //
	parts    int32 // partition count; 0 means 1
	acked    uint64
	ended    bool
	changed  chan struct{}
}

func (b *fakeBatch) Publish(ctx context.Context, m kafka.Message) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	b.msgs = append(b.msgs, m)
	seq := uint64(len(b.msgs))
	switch {
	case b.failAt > 0 && int(seq) >= b.failAt:
		b.err = fmt.Errorf("%w: broker said no", kafka.ErrNotAcknowledged)
	case b.ackLimit < 0 || int(seq) <= b.ackLimit:
		b.acked = seq
	}
	b.broadcast()
	return seq, nil
}

func (b *fakeBatch) broadcast() {
	if b.changed != nil {
		close(b.changed)
	}
	b.changed = make(chan struct{})
}

func (b *fakeBatch) Partitions() (int32, error) { return max(b.parts, 1), nil }
func (b *fakeBatch) Acked() uint64              { b.mu.Lock(); defer b.mu.Unlock(); return b.acked }
func (b *fakeBatch) Err() error                 { b.mu.Lock(); defer b.mu.Unlock(); return b.err }
func (b *fakeBatch) Progress() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}
func (b *fakeBatch) Flush(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if int(b.acked) < len(b.msgs) {
		return fmt.Errorf("kafka: %d messages still unacknowledged: %w", len(b.msgs)-int(b.acked), context.DeadlineExceeded)
	}
	return nil
}
func (b *fakeBatch) End(context.Context) { b.mu.Lock(); b.ended = true; b.mu.Unlock() }

type fakePublisher struct{ batch *fakeBatch }

func (p *fakePublisher) Begin(_ context.Context, window int) (Batch, error) { return p.batch, nil }

// fakeCheckpoints is an in-memory state collection with the real lease and fence rules.
type fakeCheckpoints struct {
	mu        sync.Mutex
	state     checkpoint.State
	now       func() time.Time
	heldBy    string    // another owner holds the lease...
	heldUntil time.Time // ...until then (zero: 2024-05-01T12:10:00Z)
	fenceNow  bool      // the next Save finds the fence moved
	renewErr  error     // Renew fails with it
	renews    int
	saves     []checkpoint.Position
	acked     func() uint64 // the publisher's acknowledged count, recorded with each save
	ackedAt   []uint64
	released  bool
	expires   time.Time // ExpiresAt of the leases Acquire hands out; zero: none
}

func (f *fakeCheckpoints) Load(ctx context.Context, scope string) (checkpoint.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, nil
}

func (f *fakeCheckpoints) Acquire(ctx context.Context, scope, owner string, ttl time.Duration) (checkpoint.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.heldBy != "" {
		until := f.heldUntil
		if until.IsZero() {
			until = time.Date(2024, 5, 1, 12, 10, 0, 0, time.UTC)
		}
		if f.now().Before(until) {
			return checkpoint.Lease{}, &checkpoint.HeldError{Scope: scope, Owner: f.heldBy, ExpiresAt: until}
		}
		f.heldBy = ""
	}
	f.state.Fence++
	return checkpoint.Lease{Scope: scope, Owner: owner, Fence: f.state.Fence, TTL: ttl, ExpiresAt: f.expires}, nil
}

func (f *fakeCheckpoints) Renew(ctx context.Context, l checkpoint.Lease) (checkpoint.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renews++
	switch {
	case f.renewErr != nil:
		return l, f.renewErr
	case l.Fence != f.state.Fence:
		return l, fmt.Errorf("renew lease of %s: %w", l.Scope, checkpoint.ErrFenced)
	}
	l.ExpiresAt = f.now().Add(l.TTL)
	return l, nil
}

func (f *fakeCheckpoints) Save(ctx context.Context, l checkpoint.Lease, pos checkpoint.Position) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenceNow {
		f.state.Fence++
	}
	if l.Fence != f.state.Fence {
		return fmt.Errorf("save checkpoint of %s: %w", l.Scope, checkpoint.ErrFenced)
	}
	f.state.Position = pos
	f.saves = append(f.saves, pos)
	if f.acked != nil {
		f.ackedAt = append(f.ackedAt, f.acked())
	}
	return nil
}

func (f *fakeCheckpoints) Release(ctx context.Context, l checkpoint.Lease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Fence != f.state.Fence {
		return checkpoint.ErrFenced
	}
	f.released = true
	return nil
}

// fakeBlob is an in-memory claim-check store.
type fakeBlob struct {
	objects map[string][]byte
	err     error
}

func (b *fakeBlob) Bucket() string { return "archive" }
func (b *fakeBlob) Put(ctx context.Context, key string, body []byte) error {
	if b.err != nil {
		return b.err
	}
	if b.objects == nil {
		b.objects = map[string][]byte{}
	}
	b.objects[key] = body
	return nil
}

func (b *fakeBlob) Get(ctx context.Context, key string) ([]byte, error) {
	body, ok := b.objects[key]
	if !ok {
		return nil, fmt.Errorf("get %s: no such key", key)
	}
	return body, nil
}

func (b *fakeBlob) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for k := range b.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

var errBoom = errors.New("boom")

func t0ctx() context.Context { return context.Background() }

func primitiveTS(t uint32) primitive.Timestamp { return primitive.Timestamp{T: t} }
