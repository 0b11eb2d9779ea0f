// Package bootstrap makes the initial copy of a replication scope from the primary to the DR
// cluster and tells capture where to continue, so that copy plus stream leave no gap.
//
// The order of a run:
//
//  1. Take the start position (TakeStartPosition) *before* reading any document.
//  2. Split each collection into _id ranges (package partition).
//  3. Copy the ranges with N workers: read each range sorted by _id, write bulk upserts of the
//     raw BSON (ReplaceOne by _id, upsert), so every type arrives unchanged and a re-copied
//     document simply overwrites itself. After each batch the range's last _id is recorded, so
//     an interrupted run resumes where it stopped.
//  4. Hand the start position to the capture checkpoint (Checkpointer). Capture then replays
//     every change since the start position; changes the copy already saw are re-applied
//     idempotently, deletes are intercepted as always.
//
// Capture must not run for the scope while the copy runs: apply writing a newer version of a
// document that the copy then overwrites with the older one it read would leave DR stale until
// the document changes again. Replaying from the start position after the copy avoids that.
// The copy must also finish within the change-stream retention of the primary
// (Options.Retention), or the start position is no longer in the history.
package bootstrap

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/bootstrap/partition"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Checkpointer sets the capture checkpoint of a scope to a start position (implemented over
// pkg/checkpoint by the CLI). who says which operator or tool did it, for the audit fields. Run
// calls it once, after the copy, from Run's goroutine.
type Checkpointer interface {
	SetStart(ctx context.Context, scope scope.Scope, start StartPosition, who string) error
}

// Options configures a bootstrap run. Primary, DR and Scope are required.
type Options struct {
	Primary *mongo.Client
	DR      *mongo.Client
	Scope   scope.Scope

	// MapNamespace gives the DR namespace of a primary namespace (NAMESPACE_MAP); nil keeps it.
	MapNamespace func(changeevent.Namespace) changeevent.Namespace

	Workers    int // parallel range copiers; default 4
	Ranges     int // ranges per collection; default 4 × Workers
	BatchDocs  int // documents per bulk write; default 1000
	BatchBytes int // bytes per bulk write; default 8 MiB

	// StateDB and StateCollection name the progress collection on DR; default docdbdr.bootstrap.
	StateDB         string
	StateCollection string
	// Restart discards the recorded progress (and start position) of the scope and copies anew.
	Restart bool

	// Checkpoint receives the start position once the copy is complete. Nil: the position is only
	// returned in the Result and recorded in the state collection, for the operator to apply.
	Checkpoint Checkpointer
	Who        string // recorded with the state and passed to Checkpoint

	// Retention is the primary's change-stream retention; a copy that ends later than this after
	// the start position fails instead of setting an unusable checkpoint. Zero disables the check.
	Retention time.Duration

	Progress      io.Writer     // progress line destination; nil for none
	ProgressEvery time.Duration // default 1s on a terminal, 10s otherwise
	Logger        *slog.Logger  // default slog.Default()
}

