// Package verify compares the primary and the DR copy of a replication scope document by
// document and says whether they really differ.
//
// For each collection it first reads both document counts, then walks both sides in parallel _id
// ranges: two cursors sorted by _id, merged, so memory stays bounded whatever the collection
// size. Two documents with the same _id are equal only when their raw BSON bytes are equal, so a
// change of type alone (int32 → int64) or of field order is a difference. A document of DR that the
// primary lacks is "extra"; when the archive shows that its delete was intercepted (or its
// collection's drop), it is an intercepted delete: DR is meant to keep it, it is not an error.
//
// Memory: besides the cursors' batches, verify keeps the _id of every extra DR document (to match
// them against the archive afterwards) and up to MaxListed ids per category. Documents written
// while the scan runs may show as differences: verify when apply has caught up, and re-run to
// tell a lag from a real difference.
package verify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/bootstrap/partition"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// InterceptedLog lists what the apply side intercepted into the archive for one primary
// namespace. Intercepted calls fn for each archived operation: op is "delete" with the
// document's _id, or "drop", "rename" or "dropDatabase" (id is then the zero RawValue).
// pkg/restore's ArchiveReader implements it. Run calls it from one goroutine, after the
// comparison workers finished, and fn runs on that goroutine.
type InterceptedLog interface {
	Intercepted(ctx context.Context, ns changeevent.Namespace, fn func(op string, id bson.RawValue) error) error
}

// Options configures a comparison. Primary, DR and Scope are required.
type Options struct {
	Primary *mongo.Client
	DR      *mongo.Client
	Scope   scope.Scope
	// MapNamespace gives the DR namespace of a primary namespace (NAMESPACE_MAP); nil keeps it.
	MapNamespace func(changeevent.Namespace) changeevent.Namespace

	// Archive classifies extra DR documents; nil leaves every extra document unexplained.
	Archive InterceptedLog

	Workers   int // parallel range comparisons; default 4
	Ranges    int // ranges per collection; default 4 × Workers
	MaxListed int // ids listed per category and collection in the report; default 20

	Logger *slog.Logger
}

// Report is the outcome of a comparison.
type Report struct {
	Scope       scope.Scope        `json:"scope"`
	Collections []CollectionReport `json:"collections"`
	Totals      Counts             `json:"totals"`
	Elapsed     time.Duration      `json:"elapsedNs"`
}

// Counts are the per-category document counts.
type Counts struct {
	Equal       int64 `json:"equal"`
	Missing     int64 `json:"missingInDR"`        // in the primary, not in DR
	Different   int64 `json:"different"`          // same _id, different bytes
	Extra       int64 `json:"extraInDR"`          // in DR, not in the primary, not explained by the archive
	Intercepted int64 `json:"interceptedDeletes"` // in DR, not in the primary, delete or drop archived
}

// Real returns the number of documents that are real differences.
func (c Counts) Real() int64 { return c.Missing + c.Different + c.Extra }

func (c *Counts) add(o Counts) {
	c.Equal += o.Equal
	c.Missing += o.Missing
	c.Different += o.Different
	c.Extra += o.Extra
	c.Intercepted += o.Intercepted
}

// CollectionReport is the comparison of one collection.
type CollectionReport struct {
	Name         string `json:"name"`
	DRNamespace  string `json:"drNamespace"`
	PrimaryCount int64  `json:"primaryCount"` // server's count before the scan
	DRCount      int64  `json:"drCount"`
	Ranges       int    `json:"ranges"`
	Counts
	// Up to MaxListed ids per category, as canonical Extended JSON, in _id order.
	MissingIDs     []string     `json:"missingIds,omitempty"`
	Differences    []Difference `json:"differences,omitempty"`
	ExtraIDs       []string     `json:"extraIds,omitempty"`
	InterceptedIDs []string     `json:"interceptedIds,omitempty"`
	// Dropped is set when the archive holds a drop of the collection.
	Dropped bool `json:"droppedInPrimary,omitempty"`
}

// Difference describes one document whose versions differ.
type Difference struct {
	ID      string   `json:"_id"`
	Fields  []string `json:"fields"` // e.g. "qty: int32 → int64", "name: value differs", "tag: missing in DR"
	Primary string   `json:"primarySha256"`
	DR      string   `json:"drSha256"`
}

