package restore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Point-in-time restore (restore --as-of T). With the version history on (apply's
// ARCHIVE_HISTORY=on), every insert, update, replace and delete of a document has exactly one
// archived line holding the version it overwrote: null for an insert, the document exactly as the
// primary had it just before the event otherwise (deletes' lines are in the delete archive). So a
// document's version at T is the before of its earliest line after T, and a document with no line
// after T has not changed since. RunAsOf writes those versions back, for the selected documents
// only.

// VersionArchive reads the lines of one collection in the version history and the delete archive
// with a cluster time in [from, to) (zero to: open), in no particular order. ArchiveReader
// implements it; it is called from one goroutine.
type VersionArchive interface {
	Versions(ctx context.Context, db, coll string, from, to time.Time, fn func(archive.Record) error) error
}

// HistoryLimits says since when the version history of a primary namespace is complete; ok is
// false when it is not archived (ARCHIVE_HISTORY is off). apply.MongoWriter implements it over
// apply's state database on DR.
type HistoryLimits interface {
	HistorySince(ctx context.Context, ns changeevent.Namespace) (since time.Time, ok bool, err error)
}

// AsOfOptions configures RunAsOf. Primary, DR, Archive, Limits, NS and AsOf are required. The
// selection is IDs, or Filter, or (neither) the whole collection.
type AsOfOptions struct {
	Primary *mongo.Client
	DR      *mongo.Client
	Archive VersionArchive
	Limits  HistoryLimits
	NS      changeevent.Namespace // the primary collection
	// AsOf is T, taken to the second: events in T's second count as after it.
	AsOf time.Time
	// IDs selects documents by _id (see ParseID). Filter (a query document) selects those whose
	// current version matches it in the primary or in DR (DR keeps deleted documents).
	IDs    []string
	Filter bson.Raw
	// Into, when set, is a new collection of NS.DB that receives the selection as it was at T
	// (unchanged documents copied from the primary); it must be empty. Otherwise NS is restored
	// in place.
	Into string
	// MapNamespace gives the DR namespace of a primary namespace (NAMESPACE_MAP); nil keeps it.
	MapNamespace func(changeevent.Namespace) changeevent.Namespace
	// Retention is the archive's lifecycle expiration (0: none): T must be younger.
	Retention time.Duration
	Now       func() time.Time // nil: time.Now
	Apply     bool             // write; false is a dry run
	BatchSize int              // documents per read and write; default 1000
	MaxListed int              // items kept in the report; default 1000 (counts are complete)
	Logger    *slog.Logger
}

// The outcomes of a point-in-time restore, per selected document.
const (
	ChangedBack Outcome = "changed back" // in the primary, different at T: replaced by its version at T
	Recreated   Outcome = "re-created"   // deleted after T: inserted again
	Removed     Outcome = "removed"      // inserted after T: deleted (with Into: not copied)
	Unchanged   Outcome = "unchanged"    // as at T (with Into: copied)
	UnknownAtT  Outcome = "unknown at T" // its earliest line after T has no before-image: left alone
)

// AsOfItem is one selected document that changed after T.
type AsOfItem struct {
	ID        string    `json:"_id"` // canonical Extended JSON
	ChangedAt time.Time `json:"changedAt"`
	Operation string    `json:"firstChange"` // the operation of its earliest line after T
	Outcome   Outcome   `json:"outcome"`
	Exact     bool      `json:"exact"`
	Note      string    `json:"note,omitempty"`
}

// AsOfReport is what RunAsOf did, or would do in a dry run.
type AsOfReport struct {
	DryRun      bool      `json:"dryRun"`
	NS          string    `json:"ns"`
	Into        string    `json:"into,omitempty"`
	AsOf        time.Time `json:"asOf"`
	Selected    int       `json:"selected"` // documents selected (changed or not)
	ChangedBack int       `json:"changedBack"`
	Recreated   int       `json:"recreated"`
	Removed     int       `json:"removed"`
	Unchanged   int       `json:"unchanged"`
	Unknown     int       `json:"unknownAtT"`
	// Inexact counts versions restored from a line whose before is not proven exact.
	Inexact int        `json:"inexact"`
	Items   []AsOfItem `json:"items"` // changed documents, up to MaxListed
}

// atT is what the archive says of one document at T: its earliest line after T.
type atT struct {
	id    bson.RawValue
	ts    primitive.Timestamp
	off   int64 // Kafka offset: orders lines of one cluster time (a transaction)
	rec   archive.Record
	doc   bson.Raw // its version at T; nil: absent
	known bool     // false: the line has no before-image and is not an insert's
}

func (o *AsOfOptions) defaults() error {
	var errs []error
	if o.Primary == nil || o.DR == nil || o.Archive == nil || o.Limits == nil {
		errs = append(errs, errors.New("primary, DR, archive and history limits are required"))
	}
	if o.NS.DB == "" || o.NS.Coll == "" {
		errs = append(errs, errors.New("a point-in-time restore needs a database and a collection"))
	}
	if o.AsOf.IsZero() {
		errs = append(errs, errors.New("no time to restore to"))
	}
	if len(o.IDs) > 0 && o.Filter != nil {
		errs = append(errs, errors.New("select by _ids or by a filter, not both"))
	}
	if o.Into == o.NS.Coll && o.Into != "" {
		errs = append(errs, fmt.Errorf("--into %s is the collection being restored", o.Into))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore --as-of: %w", err)
	}
	o.BatchSize = cmp.Or(max(o.BatchSize, 0), 1000)
	o.MaxListed = cmp.Or(max(o.MaxListed, 0), 1000)
	if o.MapNamespace == nil {
		o.MapNamespace = func(ns changeevent.Namespace) changeevent.Namespace { return ns }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// RunAsOf restores the selected documents of NS to their versions at AsOf (or reports, in a dry
// run, what it would do). It refuses a T before the version history of NS was complete (switched
// on) or older than the archive's retention, naming the limit.
func RunAsOf(ctx context.Context, opts AsOfOptions) (AsOfReport, error) {
	if err := opts.defaults(); err != nil {
		return AsOfReport{}, err
	}
	cut := opts.AsOf.UTC().Truncate(time.Second)
	if err := checkLimits(ctx, opts, cut); err != nil {
		return AsOfReport{}, err
	}
	rep := AsOfReport{DryRun: !opts.Apply, NS: opts.NS.String(), Into: opts.Into, AsOf: cut}
	primary := opts.Primary.Database(opts.NS.DB).Collection(opts.NS.Coll)

	if err := checkCollectionEvents(ctx, opts, cut); err != nil {
		return rep, err
	}
	want, err := opts.selection(ctx)
	if err != nil {
		return rep, err
	}
	changed, err := versionsAt(ctx, opts, cut, want)
	if err != nil {
		return rep, err
	}
	var target *mongo.Collection
	if opts.Into != "" {
		target = opts.Primary.Database(opts.NS.DB).Collection(opts.Into)
		n, err := target.CountDocuments(ctx, bson.D{}, options.Count().SetLimit(1))
		if err != nil {
			return rep, fmt.Errorf("read %s.%s: %w", opts.NS.DB, opts.Into, err)
		}
		if n > 0 {
			return rep, fmt.Errorf("restore --as-of: --into %s.%s is not empty: name a new collection", opts.NS.DB, opts.Into)
		}
	}

	// The changed documents: their version at T against the primary's current one.
	presentChanged := 0
	for batch := range slices.Chunk(changed, opts.BatchSize) {
		ids := make(bson.A, len(batch))
		for i, c := range batch {
			ids[i] = c.id
		}
		current, err := lookup(ctx, primary, ids, false)
		if err != nil {
			return rep, fmt.Errorf("read %s on the primary: %w", opts.NS, err)
		}
		var models []mongo.WriteModel
		var copies []any
		for _, c := range batch {
			key := idKey(c.id)
			cur, present := current[key]
			if present {
				presentChanged++
			}
			out := outcomeOf(c, cur, present)
			rep.count(out, c)
			if len(rep.Items) < opts.MaxListed {
				rep.Items = append(rep.Items, AsOfItem{ID: key, ChangedAt: time.Unix(int64(c.ts.T), 0).UTC(), Operation: c.rec.Operation,
					Outcome: out, Exact: c.rec.BeforeExact || c.rec.Operation == string(changeevent.Insert), Note: c.rec.BeforeNote})
			}
			switch {
			case target != nil:
				if c.known && c.doc != nil {
					copies = append(copies, c.doc)
				}
			case out == ChangedBack || out == Recreated:
				models = append(models, mongo.NewReplaceOneModel().SetFilter(bson.D{{Key: "_id", Value: c.id}}).
					SetReplacement(c.doc).SetUpsert(true))
			case out == Removed:
				models = append(models, mongo.NewDeleteOneModel().SetFilter(bson.D{{Key: "_id", Value: c.id}}))
			}
		}
		if !opts.Apply {
			continue
		}
		if len(models) > 0 {
			if _, err := primary.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
				return rep, fmt.Errorf("restore %d documents of %s to %s: %w", len(models), opts.NS, cut.Format(time.RFC3339), err)
			}
		}
		if len(copies) > 0 {
			if _, err := target.InsertMany(ctx, copies, options.InsertMany().SetOrdered(false)); err != nil {
				return rep, fmt.Errorf("write %d documents into %s.%s: %w", len(copies), opts.NS.DB, opts.Into, err)
			}
		}
	}

	// The selected documents that did not change after T.
	if err := opts.unchanged(ctx, &rep, changed, want, presentChanged, target); err != nil {
		return rep, err
	}
	opts.Logger.Info("restore as of complete", "ns", rep.NS, "asOf", cut, "into", opts.Into, "dryRun", rep.DryRun,
		"selected", rep.Selected, "changedBack", rep.ChangedBack, "recreated", rep.Recreated, "removed", rep.Removed,
		"unchanged", rep.Unchanged, "unknownAtT", rep.Unknown, "inexact", rep.Inexact)
	return rep, nil
}

// checkLimits refuses a T that the archive cannot answer for.
func checkLimits(ctx context.Context, opts AsOfOptions, cut time.Time) error {
	since, ok, err := opts.Limits.HistorySince(ctx, opts.NS)
	if err != nil {
		return fmt.Errorf("restore --as-of: %w", err)
	}
	if !ok {
		return fmt.Errorf("restore --as-of: the version history of %s is not archived (apply's ARCHIVE_HISTORY is off, or no event of it was applied since it was switched on): no earlier time can be restored", opts.NS)
	}
	if cut.Before(since) {
		return fmt.Errorf("restore --as-of: %s is before %s, when the version history of %s was switched on: the earliest time that can be restored is %s",
			cut.Format(time.RFC3339), since.Format(time.RFC3339Nano), opts.NS, since.Truncate(time.Second).Add(time.Second).Format(time.RFC3339))
	}
	if opts.Retention > 0 {
		if oldest := opts.Now().Add(-opts.Retention); cut.Before(oldest) {
			return fmt.Errorf("restore --as-of: %s is older than the archive's retention (ARCHIVE_EXPIRATION_DAYS: %s): lines after it may have expired; the earliest time that can be restored is %s",
				cut.Format(time.RFC3339), opts.Retention, oldest.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// checkCollectionEvents refuses a T before a drop, rename or dropDatabase that moved the
// collection's documents (documents with no line after T would otherwise count as unchanged).
// DR names the side collection of a drop, a dropDatabase and a displacing rename after the
// event's cluster time (<coll>.dropped.<T>-<I>, see docs/apply.md); a rename of the collection
// itself is in its delete archive (versionsAt).
func checkCollectionEvents(ctx context.Context, opts AsOfOptions, cut time.Time) error {
	drNS := opts.MapNamespace(opts.NS)
	prefix := drNS.Coll + ".dropped."
	names, err := opts.DR.Database(drNS.DB).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("list the collections of %s on DR: %w", drNS.DB, err)
	}
	for _, name := range names {
		var t, i uint32
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			if _, err := fmt.Sscanf(rest, "%d-%d", &t, &i); err == nil && int64(t) >= cut.Unix() {
				return fmt.Errorf("restore --as-of: %s was dropped or replaced at %s, after %s: its documents are in DR's %s.%s (docdbdr restore-collection brings them back); a point-in-time restore across a collection event is not supported",
					opts.NS, time.Unix(int64(t), 0).UTC().Format(time.RFC3339), cut.Format(time.RFC3339), drNS.DB, name)
			}
		}
	}
	return nil
}

// selection returns the selected _ids by key, or nil for the whole collection.
func (o *AsOfOptions) selection(ctx context.Context) (map[string]bson.RawValue, error) {
	switch {
	case len(o.IDs) > 0:
		want := map[string]bson.RawValue{}
		for _, s := range o.IDs {
			id, err := ParseID(s)
			if err != nil {
				return nil, err
			}
			want[idKey(id)] = id
		}
		return want, nil
	case o.Filter != nil:
		want := map[string]bson.RawValue{}
		drNS := o.MapNamespace(o.NS)
		for _, c := range []struct {
			where string
			coll  *mongo.Collection
		}{
			{"the primary", o.Primary.Database(o.NS.DB).Collection(o.NS.Coll)},
			{"DR", o.DR.Database(drNS.DB).Collection(drNS.Coll)},
		} {
			cur, err := c.coll.Find(ctx, o.Filter, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
			if err != nil {
				return nil, fmt.Errorf("select by the filter on %s: %w", c.where, err)
			}
			for cur.Next(ctx) {
				id := cur.Current.Lookup("_id")
				id.Value = slices.Clone(id.Value)
				want[idKey(id)] = id
			}
			err = cur.Err()
			cur.Close(ctx)
			if err != nil {
				return nil, fmt.Errorf("select by the filter on %s: %w", c.where, err)
			}
		}
		return want, nil
	}
	return nil, nil
}

// versionsAt reads every line of NS after T and keeps, for each selected document, the earliest
// (by cluster time, then Kafka offset: one document's lines share a partition). The result is
// in _id key order.
func versionsAt(ctx context.Context, opts AsOfOptions, cut time.Time, want map[string]bson.RawValue) ([]*atT, error) {
	byKey := map[string]*atT{}
	err := opts.Archive.Versions(ctx, opts.NS.DB, opts.NS.Coll, cut, time.Time{}, func(rec archive.Record) error {
		if !changeevent.OperationType(rec.Operation).IsDocumentChange() {
			if rec.Operation == string(changeevent.Rename) && rec.Timestamp >= cut.Unix() && rec.To != nil {
				return fmt.Errorf("restore --as-of: %s was renamed to %s.%s at %s, after %s (docdbdr restore-collection brings a collection back); a point-in-time restore across a collection event is not supported",
					opts.NS, rec.To.DB, rec.To.Coll, rec.TimestampReadable, cut.Format(time.RFC3339))
			}
			return nil
		}
		id, err := rec.IDValue()
		if err != nil {
			return err
		}
		key := idKey(id)
		if want != nil {
			if _, ok := want[key]; !ok {
				return nil
			}
		}
		ts, err := rec.ClusterTimestamp()
		if err != nil {
			return err
		}
		if int64(ts.T) < cut.Unix() {
			return nil
		}
		if c := byKey[key]; c != nil && !(ts.Before(c.ts) || (ts.Equal(c.ts) && rec.Kafka.Offset < c.off)) {
			return nil // not earlier than the line kept
		}
		byKey[key] = &atT{id: id, ts: ts, off: rec.Kafka.Offset, rec: rec}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the version history of %s: %w", opts.NS, err)
	}
	out := make([]*atT, 0, len(byKey))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		c := byKey[k]
		doc, err := c.rec.BeforeDocument()
		if err != nil {
			return nil, fmt.Errorf("the line of event %s: %w", c.rec.EventID, err)
		}
		c.doc = doc
		c.known = doc != nil || c.rec.Operation == string(changeevent.Insert)
		out = append(out, c)
	}
	return out, nil
}

// outcomeOf compares a document's version at T with its current one in the primary.
func outcomeOf(c *atT, cur bson.Raw, present bool) Outcome {
	switch {
	case !c.known:
		return UnknownAtT
	case c.doc == nil && present:
		return Removed
	case c.doc == nil:
		return Unchanged // inserted and deleted after T
	case !present:
		return Recreated
	case bytes.Equal(c.doc, cur):
		return Unchanged
	default:
		return ChangedBack
	}
}

func (r *AsOfReport) count(out Outcome, c *atT) {
	r.Selected++
	switch out {
	case ChangedBack:
		r.ChangedBack++
	case Recreated:
		r.Recreated++
	case Removed:
		r.Removed++
	case Unchanged:
		r.Unchanged++
	case UnknownAtT:
		r.Unknown++
	}
	if c.known && c.doc != nil && !c.rec.BeforeExact && out != Unchanged {
		r.Inexact++
	}
}

// unchanged counts the selected documents that have no line after T (and, with Into, copies
// them from the primary: they are as they were at T).
func (o *AsOfOptions) unchanged(ctx context.Context, rep *AsOfReport, changed []*atT, want map[string]bson.RawValue,
	presentChanged int, target *mongo.Collection) error {
	primary := o.Primary.Database(o.NS.DB).Collection(o.NS.Coll)
	isChanged := make(map[string]bool, len(changed))
	for _, c := range changed {
		isChanged[idKey(c.id)] = true
	}
	if want == nil && target == nil {
		n, err := primary.CountDocuments(ctx, bson.D{})
		if err != nil {
			return fmt.Errorf("count %s on the primary: %w", o.NS, err)
		}
		rep.Selected += int(n) - presentChanged
		rep.Unchanged += int(n) - presentChanged
		return nil
	}
	filter := bson.D{}
	if want != nil {
		var ids bson.A
		for k, id := range want {
			if !isChanged[k] {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		filter = bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}
	}
	cur, err := primary.Find(ctx, filter)
	if err != nil {
		return fmt.Errorf("read %s on the primary: %w", o.NS, err)
	}
	defer cur.Close(ctx)
	var copies []any
	flush := func() error {
		if len(copies) == 0 || !o.Apply || target == nil {
			copies = copies[:0]
			return nil
		}
		if _, err := target.InsertMany(ctx, copies, options.InsertMany().SetOrdered(false)); err != nil {
			return fmt.Errorf("write %d documents into %s.%s: %w", len(copies), o.NS.DB, o.Into, err)
		}
		copies = copies[:0]
		return nil
	}
	for cur.Next(ctx) {
		if isChanged[idKey(cur.Current.Lookup("_id"))] {
			continue
		}
		rep.Selected++
		rep.Unchanged++
		if target != nil {
			copies = append(copies, bson.Raw(slices.Clone(cur.Current)))
			if len(copies) >= o.BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("read %s on the primary: %w", o.NS, err)
	}
	return flush()
}
