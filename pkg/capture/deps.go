package capture

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// The capture logic talks to the outside world only through these small interfaces, so that the
// drain can be tested with fakes. MongoStreams, KafkaPublisher, *checkpoint.Store and
// *archive.S3 are the production implementations.

// Start says where a change stream opens. At most one of ResumeAfter, StartAfter and StartAt is
// set; none means "now".
type Start struct {
	ResumeAfter bson.Raw             // continue after this event
	StartAfter  bson.Raw             // continue after this invalidate event
	StartAt     *primitive.Timestamp // begin at this cluster time
}

// StreamOpener opens a change stream on a scope with fullDocument: updateLookup. Capture calls
// Open once per invocation, from the invocation's goroutine; an opener shared by concurrent
// invocations (tests) must be safe for concurrent use, as MongoStreams is.
type StreamOpener interface {
	Open(ctx context.Context, sc scope.Scope, start Start) (Stream, error)
}

// Stream is an open change stream (the driver's *mongo.ChangeStream, see MongoStreams). Like the
// driver's, it need not be safe for concurrent use: capture's reader goroutine reads it, and the
// invocation closes it only after the reader stopped.
type Stream interface {
	// TryNext returns the next event if one is buffered or arrives within one getMore (which
	// waits up to the stream's max await time); false when none did or on error (see Err).
	TryNext(ctx context.Context) bool
	// Current is the event TryNext returned.
	Current() bson.Raw
	// ResumeToken is a position just after the last event returned, or the post-batch resume
	// token when the last batch is exhausted.
	ResumeToken() bson.Raw
	Err() error
	Close(ctx context.Context) error
}

// Publisher starts per-invocation batches of Kafka messages (the capture Function's publisher
// slot, or KafkaPublisher over one *kafka.Publisher). Begin may connect to the brokers first, so
// a broker outage is an invocation's error. It is called from one goroutine at a time.
type Publisher interface {
	Begin(ctx context.Context, window int) (Batch, error)
}

// Batch publishes messages and reports, in publish order, which Kafka acknowledged
// (*kafka.Batch implements it).
type Batch interface {
	Publish(ctx context.Context, msg kafka.Message) (uint64, error)
	// Partitions is the topic's partition count, from the producer client's metadata.
	Partitions() (int32, error)
	Acked() uint64
	Err() error
	Progress() <-chan struct{}
	Flush(ctx context.Context) error
	// End detaches the batch. When it did not end with every message acknowledged, the producer
	// behind it is aborted before End returns, so that nothing it still holds can reach Kafka
	// after the run (kafka.Publisher.Abort): End waits, until ctx is done at most, for the
	// requests already sent to be answered.
	End(ctx context.Context)
}

// Checkpoints is the state collection (*checkpoint.Store implements it). Its methods may be
// called concurrently: a run's heartbeat calls Renew while its drain calls Save.
type Checkpoints interface {
	Load(ctx context.Context, scope string) (checkpoint.State, error)
	// Acquire fails with an error matching checkpoint.ErrLeaseHeld (a *checkpoint.HeldError,
	// which says until when) when another owner holds the lease.
	Acquire(ctx context.Context, scope, owner string, ttl time.Duration) (checkpoint.Lease, error)
	// Renew extends the lease to its TTL from now and returns it, or fails with
	// checkpoint.ErrFenced when it was taken over or reset.
	Renew(ctx context.Context, lease checkpoint.Lease) (checkpoint.Lease, error)
	Save(ctx context.Context, lease checkpoint.Lease, pos checkpoint.Position) error
	Release(ctx context.Context, lease checkpoint.Lease) error
}

// Blob stores claim-check objects (*archive.S3 implements it). Capture calls it from the
// invocation's publishing loop, one Put at a time; replay-deadletters likewise.
type Blob interface {
	Bucket() string
	Put(ctx context.Context, key string, body []byte) error
}

// KafkaPublisher adapts one *kafka.Publisher to Publisher (tests and benchmarks; the Function
// uses its publisher slot, which also replaces an aborted publisher). A batch that ends
// unfinished aborts P: its next batch fails with kafka.ErrAborted.
type KafkaPublisher struct{ P *kafka.Publisher }

// Begin starts a kafka.Batch.
func (k KafkaPublisher) Begin(_ context.Context, window int) (Batch, error) {
	return abortingBatch{Batch: k.P.Begin(window), pub: k.P}, nil
}

// abortingBatch is a kafka.Batch whose End aborts its publisher when the batch is unfinished.
type abortingBatch struct {
	*kafka.Batch
	pub     *kafka.Publisher
	aborted func(why, err error) // called after an abort; nil: nothing
}

func (b abortingBatch) End(ctx context.Context) {
	b.Batch.End()
	why := b.Unfinished()
	if why == nil {
		return
	}
	err := b.pub.Abort(ctx)
	if b.aborted != nil {
		b.aborted(why, err)
	}
}
