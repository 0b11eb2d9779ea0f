package reliability

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// The decorators below wrap the interfaces capture and apply talk through (capture.Deps,
// apply.DR, apply.Archive) to stop an invocation at a chosen boundary. No product code is
// changed: the functions are built by capture.NewFunction and apply.NewFunction, whose Env.Wrap,
// WrapDR and WrapArchive install the decorators once; what one invocation does differently (and
// its crash switch) reaches them through that invocation's context. The functions see
// collaborators that fail or stall, exactly as they would if the Lambda process died or the
// network stalled at that point. (A real process death is reliability/kill_test.go's business.)

// --- routing one capture invocation's decorations ------------------------------------------

// captureDepsKey carries one capture invocation's decorated collaborators in its context.
type captureDepsKey struct{}

func withCaptureDeps(ctx context.Context, d capture.Deps) context.Context {
	return context.WithValue(ctx, captureDepsKey{}, &d)
}

func captureDepsOf(ctx context.Context) *capture.Deps {
	d, _ := ctx.Value(captureDepsKey{}).(*capture.Deps)
	return d
}

// routeCapture is capture.Env.Wrap: it keeps what NewFunction built (the base the per-invocation
// decorators wrap) and returns collaborators that call, for each call, the decorated ones of
// the invocation whose context the call carries, or the base ones. Capture passes the
// invocation's context (or one derived from it, values kept) to every call.
func (h *harness) routeCapture(base capture.Deps) capture.Deps {
	h.captureBase = base
	routed := base
	routed.Streams = routedStreams{base.Streams}
	routed.Publisher = routedPublisher{base.Publisher}
	routed.Checkpoints = routedCheckpoints{base.Checkpoints}
	return routed
}

type routedStreams struct{ base capture.StreamOpener }

func (r routedStreams) Open(ctx context.Context, sc scope.Scope, start capture.Start) (capture.Stream, error) {
	if d := captureDepsOf(ctx); d != nil {
		return d.Streams.Open(ctx, sc, start)
	}
	return r.base.Open(ctx, sc, start)
}

type routedPublisher struct{ base capture.Publisher }

func (r routedPublisher) Begin(ctx context.Context, window int) (capture.Batch, error) {
	if d := captureDepsOf(ctx); d != nil {
		return d.Publisher.Begin(ctx, window)
	}
	return r.base.Begin(ctx, window)
}

type routedCheckpoints struct{ base capture.Checkpoints }

func (r routedCheckpoints) pick(ctx context.Context) capture.Checkpoints {
	if d := captureDepsOf(ctx); d != nil {
		return d.Checkpoints
	}
	return r.base
}

func (r routedCheckpoints) Load(ctx context.Context, scope string) (checkpoint.State, error) {
	return r.pick(ctx).Load(ctx, scope)
}

func (r routedCheckpoints) Acquire(ctx context.Context, scope, owner string, ttl time.Duration) (checkpoint.Lease, error) {
	return r.pick(ctx).Acquire(ctx, scope, owner, ttl)
}

func (r routedCheckpoints) Save(ctx context.Context, lease checkpoint.Lease, pos checkpoint.Position) error {
	return r.pick(ctx).Save(ctx, lease, pos)
}

func (r routedCheckpoints) Release(ctx context.Context, lease checkpoint.Lease) error {
	return r.pick(ctx).Release(ctx, lease)
}

func (r routedCheckpoints) Renew(ctx context.Context, lease checkpoint.Lease) (checkpoint.Lease, error) {
	return r.pick(ctx).Renew(ctx, lease)
}

// errCrashed is what every call of a crashed invocation returns.
var errCrashed = errors.New("injected crash: the process is gone")

// crash is one invocation's kill switch. fire stops the invocation where it stands: its context
// is cancelled and every decorated call afterwards fails, because nothing more runs in a dead
// process — not even the deferred release of the lease, or the final checkpoint save that
// capture makes with a context detached from the cancelled one.
type crash struct {
	cancel context.CancelFunc
	fired  atomic.Bool
	// drWrites counts the DR writes of the apply invocation this switch belongs to.
	drWrites atomic.Int64
}

