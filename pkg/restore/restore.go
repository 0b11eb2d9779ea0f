// Package restore undoes deletes: it selects intercepted deletes from the S3 archive (by
// namespace, time range or _id) and copies the DR cluster's current version of each document back
// into the primary. DR still has the document because apply never applies deletes.
//
// A run is a dry run unless Options.Apply is set: it reports what would be restored and writes
// nothing. A document that exists in the primary again is left alone unless Options.Overwrite is
// set; without it the write is an insert, so a document recreated in the primary between the
// check and the write is still never overwritten.
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

// DeleteArchive reads archived records; ArchiveReader implements it over S3. Run calls it from one
// goroutine, and fn runs on that goroutine.
type DeleteArchive interface {
	// Records calls fn for every record of db (and coll unless "") with a cluster time in
	// [from, to) (zero: open).
	Records(ctx context.Context, db, coll string, from, to time.Time, fn func(archive.Record) error) error
}

// Selection chooses intercepted deletes. DB is required; the other fields narrow it.
type Selection struct {
	DB   string
	Coll string    // "" for every collection of DB
	From time.Time // deleted at or after; zero for no lower bound
	To   time.Time // deleted before; zero for no upper bound
	IDs  []string  // _id values (see ParseID); empty for all
}

// Options configures a restore. Primary, DR, Archive and Select.DB are required.
type Options struct {
	Primary *mongo.Client
	DR      *mongo.Client
	Archive DeleteArchive
	Select  Selection
	// MapNamespace gives the DR namespace of a primary namespace (NAMESPACE_MAP); nil keeps it.
	MapNamespace func(changeevent.Namespace) changeevent.Namespace

	Apply     bool // write to the primary; false is a dry run
	Overwrite bool // replace documents that exist in the primary
	BatchSize int  // ids looked up per query; default 500
	MaxListed int  // items kept in the report; default 1000 (counts are always complete)
	Logger    *slog.Logger
	// Progress, when set, is called from Run's goroutine with the documents handled so far and
	// the number selected: once the selection is read, then after each batch.
	Progress func(done, selected int)
}

// Outcome is what happened (or, in a dry run, would happen) to one selected document.
type Outcome string

// The outcomes.
const (
	Restored       Outcome = "restored"        // inserted into the primary
	WouldRestore   Outcome = "would restore"   // dry run
	Overwritten    Outcome = "overwritten"     // replaced in the primary (Overwrite)
	WouldOverwrite Outcome = "would overwrite" // dry run with Overwrite
	SkippedExists  Outcome = "skipped: exists" // in the primary and Overwrite not set
	MissingInDR    Outcome = "missing in DR"   // nothing to copy back
)

// Item is one selected document.
type Item struct {
	NS        string    `json:"ns"`
	ID        string    `json:"_id"` // canonical Extended JSON
	DeletedAt time.Time `json:"deletedAt"`
	Outcome   Outcome   `json:"outcome"`
}

// Report is the outcome of a restore.
type Report struct {
	DryRun    bool `json:"dryRun"`
	Overwrite bool `json:"overwrite"`
	// Selected counts distinct documents; a document deleted several times is restored once.
	Selected    int `json:"selected"`
	Restored    int `json:"restored"`    // inserted into the primary (0 in a dry run)
	Overwritten int `json:"overwritten"` // replaced in the primary (0 in a dry run)
	// WouldRestore and WouldOverwrite are a dry run's counts of what --apply would write.
	WouldRestore   int    `json:"wouldRestore"`
	WouldOverwrite int    `json:"wouldOverwrite"`
	SkippedExists  int    `json:"skippedExists"`
	MissingInDR    int    `json:"missingInDR"`
	Items          []Item `json:"items"` // up to MaxListed, in selection order
}

// Merge adds the counts and items of another run (over other namespaces) to r.
func (r *Report) Merge(o Report) {
	r.Selected += o.Selected
	r.Restored += o.Restored
	r.Overwritten += o.Overwritten
	r.WouldRestore += o.WouldRestore
	r.WouldOverwrite += o.WouldOverwrite
	r.SkippedExists += o.SkippedExists
	r.MissingInDR += o.MissingInDR
	r.Items = append(r.Items, o.Items...)
}

