package restore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// CollectionOptions configures the restore of a collection that a drop, rename or dropDatabase
// removed from the primary. Apply keeps what such an event removed in a DR side collection and
// names it in the event's archive line (preservedAs, docs/apply.md); this copies it back.
type CollectionOptions struct {
	Primary *mongo.Client
	DR      *mongo.Client
	Archive DeleteArchive
	// DB and Coll name the collection as it was in the primary.
	DB, Coll string
	// EventID picks one event when the collection was removed more than once; "" takes the
	// latest.
	EventID string
	// Into is the primary collection to write to ("" = Coll, the collection's own name).
	Into string

	Apply     bool // write to the primary; false is a dry run
	Overwrite bool // replace documents that exist in the target
	BatchSize int  // documents per write; default 500
	Logger    *slog.Logger
}

// CollectionReport is the outcome of a collection restore.
type CollectionReport struct {
	DryRun    bool      `json:"dryRun"`
	Event     string    `json:"eventId"`
	Operation string    `json:"operation"`
	RemovedAt time.Time `json:"removedAt"`
	// Source is the DR side collection the documents come from; Target the primary namespace.
	Source string `json:"source"`
	Target string `json:"target"`
	// Found counts the source's documents; the others split them by what was (or, in a dry run,
	// would be) done.
	Found         int `json:"found"`
	Restored      int `json:"restored"`
	Overwritten   int `json:"overwritten"`
	SkippedExists int `json:"skippedExists"`
}

// ErrNoCollectionEvent is returned (wrapped) when the archive holds no drop, rename or
// dropDatabase of the collection.
var ErrNoCollectionEvent = errors.New("no archived drop, rename or dropDatabase of the collection")