// fire crashes the invocation and returns errCrashed, for the call that crashed.
func (c *crash) fire() error {
	if c == nil {
		return errCrashed
	}
	c.fired.Store(true)
	if c.cancel != nil {
		c.cancel()
	}
	return errCrashed
}

// dead reports whether the invocation has crashed.
func (c *crash) dead() bool { return c != nil && c.fired.Load() }

// crashKey carries an apply invocation's crash switch down to its DR and archive calls (apply
// passes the invocation's context to them).
type crashKey struct{}

func withCrash(ctx context.Context, c *crash) context.Context {
	return context.WithValue(ctx, crashKey{}, c)
}

func crashOf(ctx context.Context) *crash {
	c, _ := ctx.Value(crashKey{}).(*crash)
	return c
}

// --- capture -------------------------------------------------------------------------------

// hookedPublisher calls before(n, batch) ahead of the n-th message an invocation publishes (n
// from 1); an error from it fails that Publish, and the message never reaches Kafka.
type hookedPublisher struct {
	capture.Publisher
	crash  *crash
	before func(n int, b capture.Batch) error
}

func (p hookedPublisher) Begin(ctx context.Context, window int) (capture.Batch, error) {
	b, err := p.Publisher.Begin(ctx, window)
	if err != nil {
		return nil, err
	}
	return &hookedBatch{Batch: b, crash: p.crash, before: p.before}, nil
}

type hookedBatch struct {
	capture.Batch
	crash  *crash
	before func(n int, b capture.Batch) error
	n      int
}

func (b *hookedBatch) Publish(ctx context.Context, msg kafka.Message) (uint64, error) {
	if b.crash.dead() {
		return 0, errCrashed
	}
	b.n++
	if b.before != nil {
		if err := b.before(b.n, b.Batch); err != nil {
			return 0, err
		}
	}
	return b.Batch.Publish(ctx, msg)
}

func (b *hookedBatch) Flush(ctx context.Context) error {
	if b.crash.dead() {
		return errCrashed
	}
	return b.Batch.Flush(ctx)
}

// hookedCheckpoints wraps the state collection. acquired is called once the lease is taken;
// beforeSave and afterSave around the n-th checkpoint save (n from 1). After a crash nothing
// reaches the state collection.
type hookedCheckpoints struct {
	capture.Checkpoints
	crash      *crash
	acquired   func(checkpoint.Lease)
	beforeSave func(n int) error
	afterSave  func(n int) error
	saves      *int
}

func (c hookedCheckpoints) Acquire(ctx context.Context, sc, owner string, ttl time.Duration) (checkpoint.Lease, error) {
	if c.crash.dead() {
		return checkpoint.Lease{}, errCrashed
	}
	l, err := c.Checkpoints.Acquire(ctx, sc, owner, ttl)
	if err == nil && c.acquired != nil {
		c.acquired(l)
	}
	return l, err
}

func (c hookedCheckpoints) Load(ctx context.Context, scope string) (checkpoint.State, error) {
	if c.crash.dead() {
		return checkpoint.State{}, errCrashed
	}
	return c.Checkpoints.Load(ctx, scope)
}

func (c hookedCheckpoints) Save(ctx context.Context, lease checkpoint.Lease, pos checkpoint.Position) error {
	if c.crash.dead() {
		return errCrashed
	}
	n := 1
	if c.saves != nil {
		*c.saves++
		n = *c.saves
	}
	if c.beforeSave != nil {
		if err := c.beforeSave(n); err != nil {
			return err
		}
	}
	if err := c.Checkpoints.Save(ctx, lease, pos); err != nil {
		return err
	}
	if c.afterSave != nil {
		return c.afterSave(n)
	}
	return nil
}