func (o *Options) defaults() error {
	if o.Primary == nil || o.DR == nil || o.Archive == nil {
		return errors.New("restore: primary, DR and archive are required")
	}
	if o.Select.DB == "" {
		return errors.New("restore: the selection needs a database")
	}
	if !o.Select.From.IsZero() && !o.Select.To.IsZero() && !o.Select.From.Before(o.Select.To) {
		return fmt.Errorf("restore: empty time range [%s, %s)", o.Select.From, o.Select.To)
	}
	o.BatchSize = cmp.Or(max(o.BatchSize, 0), 500)
	o.MaxListed = cmp.Or(max(o.MaxListed, 0), 1000)
	if o.MapNamespace == nil {
		o.MapNamespace = func(ns changeevent.Namespace) changeevent.Namespace { return ns }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// selected is one distinct document chosen from the archive.
type selected struct {
	ns        changeevent.Namespace
	key       string // canonical Extended JSON of id
	id        bson.RawValue
	deletedAt time.Time
}

// Run selects the intercepted deletes and restores them (or, in a dry run, reports what it
// would do).
func Run(ctx context.Context, opts Options) (Report, error) {
	if err := opts.defaults(); err != nil {
		return Report{}, err
	}
	sel, err := selectDeletes(ctx, opts)
	if err != nil {
		return Report{}, err
	}
	rep := Report{DryRun: !opts.Apply, Overwrite: opts.Overwrite, Selected: len(sel)}
	done := 0
	if opts.Progress != nil {
		opts.Progress(0, len(sel))
	}
	for batch := range slices.Chunk(sel, opts.BatchSize) {
		if err := restoreBatch(ctx, opts, batch, &rep); err != nil {
			return rep, err
		}
		done += len(batch)
		if opts.Progress != nil {
			opts.Progress(done, len(sel))
		}
	}
	opts.Logger.Info("restore complete", "dryRun", rep.DryRun, "selected", rep.Selected, "restored", rep.Restored,
		"overwritten", rep.Overwritten, "wouldRestore", rep.WouldRestore, "wouldOverwrite", rep.WouldOverwrite, "skippedExists", rep.SkippedExists, "missingInDR", rep.MissingInDR)
	return rep, nil
}

// selectDeletes reads the archive and returns the distinct deleted documents of the selection,
// grouped by namespace (in archive order within one), each with its latest delete time.
func selectDeletes(ctx context.Context, opts Options) ([]selected, error) {
	want := map[string]bool{}
	for _, s := range opts.Select.IDs {
		id, err := ParseID(s)
		if err != nil {
			return nil, err
		}
		want[idKey(id)] = true
	}
	var out []selected
	index := map[string]int{} // ns + key → position in out
	err := opts.Archive.Records(ctx, opts.Select.DB, opts.Select.Coll, opts.Select.From, opts.Select.To,
		func(rec archive.Record) error {
			if rec.Operation != string(changeevent.Delete) {
				return nil
			}
			id, err := rec.IDValue()
			if err != nil {
				return err
			}
			key := idKey(id)
			if len(want) > 0 && !want[key] {
				return nil
			}
			ns := changeevent.Namespace{DB: rec.DB, Coll: rec.Coll}
			at := time.Unix(rec.Timestamp, 0).UTC()
			if i, ok := index[ns.String()+"|"+key]; ok {
				if at.After(out[i].deletedAt) {
					out[i].deletedAt = at
				}
				return nil
			}
			index[ns.String()+"|"+key] = len(out)
			out = append(out, selected{ns: ns, key: key, id: id, deletedAt: at})
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("select intercepted deletes: %w", err)
	}
	slices.SortStableFunc(out, func(a, b selected) int { return cmp.Compare(a.ns.String(), b.ns.String()) })
	return out, nil
}

// restoreBatch handles up to BatchSize selected documents (several namespaces possible).
func restoreBatch(ctx context.Context, opts Options, batch []selected, rep *Report) error {
	for len(batch) > 0 {
		n := 1
		for n < len(batch) && batch[n].ns == batch[0].ns {
			n++
		}
		if err := restoreNamespace(ctx, opts, batch[:n], rep); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// restoreNamespace restores documents of one namespace.
func restoreNamespace(ctx context.Context, opts Options, sel []selected, rep *Report) error {
	ns := sel[0].ns
	drNS := opts.MapNamespace(ns)
	primary := opts.Primary.Database(ns.DB).Collection(ns.Coll)
	dr := opts.DR.Database(drNS.DB).Collection(drNS.Coll)
	ids := make(bson.A, len(sel))
	for i, s := range sel {
		ids[i] = s.id
	}
	inDR, err := lookup(ctx, dr, ids, false)
	if err != nil {
		return fmt.Errorf("read %s on DR: %w", drNS, err)
	}
	inPrimary, err := lookup(ctx, primary, ids, true)
	if err != nil {
		return fmt.Errorf("read %s on the primary: %w", ns, err)
	}

	outcomes := make([]Outcome, len(sel))
	var inserts, replaces []int // positions in sel
	for i, s := range sel {
		_, exists := inPrimary[s.key]
		switch {
		case inDR[s.key] == nil:
			outcomes[i] = MissingInDR
		case exists && !opts.Overwrite:
			outcomes[i] = SkippedExists
		case exists:
			outcomes[i] = WouldOverwrite
			replaces = append(replaces, i)
		default:
			outcomes[i] = WouldRestore
			inserts = append(inserts, i)
		}
	}

	if opts.Apply {
		var models []mongo.WriteModel
		var pos []int
		for _, i := range inserts {
			models = append(models, mongo.NewInsertOneModel().SetDocument(inDR[sel[i].key]))
			pos = append(pos, i)
			outcomes[i] = Restored
		}
		for _, i := range replaces {
			models = append(models, mongo.NewReplaceOneModel().
				SetFilter(bson.D{{Key: "_id", Value: sel[i].id}}).
				SetReplacement(inDR[sel[i].key]).SetUpsert(true))
			pos = append(pos, i)
			outcomes[i] = Overwritten
		}
		if len(models) > 0 {
			_, err := primary.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
			var bwe mongo.BulkWriteException
			if errors.As(err, &bwe) && bwe.WriteConcernError == nil {
				for _, we := range bwe.WriteErrors {
					if we.Code != 11000 || we.Index >= len(inserts) {
						return fmt.Errorf("restore into %s: %w", ns, err)
					}
					outcomes[pos[we.Index]] = SkippedExists // recreated since the check
				}
			} else if err != nil {
				return fmt.Errorf("restore into %s: %w", ns, err)
			}
		}
	}

	for i, s := range sel {
		switch outcomes[i] {
		case Restored:
			rep.Restored++
		case WouldRestore:
			rep.WouldRestore++
		case Overwritten:
			rep.Overwritten++
		case WouldOverwrite:
			rep.WouldOverwrite++
		case SkippedExists:
			rep.SkippedExists++
		case MissingInDR:
			rep.MissingInDR++
		}
		if len(rep.Items) < opts.MaxListed {
			rep.Items = append(rep.Items, Item{NS: ns.String(), ID: s.key, DeletedAt: s.deletedAt, Outcome: outcomes[i]})
		}
	}
	return nil
}

// lookup returns the documents of c whose _id is in ids, by canonical _id key (idsOnly: the
// values are just {_id}).
func lookup(ctx context.Context, c *mongo.Collection, ids bson.A, idsOnly bool) (map[string]bson.Raw, error) {
	opts := options.Find()
	if idsOnly {
		opts.SetProjection(bson.D{{Key: "_id", Value: 1}})
	}
	cur, err := c.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}, opts)
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	out := map[string]bson.Raw{}
	for cur.Next(ctx) {
		doc := slices.Clone(cur.Current)
		out[idKey(doc.Lookup("_id"))] = doc
	}
	return out, cur.Err()
}

// ParseID reads an _id as the operator writes it: canonical or relaxed Extended JSON
// ({"$oid":"62d7..."}, {"$numberLong":"5"}, "abc", 5), or a bare 24-digit hex string, taken as
// an ObjectId, or any other bare word, taken as a string.
func ParseID(s string) (bson.RawValue, error) {
	var doc bson.Raw
	if err := bson.UnmarshalExtJSON([]byte(`{"_id":`+s+`}`), false, &doc); err == nil {
		return doc.Lookup("_id"), nil
	}
	if len(s) == 24 {
		if err := bson.UnmarshalExtJSON([]byte(`{"_id":{"$oid":"`+s+`"}}`), true, &doc); err == nil {
			return doc.Lookup("_id"), nil
		}
	}
	b, err := bson.Marshal(bson.D{{Key: "_id", Value: s}})
	if err != nil {
		return bson.RawValue{}, fmt.Errorf("parse _id %q: %w", s, err)
	}
	return bson.Raw(b).Lookup("_id"), nil
}

// idKey is the canonical Extended JSON of an _id, which keeps its type.
func idKey(id bson.RawValue) string {
	js, err := changeevent.IDJSON(id)
	if err != nil {
		return id.String()
	}
	return string(js)
}