// Collection restores a removed collection from the DR side collection its archive line names.
// Documents that exist in the target are left alone unless Overwrite is set (inserts only, so a
// document written to the primary meanwhile is never replaced by accident).
func Collection(ctx context.Context, opts CollectionOptions) (CollectionReport, error) {
	if opts.Primary == nil || opts.DR == nil || opts.Archive == nil || opts.DB == "" || opts.Coll == "" {
		return CollectionReport{}, errors.New("restore collection: primary, DR, archive, database and collection are required")
	}
	opts.BatchSize = cmp.Or(max(opts.BatchSize, 0), 500)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	rec, side, err := removal(ctx, opts)
	if err != nil {
		return CollectionReport{}, err
	}
	target := changeevent.Namespace{DB: opts.DB, Coll: cmp.Or(opts.Into, opts.Coll)}
	rep := CollectionReport{
		DryRun: !opts.Apply, Event: rec.EventID, Operation: rec.Operation,
		RemovedAt: time.Unix(rec.Timestamp, 0).UTC(), Source: side.String(), Target: target.String(),
	}
	cur, err := opts.DR.Database(side.DB).Collection(side.Coll).Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return rep, fmt.Errorf("read %s on DR: %w", side, err)
	}
	defer cur.Close(ctx)
	var batch []bson.Raw
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := copyBatch(ctx, opts, target, batch, &rep)
		batch = batch[:0]
		return err
	}
	for cur.Next(ctx) {
		rep.Found++
		batch = append(batch, slices.Clone(cur.Current))
		if len(batch) == opts.BatchSize {
			if err := flush(); err != nil {
				return rep, err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return rep, fmt.Errorf("read %s on DR: %w", side, err)
	}
	if err := flush(); err != nil {
		return rep, err
	}
	opts.Logger.Info("collection restore complete", "dryRun", rep.DryRun, "source", rep.Source, "target", rep.Target,
		"found", rep.Found, "restored", rep.Restored, "overwritten", rep.Overwritten, "skippedExists", rep.SkippedExists)
	return rep, nil
}

// removal finds the archive line of the event that removed the collection and the DR side
// collection it names.
func removal(ctx context.Context, opts CollectionOptions) (archive.Record, changeevent.Namespace, error) {
	var found []archive.Record
	keep := func(rec archive.Record) error {
		switch {
		case rec.PreservedAs == nil:
		case rec.Operation == string(changeevent.Drop) && rec.Coll == opts.Coll,
			rec.Operation == string(changeevent.DropDatabase),
			rec.Operation == string(changeevent.Rename) && rec.To != nil && rec.To.DB == opts.DB && rec.To.Coll == opts.Coll:
			found = append(found, rec)
		}
		return nil
	}
	if err := opts.Archive.Records(ctx, opts.DB, "", time.Time{}, time.Time{}, keep); err != nil {
		return archive.Record{}, changeevent.Namespace{}, fmt.Errorf("restore collection: %w", err)
	}
	slices.SortFunc(found, func(a, b archive.Record) int {
		ta, _ := a.ClusterTimestamp()
		tb, _ := b.ClusterTimestamp()
		return ta.Compare(tb)
	})
	if opts.EventID != "" {
		found = slices.DeleteFunc(found, func(r archive.Record) bool { return r.EventID != opts.EventID })
	}
	if len(found) == 0 {
		what := opts.DB + "." + opts.Coll
		if opts.EventID != "" {
			what += " with eventId " + opts.EventID
		}
		return archive.Record{}, changeevent.Namespace{}, fmt.Errorf("restore collection %s: %w", what, ErrNoCollectionEvent)
	}
	// The latest event whose side collection exists: a dropDatabase follows a drop of each of
	// its collections, which moved them aside, so its own side collections are often absent.
	for i := len(found) - 1; i >= 0; i-- {
		side := sideOf(found[i], opts.Coll)
		names, err := opts.DR.Database(side.DB).ListCollectionNames(ctx, bson.D{{Key: "name", Value: side.Coll}})
		if err != nil {
			return archive.Record{}, changeevent.Namespace{}, fmt.Errorf("restore collection: list %s on DR: %w", side, err)
		}
		if len(names) > 0 || i == 0 || opts.EventID != "" {
			return found[i], side, nil
		}
	}
	panic("unreachable")
}

// sideOf is the DR side collection where rec's event keeps what it removed of coll.
func sideOf(rec archive.Record, coll string) changeevent.Namespace {
	side := changeevent.Namespace{DB: rec.PreservedAs.DB, Coll: rec.PreservedAs.Coll}
	if rec.Operation == string(changeevent.DropDatabase) {
		// The DR database's collections keep their names plus the suffix. With NAMESPACE_MAP
		// the DR collection may be named otherwise; the line names the DR database only.
		side.Coll = coll + rec.PreservedAs.Suffix
	}
	return side
}

// copyBatch writes one batch of side-collection documents into the target.
func copyBatch(ctx context.Context, opts CollectionOptions, target changeevent.Namespace, docs []bson.Raw, rep *CollectionReport) error {
	coll := opts.Primary.Database(target.DB).Collection(target.Coll)
	ids := make(bson.A, len(docs))
	for i, d := range docs {
		ids[i] = d.Lookup("_id")
	}
	existing, err := lookup(ctx, coll, ids, true)
	if err != nil {
		return fmt.Errorf("read %s on the primary: %w", target, err)
	}
	// Inserts first, then replaces: the write errors' indexes tell which is which.
	var models, replaces []mongo.WriteModel
	for _, d := range docs {
		_, exists := existing[idKey(d.Lookup("_id"))]
		switch {
		case !exists:
			models = append(models, mongo.NewInsertOneModel().SetDocument(d))
		case opts.Overwrite:
			replaces = append(replaces, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: d.Lookup("_id")}}).SetReplacement(d).SetUpsert(true))
		default:
			rep.SkippedExists++
		}
	}
	insertModels, overwrites := len(models), len(replaces)
	inserts := insertModels
	models = append(models, replaces...)
	if opts.Apply && len(models) > 0 {
		_, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		raced, err := insertsRaced(err, insertModels)
		if err != nil {
			return fmt.Errorf("restore into %s: %w", target, err)
		}
		inserts -= raced // written to the primary since the check: left alone
		rep.SkippedExists += raced
	}
	rep.Restored += inserts
	rep.Overwritten += overwrites
	return nil
}

// insertsRaced reads the error of an unordered bulk write whose first n models are inserts: the
// number of those inserts refused with a duplicate key (a document written to the primary since
// it was checked), or err when anything else failed.
func insertsRaced(err error, n int) (int, error) {
	var bwe mongo.BulkWriteException
	if err == nil || !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
		return 0, err
	}
	for _, we := range bwe.WriteErrors {
		if we.Code != 11000 || we.Index >= n {
			return 0, err
		}
	}
	return len(bwe.WriteErrors), nil
}