func (o *Options) defaults() error {
	if o.Primary == nil || o.DR == nil {
		return errors.New("bootstrap: primary and DR clients are required")
	}
	if err := o.Scope.Validate(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	o.Workers = cmp.Or(max(o.Workers, 0), 4)
	o.Ranges = cmp.Or(max(o.Ranges, 0), 4*o.Workers)
	o.BatchDocs = cmp.Or(max(o.BatchDocs, 0), 1000)
	o.BatchBytes = cmp.Or(max(o.BatchBytes, 0), 8<<20)
	o.StateDB = cmp.Or(o.StateDB, "docdbdr")
	o.StateCollection = cmp.Or(o.StateCollection, "bootstrap")
	if o.MapNamespace == nil {
		o.MapNamespace = func(ns changeevent.Namespace) changeevent.Namespace { return ns }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Result describes a finished run.
type Result struct {
	Scope         scope.Scope        `json:"scope"`
	Start         StartPosition      `json:"start"`
	Resumed       bool               `json:"resumed"`     // continued an interrupted run
	AlreadyDone   bool               `json:"alreadyDone"` // the scope was already bootstrapped; nothing done
	CheckpointSet bool               `json:"checkpointSet"`
	Collections   []CollectionResult `json:"collections"`
	Docs          int64              `json:"docs"`  // documents written by this run
	Bytes         int64              `json:"bytes"` // BSON bytes written by this run
	Elapsed       time.Duration      `json:"elapsed"`
}

// CollectionResult is the copy of one collection, over every run of the bootstrap.
type CollectionResult struct {
	Name   string `json:"name"`
	Ranges int    `json:"ranges"`
	Docs   int64  `json:"docs"`
	Bytes  int64  `json:"bytes"`
}

// Run bootstraps opts.Scope, resuming a previous interrupted run of the same scope unless
// opts.Restart is set. A scope already bootstrapped is left alone (Result.AlreadyDone).
func Run(ctx context.Context, opts Options) (Result, error) {
	if err := opts.defaults(); err != nil {
		return Result{}, err
	}
	began := time.Now()
	log := opts.Logger.With("scope", opts.Scope.ID())
	st := stateStore{coll: opts.DR.Database(opts.StateDB).Collection(opts.StateCollection), key: opts.Scope.ID()}

	run, err := st.loadRun(ctx)
	if err != nil {
		return Result{}, err
	}
	if run != nil && opts.Restart {
		log.Info("discarding recorded bootstrap progress", "status", run.Status)
		if err := st.clear(ctx); err != nil {
			return Result{}, err
		}
		run = nil
	}
	res := Result{Scope: opts.Scope, Resumed: run != nil && run.Status != statusDone}
	if run != nil && run.Status == statusDone {
		res.AlreadyDone, res.Start, res.CheckpointSet = true, run.Start, run.CheckpointSetAt != nil
		log.Info("scope already bootstrapped; use Restart to copy again", "start", run.Start.String())
		return res, nil
	}

	if run == nil {
		// 1. The start position comes first: nothing may be read before it.
		pos, err := TakeStartPosition(ctx, opts.Primary, opts.Scope)
		if err != nil {
			return Result{}, err
		}
		colls, err := opts.Scope.Resolve(ctx, opts.Primary)
		if err != nil {
			return Result{}, err
		}
		run = &runDoc{Scope: opts.Scope, Status: statusSplitting, Start: pos, Collections: colls,
			Who: opts.Who, StartedAt: time.Now().UTC()}
		if err := st.saveRun(ctx, run); err != nil {
			return Result{}, err
		}
		log.Info("bootstrap started", "start", pos.String(), "collections", colls)
	} else {
		log.Info("resuming bootstrap", "status", run.Status, "start", run.Start.String())
	}
	res.Start = run.Start

	// 2. Ranges: cut once, then reused by every resumed run so progress stays meaningful.
	var ranges []*rangeState
	if run.Status == statusSplitting {
		if ranges, run.Estimated, err = splitScope(ctx, opts, run.Collections); err != nil {
			return Result{}, err
		}
		if err := st.replaceRanges(ctx, ranges); err != nil {
			return Result{}, err
		}
		if err := st.setStatus(ctx, run, statusCopying); err != nil {
			return Result{}, err
		}
	} else if ranges, err = st.loadRanges(ctx); err != nil {
		return Result{}, err
	}

	// 3. Copy.
	if run.Status == statusCopying {
		docs, bytes, err := copyRanges(ctx, opts, st, run, ranges)
		res.Docs, res.Bytes = docs, bytes
		if err != nil {
			return res, err
		}
		if err := checkRetention(opts.Retention, run.Start); err != nil {
			return res, err
		}
		if err := st.setStatus(ctx, run, statusCopied); err != nil {
			return res, err
		}
	}

	// 4. Hand over the start position.
	if run.Status == statusCopied {
		if opts.Checkpoint != nil {
			if err := opts.Checkpoint.SetStart(ctx, opts.Scope, run.Start, opts.Who); err != nil {
				return res, fmt.Errorf("set the capture checkpoint to the bootstrap start position: %w", err)
			}
			now := time.Now().UTC()
			run.CheckpointSetAt = &now
			res.CheckpointSet = true
			log.Info("capture checkpoint set to the bootstrap start position", "start", run.Start.String())
		} else {
			log.Warn("no checkpointer configured: set the capture start position yourself", "start", run.Start.String())
		}
		if err := st.setStatus(ctx, run, statusDone); err != nil {
			return res, err
		}
	}

	res.Collections = summarize(run.Collections, ranges)
	res.Elapsed = time.Since(began)
	log.Info("bootstrap complete", "docs", res.Docs, "bytes", res.Bytes, "elapsed", res.Elapsed.String())
	return res, nil
}

// splitScope cuts every collection into ranges and returns them with the scope's estimated size.
func splitScope(ctx context.Context, opts Options, colls []string) ([]*rangeState, int64, error) {
	var out []*rangeState
	var total int64
	for _, c := range colls {
		plan, err := partition.Split(ctx, opts.Ranges, opts.Primary.Database(opts.Scope.DB).Collection(c))
		if err != nil {
			return nil, 0, err
		}
		if plan.Single != "" {
			opts.Logger.Info("collection copied as one range", "coll", c, "reason", plan.Single)
		}
		total += plan.Estimated
		for i, r := range plan.Ranges {
			out = append(out, &rangeState{Coll: c, Index: i, rng: r})
		}
	}
	return out, total, nil
}

// copyRanges copies every unfinished range with opts.Workers workers. The first error stops all
// workers; what was written stays recorded for the next run.
func copyRanges(ctx context.Context, opts Options, st stateStore, run *runDoc, ranges []*rangeState) (int64, int64, error) {
	var prior int64
	var todo []*rangeState
	for _, r := range ranges {
		prior += r.Docs
		if !r.Done {
			todo = append(todo, r)
		}
	}
	prog := newProgress(opts.Progress, opts.Scope.ID(), run.Estimated, prior, opts.ProgressEvery)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tasks := make(chan *rangeState)
	var wg sync.WaitGroup
	for range min(opts.Workers, max(len(todo), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range tasks {
				if err := copyRange(ctx, opts, st, r, prog); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
feed:
	for _, r := range todo {
		select {
		case tasks <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(tasks)
	wg.Wait()
	prog.finish()
	docs, bytes := prog.docs.Load(), prog.bytes.Load()
	if err := context.Cause(ctx); err != nil {
		return docs, bytes, err
	}
	return docs, bytes, nil
}

// copyRange copies one range from its recorded position to its end.
func copyRange(ctx context.Context, opts Options, st stateStore, r *rangeState, prog *progress) error {
	src := opts.Primary.Database(opts.Scope.DB).Collection(r.Coll)
	dstNS := opts.MapNamespace(changeevent.Namespace{DB: opts.Scope.DB, Coll: r.Coll})
	dst := opts.DR.Database(dstNS.DB).Collection(dstNS.Coll)

	cur, err := src.Find(ctx, r.rng.Filter(r.After), options.Find().
		SetSort(bson.D{{Key: "_id", Value: 1}}).
		SetBatchSize(int32(opts.BatchDocs)))
	if err != nil {
		return fmt.Errorf("read %s.%s range %d: %w", opts.Scope.DB, r.Coll, r.Index, err)
	}
	defer cur.Close(ctx)

	var models []mongo.WriteModel
	var size int64
	var last bson.RawValue
	flush := func() error {
		if len(models) == 0 {
			return nil
		}
		if _, err := dst.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("write %s range %d to DR: %w", dstNS, r.Index, err)
		}
		if err := st.recordBatch(ctx, r, last, int64(len(models)), size); err != nil {
			return err
		}
		r.After = last
		r.Docs += int64(len(models))
		r.Bytes += size
		prog.add(int64(len(models)), size)
		models, size = models[:0], 0
		return nil
	}
	for cur.Next(ctx) {
		doc := bytes.Clone([]byte(cur.Current))
		id := bson.Raw(doc).Lookup("_id")
		models = append(models, mongo.NewReplaceOneModel().
			SetFilter(bson.D{{Key: "_id", Value: id}}).
			SetReplacement(bson.Raw(doc)).
			SetUpsert(true))
		size += int64(len(doc))
		last = id
		if len(models) >= opts.BatchDocs || size >= int64(opts.BatchBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("read %s.%s range %d: %w", opts.Scope.DB, r.Coll, r.Index, err)
	}
	if err := flush(); err != nil {
		return err
	}
	if err := st.recordDone(ctx, r); err != nil {
		return err
	}
	r.Done = true
	return nil
}

// checkRetention fails when the start position may have left the primary's change history.
func checkRetention(retention time.Duration, start StartPosition) error {
	if retention <= 0 {
		return nil
	}
	at := start.TakenAt
	if !start.ClusterTime.IsZero() {
		at = changeevent.Time(start.ClusterTime)
	}
	if age := time.Since(at); age > retention {
		return fmt.Errorf("the copy ended %s after its start position, beyond the change-stream retention of %s: "+
			"changes made during the copy may be lost from the history; run the bootstrap again with restart "+
			"(more workers, or a longer retention)", age.Round(time.Second), retention)
	}
	return nil
}

// summarize totals the ranges per collection.
func summarize(colls []string, ranges []*rangeState) []CollectionResult {
	out := make([]CollectionResult, len(colls))
	idx := map[string]int{}
	for i, c := range colls {
		out[i].Name = c
		idx[c] = i
	}
	for _, r := range ranges {
		if i, ok := idx[r.Coll]; ok {
			out[i].Ranges++
			out[i].Docs += r.Docs
			out[i].Bytes += r.Bytes
		}
	}
	return out
}