func (c hookedCheckpoints) Renew(ctx context.Context, lease checkpoint.Lease) (checkpoint.Lease, error) {
	if c.crash.dead() {
		return lease, errCrashed // a dead process renews nothing: its lease lapses
	}
	return c.Checkpoints.Renew(ctx, lease)
}

func (c hookedCheckpoints) Release(ctx context.Context, lease checkpoint.Lease) error {
	if c.crash.dead() {
		return errCrashed // a dead process releases nothing: the lease stays until its TTL
	}
	return c.Checkpoints.Release(ctx, lease)
}

// --- apply ---------------------------------------------------------------------------------

// hookedDR counts DR writes per invocation and refuses every call after the invocation crashed.
type hookedDR struct {
	apply.DR
}

func (d hookedDR) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []apply.Write) (apply.BulkResult, error) {
	c := crashOf(ctx)
	if c.dead() {
		return apply.BulkResult{}, errCrashed
	}
	res, err := d.DR.BulkWrite(ctx, ns, writes)
	if err == nil && c != nil {
		c.drWrites.Add(int64(len(writes)))
	}
	return res, err
}

func (d hookedDR) FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[apply.IDKey]bson.Raw, error) {
	if crashOf(ctx).dead() {
		return nil, errCrashed
	}
	return d.DR.FindByIDs(ctx, ns, ids)
}

// hookedArchive calls beforePut ahead of every archive write; an error from it fails the
// write, which never reaches S3.
type hookedArchive struct {
	apply.Archive
	beforePut func(ctx context.Context, key string) error
}

func (a hookedArchive) Put(ctx context.Context, key string, body []byte) error {
	if crashOf(ctx).dead() {
		return errCrashed
	}
	if a.beforePut != nil {
		if err := a.beforePut(ctx, key); err != nil {
			return err
		}
	}
	return a.Archive.Put(ctx, key, body)
}

func (a hookedArchive) Get(ctx context.Context, key string) ([]byte, error) {
	if crashOf(ctx).dead() {
		return nil, errCrashed
	}
	return a.Archive.Get(ctx, key)
}

// crashable gives every apply invocation its own crash switch, reachable from the DR and
// archive decorators through the context. after, when set, runs once Handle returned: it may
// turn a success into a crash (the process died before it could report success).
func crashable(after func(c *crash, sum apply.Summary, err error) error) func(applyFunc) applyFunc {
	return func(next applyFunc) applyFunc {
		return func(ctx context.Context, ev events.KafkaEvent) (apply.Summary, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			c := &crash{cancel: cancel}
			sum, err := next(withCrash(ctx, c), ev)
			if after != nil {
				err = after(c, sum, err)
			}
			return sum, err
		}
	}
}

// once is a fault that fires a single time.
type once struct {
	mu    sync.Mutex
	armed bool
	fired int
}

func armed() *once { return &once{armed: true} }

// take reports whether the fault fires now (and disarms it).
func (o *once) take() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.armed {
		return false
	}
	o.armed = false
	o.fired++
	return true
}

func (o *once) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fired
}

// hookedStreams opens the real change stream and calls afterEvent(n) after the n-th event the
// invocation read (n from 1).
type hookedStreams struct {
	capture.StreamOpener
	afterEvent func(n int)
}

func (s hookedStreams) Open(ctx context.Context, sc scope.Scope, start capture.Start) (capture.Stream, error) {
	st, err := s.StreamOpener.Open(ctx, sc, start)
	if err != nil {
		return nil, err
	}
	return &hookedStream{Stream: st, afterEvent: s.afterEvent}, nil
}

type hookedStream struct {
	capture.Stream
	afterEvent func(n int)
	n          int
}

func (s *hookedStream) TryNext(ctx context.Context) bool {
	ok := s.Stream.TryNext(ctx)
	if ok {
		s.n++
		s.afterEvent(s.n)
	}
	return ok
}
