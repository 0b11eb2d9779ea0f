package capture

import (
	"context"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// MongoStreams opens change streams with the Go driver.
type MongoStreams struct {
	Client   *mongo.Client
	MaxAwait time.Duration // maxAwaitTimeMS of each getMore
}

// Open watches the one collection of a one-collection scope, else the database with the scope's
// $match. It asks for fullDocument: updateLookup so that updates carry the document as it is now.
func (m MongoStreams) Open(ctx context.Context, sc scope.Scope, start Start) (Stream, error) {
	opts := options.ChangeStream().SetFullDocument(options.UpdateLookup)
	if m.MaxAwait > 0 {
		opts.SetMaxAwaitTime(m.MaxAwait)
	}
	switch {
	case len(start.ResumeAfter) > 0:
		opts.SetResumeAfter(start.ResumeAfter)
	case len(start.StartAfter) > 0:
		opts.SetStartAfter(start.StartAfter)
	case start.StartAt != nil:
		opts.SetStartAtOperationTime(start.StartAt)
	}
	db := m.Client.Database(sc.DB)
	var (
		cs  *mongo.ChangeStream
		err error
	)
	if sc.Single() {
		cs, err = db.Collection(sc.Collections[0]).Watch(ctx, sc.Pipeline(), opts)
	} else {
		cs, err = db.Watch(ctx, sc.Pipeline(), opts)
	}
	if err != nil {
		return nil, err
	}
	return driverStream{cs}, nil
}

// driverStream adapts *mongo.ChangeStream (whose Current is a field) to Stream.
type driverStream struct{ cs *mongo.ChangeStream }

func (d driverStream) TryNext(ctx context.Context) bool { return d.cs.TryNext(ctx) }
func (d driverStream) Current() bson.Raw                { return d.cs.Current }
func (d driverStream) ResumeToken() bson.Raw            { return d.cs.ResumeToken() }
func (d driverStream) Err() error                       { return d.cs.Err() }
func (d driverStream) Close(ctx context.Context) error  { return d.cs.Close(ctx) }

// RemainingBatchLength is how many events the driver holds without a getMore (see buffered).
func (d driverStream) RemainingBatchLength() int { return d.cs.RemainingBatchLength() }