// HasDifferences reports whether the scope has real differences (the CLI then exits non-zero).
// Intercepted deletes are expected and do not count.
func (r Report) HasDifferences() bool { return r.Totals.Real() > 0 }

func (o *Options) defaults() error {
	if o.Primary == nil || o.DR == nil {
		return errors.New("verify: primary and DR clients are required")
	}
	if err := o.Scope.Validate(); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	o.Workers = cmp.Or(max(o.Workers, 0), 4)
	o.Ranges = cmp.Or(max(o.Ranges, 0), 4*o.Workers)
	o.MaxListed = cmp.Or(max(o.MaxListed, 0), 20)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

func (o *Options) drNamespace(coll string) changeevent.Namespace {
	ns := changeevent.Namespace{DB: o.Scope.DB, Coll: coll}
	if o.MapNamespace == nil {
		return ns
	}
	return o.MapNamespace(ns)
}

// Run compares the scope. A returned error means the comparison could not be completed; a
// completed comparison with differences returns a Report whose HasDifferences is true.
func Run(ctx context.Context, opts Options) (Report, error) {
	if err := opts.defaults(); err != nil {
		return Report{}, err
	}
	began := time.Now()
	colls, err := collections(ctx, opts)
	if err != nil {
		return Report{}, err
	}

	// Counts first, then the ranges of every collection.
	accs := make([]*collAcc, len(colls))
	var tasks []task
	for i, c := range colls {
		p := opts.Primary.Database(opts.Scope.DB).Collection(c)
		drNS := opts.drNamespace(c)
		d := opts.DR.Database(drNS.DB).Collection(drNS.Coll)
		a := &collAcc{rep: CollectionReport{Name: c, DRNamespace: drNS.String()}, primary: p, dr: d,
			extras: map[string]bson.RawValue{}}
		if a.rep.PrimaryCount, err = p.EstimatedDocumentCount(ctx); err != nil {
			return Report{}, fmt.Errorf("count %s.%s on the primary: %w", opts.Scope.DB, c, err)
		}
		if a.rep.DRCount, err = d.EstimatedDocumentCount(ctx); err != nil {
			return Report{}, fmt.Errorf("count %s on DR: %w", drNS, err)
		}
		plan, err := partition.Split(ctx, opts.Ranges, p, d)
		if err != nil {
			return Report{}, err
		}
		a.rep.Ranges = len(plan.Ranges)
		for _, r := range plan.Ranges {
			tasks = append(tasks, task{acc: a, rng: r})
		}
		accs[i] = a
	}

	if err := compareAll(ctx, opts, tasks); err != nil {
		return Report{}, err
	}

	rep := Report{Scope: opts.Scope}
	for _, a := range accs {
		if err := classifyExtras(ctx, opts, a); err != nil {
			return Report{}, err
		}
		a.finish(opts.MaxListed)
		rep.Collections = append(rep.Collections, a.rep)
		rep.Totals.add(a.rep.Counts)
	}
	rep.Elapsed = time.Since(began)
	opts.Logger.Info("verify complete", "scope", opts.Scope.ID(), "equal", rep.Totals.Equal,
		"missing", rep.Totals.Missing, "different", rep.Totals.Different, "extra", rep.Totals.Extra,
		"intercepted", rep.Totals.Intercepted, "elapsed", rep.Elapsed)
	return rep, nil
}

// collections lists the scope's collections. For a whole-database scope without namespace
// mapping, collections that exist only in DR (dropped in the primary) are included too.
func collections(ctx context.Context, opts Options) ([]string, error) {
	colls, err := opts.Scope.Resolve(ctx, opts.Primary)
	if err != nil {
		return nil, err
	}
	if len(opts.Scope.Collections) == 0 && opts.MapNamespace == nil {
		drColls, err := opts.Scope.Resolve(ctx, opts.DR)
		if err != nil {
			return nil, err
		}
		colls = append(colls, drColls...)
		slices.Sort(colls)
		colls = slices.Compact(colls)
	}
	return colls, nil
}

type task struct {
	acc *collAcc
	rng partition.Range
}

// collAcc accumulates one collection's results from concurrent range comparisons.
type collAcc struct {
	primary, dr *mongo.Collection

	mu      sync.Mutex
	rep     CollectionReport
	missing []bson.RawValue
	diffs   []diffAt
	extras  map[string]bson.RawValue // every extra id (canonical JSON → value), to classify
	// intercepted are the extra ids the archive explains, moved out of extras.
	intercepted []bson.RawValue
}

type diffAt struct {
	id bson.RawValue
	d  Difference
}

// compareAll runs the tasks on opts.Workers workers; the first error stops them all.
func compareAll(ctx context.Context, opts Options, tasks []task) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan task)
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range ch {
				if err := compareRange(ctx, t, opts.MaxListed); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
feed:
	for _, t := range tasks {
		select {
		case ch <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	return context.Cause(ctx)
}

// side is one cursor of the merge, with the order check.
type side struct {
	name string
	cur  *mongo.Cursor
	ok   bool
	id   bson.RawValue // of the current document
	prev bson.RawValue
}

func (s *side) next(ctx context.Context) error {
	s.ok = s.cur.Next(ctx)
	if !s.ok {
		if err := s.cur.Err(); err != nil {
			return fmt.Errorf("read %s: %w", s.name, err)
		}
		return nil
	}
	id := s.cur.Current.Lookup("_id")
	s.prev, s.id = s.id, bson.RawValue{Type: id.Type, Value: bytes.Clone(id.Value)}
	if s.prev.Type != 0 && partition.Compare(s.prev, s.id) >= 0 {
		return fmt.Errorf("%s returned _id %s after %s: the server's _id order differs from the one verify assumes",
			s.name, s.id, s.prev)
	}
	return nil
}

// compareRange merges the range's two sorted cursors.
func compareRange(ctx context.Context, t task, maxListed int) error {
	find := func(c *mongo.Collection, name string) (*side, error) {
		cur, err := c.Find(ctx, t.rng.Filter(bson.RawValue{}), options.Find().
			SetSort(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(1000))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		s := &side{name: name, cur: cur}
		return s, s.next(ctx)
	}
	p, err := find(t.acc.primary, "primary "+t.acc.primary.Database().Name()+"."+t.acc.primary.Name())
	if err != nil {
		return err
	}
	defer p.cur.Close(ctx)
	d, err := find(t.acc.dr, "DR "+t.acc.rep.DRNamespace)
	if err != nil {
		return err
	}
	defer d.cur.Close(ctx)

	var local Counts
	var missing []bson.RawValue
	var diffs []diffAt
	extras := map[string]bson.RawValue{}
	for p.ok || d.ok {
		c := 0
		switch {
		case !d.ok:
			c = -1
		case !p.ok:
			c = 1
		default:
			c = partition.Compare(p.id, d.id)
		}
		switch {
		case c == 0:
			if bytes.Equal(p.cur.Current, d.cur.Current) {
				local.Equal++
			} else {
				local.Different++
				if len(diffs) < maxListed {
					diffs = append(diffs, diffAt{id: p.id, d: describe(p.id, p.cur.Current, d.cur.Current)})
				}
			}
		case c < 0:
			local.Missing++
			if len(missing) < maxListed {
				missing = append(missing, p.id)
			}
		default:
			local.Extra++
			extras[idJSON(d.id)] = d.id
		}
		if c <= 0 {
			if err := p.next(ctx); err != nil {
				return err
			}
		}
		if c >= 0 {
			if err := d.next(ctx); err != nil {
				return err
			}
		}
	}

	a := t.acc
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rep.Counts.add(local)
	a.missing = append(a.missing, missing...)
	a.diffs = append(a.diffs, diffs...)
	for k, v := range extras {
		a.extras[k] = v
	}
	return nil
}

// classifyExtras moves extra documents whose delete (or collection drop) the archive holds to the
// intercepted category.
func classifyExtras(ctx context.Context, opts Options, a *collAcc) error {
	if opts.Archive == nil || len(a.extras) == 0 {
		return nil
	}
	ns := changeevent.Namespace{DB: opts.Scope.DB, Coll: a.rep.Name}
	deleted := map[string]bool{}
	err := opts.Archive.Intercepted(ctx, ns, func(op string, id bson.RawValue) error {
		switch changeevent.OperationType(op) {
		case changeevent.Delete:
			deleted[idJSON(id)] = true
		case changeevent.Drop, changeevent.Rename, changeevent.DropDatabase:
			a.rep.Dropped = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read intercepted deletes of %s: %w", ns, err)
	}
	for k, id := range a.extras {
		if a.rep.Dropped || deleted[k] {
			delete(a.extras, k)
			a.intercepted = append(a.intercepted, id)
			a.rep.Extra--
			a.rep.Intercepted++
		}
	}
	return nil
}

// finish sorts and trims the listed ids.
func (a *collAcc) finish(maxListed int) {
	byID := func(x, y bson.RawValue) int { return partition.Compare(x, y) }
	slices.SortFunc(a.missing, byID)
	a.rep.MissingIDs = listIDs(a.missing, maxListed)
	slices.SortFunc(a.diffs, func(x, y diffAt) int { return byID(x.id, y.id) })
	for _, d := range a.diffs[:min(len(a.diffs), maxListed)] {
		a.rep.Differences = append(a.rep.Differences, d.d)
	}
	extras := make([]bson.RawValue, 0, len(a.extras))
	for _, v := range a.extras {
		extras = append(extras, v)
	}
	slices.SortFunc(extras, byID)
	a.rep.ExtraIDs = listIDs(extras, maxListed)
	slices.SortFunc(a.intercepted, byID)
	a.rep.InterceptedIDs = listIDs(a.intercepted, maxListed)
}

func listIDs(ids []bson.RawValue, n int) []string {
	var out []string
	for _, id := range ids[:min(len(ids), n)] {
		out = append(out, idJSON(id))
	}
	return out
}

// idJSON renders an _id as canonical Extended JSON, the form the archive and Kafka keys use.
func idJSON(id bson.RawValue) string {
	js, err := changeevent.IDJSON(id)
	if err != nil {
		return id.String()
	}
	return string(js)
}

// describe lists the top-level fields that differ between two versions of a document.
func describe(id bson.RawValue, p, d bson.Raw) Difference {
	diff := Difference{ID: idJSON(id), Primary: shortHash(p), DR: shortHash(d)}
	pe, _ := p.Elements()
	de, _ := d.Elements()
	drByKey := map[string]bson.RawValue{}
	for _, e := range de {
		drByKey[e.Key()] = e.Value()
	}
	seen := map[string]bool{}
	for _, e := range pe {
		k, pv := e.Key(), e.Value()
		seen[k] = true
		dv, ok := drByKey[k]
		switch {
		case !ok:
			diff.Fields = append(diff.Fields, k+": missing in DR")
		case pv.Type != dv.Type:
			diff.Fields = append(diff.Fields, fmt.Sprintf("%s: %s → %s", k, typeName(pv.Type), typeName(dv.Type)))
		case !bytes.Equal(pv.Value, dv.Value):
			diff.Fields = append(diff.Fields, k+": value differs")
		}
	}
	for _, e := range de {
		if !seen[e.Key()] {
			diff.Fields = append(diff.Fields, e.Key()+": only in DR")
		}
	}
	if len(diff.Fields) == 0 {
		diff.Fields = []string{"field order differs"}
	}
	return diff
}

// typeName is the mongo shell's name of a BSON type ($type aliases).
func typeName(t bsontype.Type) string {
	names := map[bsontype.Type]string{
		bson.TypeDouble: "double", bson.TypeString: "string", bson.TypeEmbeddedDocument: "object",
		bson.TypeArray: "array", bson.TypeBinary: "binData", bson.TypeUndefined: "undefined",
		bson.TypeObjectID: "objectId", bson.TypeBoolean: "bool", bson.TypeDateTime: "date",
		bson.TypeNull: "null", bson.TypeRegex: "regex", bson.TypeDBPointer: "dbPointer",
		bson.TypeJavaScript: "javascript", bson.TypeSymbol: "symbol", bson.TypeCodeWithScope: "javascriptWithScope",
		bson.TypeInt32: "int", bson.TypeTimestamp: "timestamp", bson.TypeInt64: "long",
		bson.TypeDecimal128: "decimal", bson.TypeMinKey: "minKey", bson.TypeMaxKey: "maxKey",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return t.String()
}

// shortHash is the first 8 bytes of the SHA-256 of a document's raw BSON, in hex.
func shortHash(doc []byte) string {
	h := sha256.Sum256(doc)
	return hex.EncodeToString(h[:8])
}
