package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/bootstrap/partition"
)

// The state collection (docdbdr.bootstrap on the DR cluster by default) holds one run document
// per scope and one document per _id range. It lives on DR because it describes DR's data: if DR
// is rebuilt, the progress goes with it.
//
//	{_id: "run/<scope key>", kind: "run", status, start: StartPosition, collections, estimated, who, ...}
//	{_id: "range/<scope key>/<coll>/<index>", kind: "range", run: "<scope key>", coll, index,
//	 lo, hi, after, done, docs, bytes}
//
// lo/hi are absent on an unbounded side; after is the last _id copied (absent before the first
// batch). A range resumes at _id > after.

// Run statuses, in order.
const (
	statusSplitting = "splitting" // start position taken, ranges being cut
	statusCopying   = "copying"   // ranges recorded, copy in progress
	statusCopied    = "copied"    // every range done, start position not yet handed to capture
	statusDone      = "done"      // start position handed over (or no checkpointer configured)
)

type runDoc struct {
	ID              string        `bson:"_id"`
	Kind            string        `bson:"kind"`
	Scope           scope.Scope   `bson:"scope"`
	Status          string        `bson:"status"`
	Start           StartPosition `bson:"start"`
	Collections     []string      `bson:"collections"`
	Estimated       int64         `bson:"estimated"`
	Who             string        `bson:"who"`
	StartedAt       time.Time     `bson:"startedAt"`
	UpdatedAt       time.Time     `bson:"updatedAt"`
	CheckpointSetAt *time.Time    `bson:"checkpointSetAt,omitempty"`
}

// rangeState is one range's progress, in memory and in its state document.
type rangeState struct {
	ID    string          `bson:"_id"`
	Kind  string          `bson:"kind"`
	Run   string          `bson:"run"`
	Coll  string          `bson:"coll"`
	Index int             `bson:"index"`
	Lo    bson.RawValue   `bson:"lo,omitempty"`
	Hi    bson.RawValue   `bson:"hi,omitempty"`
	After bson.RawValue   `bson:"after,omitempty"`
	Done  bool            `bson:"done"`
	Docs  int64           `bson:"docs"`
	Bytes int64           `bson:"bytes"`
	rng   partition.Range `bson:"-"`
}

// stateStore reads and writes the state documents of one scope.
type stateStore struct {
	coll *mongo.Collection
	key  string // scope.Scope.ID()
}

func (s stateStore) runID() string { return "run/" + s.key }

// loadRun returns the scope's run document, or nil when there is none.
func (s stateStore) loadRun(ctx context.Context) (*runDoc, error) {
	var r runDoc
	err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: s.runID()}}).Decode(&r)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read bootstrap state: %w", err)
	}
	return &r, nil
}

// saveRun writes the whole run document.
func (s stateStore) saveRun(ctx context.Context, r *runDoc) error {
	r.ID, r.Kind, r.UpdatedAt = s.runID(), "run", time.Now().UTC()
	_, err := s.coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: r.ID}}, r, options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("write bootstrap state: %w", err)
	}
	return nil
}

// setStatus changes the run's status.
func (s stateStore) setStatus(ctx context.Context, r *runDoc, status string) error {
	r.Status = status
	return s.saveRun(ctx, r)
}

// clear deletes the run and range documents of the scope.
func (s stateStore) clear(ctx context.Context) error {
	if _, err := s.coll.DeleteMany(ctx, bson.D{{Key: "run", Value: s.key}, {Key: "kind", Value: "range"}}); err != nil {
		return fmt.Errorf("clear bootstrap ranges: %w", err)
	}
	if _, err := s.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: s.runID()}}); err != nil {
		return fmt.Errorf("clear bootstrap state: %w", err)
	}
	return nil
}

// replaceRanges discards any recorded ranges and records these (all not started).
func (s stateStore) replaceRanges(ctx context.Context, ranges []*rangeState) error {
	if _, err := s.coll.DeleteMany(ctx, bson.D{{Key: "run", Value: s.key}, {Key: "kind", Value: "range"}}); err != nil {
		return fmt.Errorf("clear bootstrap ranges: %w", err)
	}
	docs := make([]any, len(ranges))
	for i, r := range ranges {
		r.ID = fmt.Sprintf("range/%s/%s/%d", s.key, r.Coll, r.Index)
		r.Kind, r.Run = "range", s.key
		r.Lo, r.Hi = r.rng.Lo, r.rng.Hi
		docs[i] = r
	}
	if len(docs) == 0 {
		return nil
	}
	if _, err := s.coll.InsertMany(ctx, docs); err != nil {
		return fmt.Errorf("record bootstrap ranges: %w", err)
	}
	return nil
}

// loadRanges returns the recorded ranges, ordered by collection and index.
func (s stateStore) loadRanges(ctx context.Context) ([]*rangeState, error) {
	cur, err := s.coll.Find(ctx, bson.D{{Key: "run", Value: s.key}, {Key: "kind", Value: "range"}})
	if err != nil {
		return nil, fmt.Errorf("read bootstrap ranges: %w", err)
	}
	var out []*rangeState
	for cur.Next(ctx) {
		var r rangeState
		if err := cur.Decode(&r); err != nil {
			_ = cur.Close(ctx)
			return nil, fmt.Errorf("decode bootstrap range: %w", err)
		}
		r.rng = partition.Range{Lo: r.Lo, Hi: r.Hi}
		out = append(out, &r)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("read bootstrap ranges: %w", err)
	}
	_ = cur.Close(ctx)
	slices.SortFunc(out, func(a, b *rangeState) int {
		if a.Coll != b.Coll {
			if a.Coll < b.Coll {
				return -1
			}
			return 1
		}
		return a.Index - b.Index
	})
	return out, nil
}

// recordBatch stores a range's progress after a batch was written to DR.
func (s stateStore) recordBatch(ctx context.Context, r *rangeState, after bson.RawValue, docs, bytes int64) error {
	_, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: r.ID}}, bson.D{
		{Key: "$set", Value: bson.D{{Key: "after", Value: after}}},
		{Key: "$inc", Value: bson.D{{Key: "docs", Value: docs}, {Key: "bytes", Value: bytes}}},
	})
	if err != nil {
		return fmt.Errorf("record progress of %s: %w", r.ID, err)
	}
	return nil
}

// recordDone marks a range finished.
func (s stateStore) recordDone(ctx context.Context, r *rangeState) error {
	_, err := s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: r.ID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "done", Value: true}}}})
	if err != nil {
		return fmt.Errorf("record end of %s: %w", r.ID, err)
	}
	return nil
}
