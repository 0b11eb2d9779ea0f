// Package promote turns the DR cluster into a copy applications can switch to when the primary
// is lost: it fences apply, checks that apply has drained the topic, and moves every version DR
// kept on purpose (deleted or dropped in the primary: apply intercepts deletes, drops, renames
// and dropDatabase) out of the live collections into a side database, each with its archive
// reference, so that the live collections hold exactly the primary's state at the last
// replicated event. It reads only DR, the topic and apply's ledger in DR: never the primary,
// never a listing of S3. See docs/failover.md.
//
// Reading order: promote.go (Run: the steps), plan.go (what is intercepted, from the ledger),
// move.go (the moves, each safe to repeat), topic.go (the topic), report.go (output).
package promote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Options configure Run. DR and Topic are required.
type Options struct {
	DR           *mongo.Client
	StateDB      string // DR_STATE_DB; default apply.DefaultStateDB
	SideDB       string // where intercepted versions go; default <StateDB>_intercepted
	NamespaceMap apply.NamespaceMap
	Topic        Topic
	// Apply acts; without it Run only reports what it would do (a dry run writes nothing).
	Apply bool
	// DrainTimeout is how long Run (with Apply) waits for apply to reach the topic's end; 0:
	// it must be there already.
	DrainTimeout time.Duration
	// PrimaryLostAt, when known (the operator's incident time), gives the RPO as the time
	// between the last replicated event and the loss.
	PrimaryLostAt time.Time
	// Chunk is how many documents one find or bulk write covers; default 1000.
	Chunk  int
	Logger *slog.Logger
	Now    func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.DR == nil || o.Topic == nil {
		return o, errors.New("promote: a DR client and the topic are required")
	}
	if o.StateDB == "" {
		o.StateDB = apply.DefaultStateDB
	}
	if o.SideDB == "" {
		o.SideDB = o.StateDB + "_intercepted"
	}
	if o.SideDB == o.StateDB {
		return o, fmt.Errorf("promote: the side database cannot be DR_STATE_DB %q", o.StateDB)
	}
	if o.NamespaceMap.Targets(o.SideDB) {
		return o, fmt.Errorf("promote: NAMESPACE_MAP writes into the side database %q", o.SideDB)
	}
	if o.Chunk <= 0 {
		o.Chunk = defaultChunk
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// ErrNotDrained is wrapped by Run's error when apply has not applied the topic to its end.
var ErrNotDrained = errors.New("apply has not drained the topic")

// Run promotes DR (or, without Apply, reports what promoting would do). Running it again after
// a complete run changes nothing; after an interrupted one it finishes the work.
func Run(ctx context.Context, o Options) (Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Report{}, err
	}
	start := o.Now()
	r := Report{Apply: o.Apply, StartedAt: start.UTC(), StateDB: o.StateDB, SideDB: o.SideDB, Topic: o.Topic.Name()}
	state := apply.NewMongoWriter(o.DR).WithStateDB(o.StateDB)

	// 1. What reached DR, against what the topic holds.
	if err := topicState(ctx, o, state, &r); err != nil {
		return r, err
	}
	r.TopicCheck = o.Now().Sub(start)
	r.RPO = r.topicRPO()
	if !o.PrimaryLostAt.IsZero() && !r.LastReplicated.IsZero() {
		r.RPOToLoss = o.PrimaryLostAt.Sub(r.LastReplicated)
	}

	// 2. Fence, then wait for apply to drain.
	if o.Apply {
		if err := writeFence(ctx, o, &r); err != nil {
			return r, err
		}
		if err := waitDrained(ctx, o, state, &r); err != nil {
			return r, err
		}
	}

	// 3. The plan, from the ledger.
	planStart := o.Now()
	var entries []apply.LedgerEntry
	if err := state.Ledger(ctx, func(e apply.LedgerEntry) error {
		if e.State == apply.StatePending {
			r.PendingArchive++
		}
		entries = append(entries, e)
		return nil
	}); err != nil {
		return r, fmt.Errorf("read the archive ledger %s.%s: %w", o.StateDB, apply.LedgerCollection, err)
	}
	r.LedgerEntries = len(entries)
	if r.PendingArchive > 0 && o.Apply {
		return r, fmt.Errorf("%d archive lines are still pending in the ledger (their S3 objects may not be written): let apply run once more over the topic, then promote again", r.PendingArchive)
	}
	p := makePlan(entries, o.NamespaceMap)

	// 4. The moves.
	movesStart := o.Now()
	r.Plan = movesStart.Sub(planStart)
	m := &mover{o: o, r: &r}
	if err := m.deletes(ctx, p); err != nil {
		return r, err
	}
	if err := m.sideCollections(ctx, p); err != nil {
		return r, err
	}
	if err := m.goneCollections(ctx, p); err != nil {
		return r, err
	}
	end := o.Now()
	r.Moves, r.Duration = end.Sub(movesStart), end.Sub(start)
	o.Logger.Info("promote", slog.Bool("apply", o.Apply), slog.Int("interceptedDeletes", r.Deletes.Intercepted),
		slog.Int("movedDocuments", r.Deletes.Moved), slog.Int("sideCollections", len(r.Collections)),
		slog.Duration("rpo", r.RPO), slog.Duration("duration", r.Duration))
	return r, nil
}

// topicState reads the topic's end offsets and apply's frontiers.
func topicState(ctx context.Context, o Options, state *apply.MongoWriter, r *Report) error {
	ends, err := o.Topic.Ends(ctx)
	if err != nil {
		return fmt.Errorf("read the topic's end offsets: %w", err)
	}
	parts := make([]int64, 0, len(ends))
	for p := range ends {
		parts = append(parts, p)
	}
	fs, err := state.Frontiers(ctx, o.Topic.Name(), parts)
	if err != nil {
		return fmt.Errorf("read apply's frontiers %s.%s: %w", o.StateDB, apply.FrontierCollection, err)
	}
	byPart := map[int64]apply.Frontier{}
	for _, f := range fs {
		byPart[f.Partition] = f
		for _, ct := range f.ClusterTimes {
			if t := changeevent.Time(ct); t.After(r.LastReplicated) {
				r.LastReplicated = t
			}
		}
	}
	r.Partitions = r.Partitions[:0]
	r.Unreplicated = 0
	for p := int64(0); p < int64(len(ends)); p++ {
		end, ok := ends[p]
		if !ok {
			continue
		}
		pr := PartitionState{Partition: p, End: end, Applied: -1}
		if f, ok := byPart[p]; ok && f.High >= f.Low {
			pr.Applied = f.High
		}
		if end > 0 && pr.Applied < end-1 {
			pr.Behind = end - 1 - pr.Applied
			r.Unreplicated += pr.Behind
		}
		r.Partitions = append(r.Partitions, pr)
	}
	t, exact, err := o.Topic.Newest(ctx, ends)
	if err != nil {
		return fmt.Errorf("read the newest records of the topic: %w", err)
	}
	if t.After(r.NewestOnTopic) {
		r.NewestOnTopic, r.NewestExact = t, exact
	}
	return nil
}

// writeFence records in DR that it was promoted at the topic's current ends: apply applies
// nothing after them (apply.Fence). A second run keeps the first fence.
func writeFence(ctx context.Context, o Options, r *Report) error {
	coll := o.DR.Database(o.StateDB).Collection(apply.FenceCollection)
	ends := bson.A{}
	for _, p := range r.Partitions {
		ends = append(ends, bson.D{{Key: "partition", Value: p.Partition}, {Key: "end", Value: p.End}})
	}
	doc := bson.D{{Key: "promotedAt", Value: primitive.NewDateTimeFromTime(o.Now())}, {Key: "topic", Value: o.Topic.Name()},
		{Key: "ends", Value: ends}}
	res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: apply.FenceID}}, bson.D{{Key: "$setOnInsert", Value: doc}},
		options.Update().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("write the fence %s.%s: %w", o.StateDB, apply.FenceCollection, err)
	}
	r.Fenced, r.FenceExisted = true, res.UpsertedCount == 0
	fence, err := apply.NewMongoWriter(o.DR).WithStateDB(o.StateDB).Fence(ctx)
	if err != nil || fence == nil {
		return fmt.Errorf("read the fence back: %v: %w", fence, err)
	}
	if fence.Topic != o.Topic.Name() {
		return fmt.Errorf("DR was promoted from topic %s, not %s", fence.Topic, o.Topic.Name())
	}
	r.fence = fence
	return nil
}

// waitDrained waits until every partition's frontier reaches the fence, reading the frontiers
// again each time, for at most DrainTimeout. Records after the fence are not waited for: apply
// will not apply them.
func waitDrained(ctx context.Context, o Options, state *apply.MongoWriter, r *Report) error {
	deadline := o.Now().Add(o.DrainTimeout)
	rpo, unreplicated := r.RPO, r.Unreplicated
	defer func() { r.RPO, r.Unreplicated = rpo, unreplicated }() // as they were when promote started
	for {
		behind, past := r.againstFence()
		if past != "" {
			return fmt.Errorf("apply applied records after the fence (%s): something applied while promote fenced; stop apply's event source mapping and run promote again", past)
		}
		if behind == 0 {
			return nil
		}
		if !o.Now().Before(deadline) {
			return fmt.Errorf("%w: %d records before the fence not applied after %s (see partitions); is the apply event source mapping enabled?",
				ErrNotDrained, behind, o.DrainTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if err := topicState(ctx, o, state, r); err != nil {
			return err
		}
	}
}
