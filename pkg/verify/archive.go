package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// ArchiveRecords reads archive lines; restore.ArchiveReader implements it over S3. CheckArchive
// calls it from one goroutine.
type ArchiveRecords interface {
	// Records calls fn for every line of db (every collection when coll is "") with a cluster
	// time in [from, to) (zero: open), on the calling goroutine.
	Records(ctx context.Context, db, coll string, from, to time.Time, fn func(archive.Record) error) error
}

// ArchiveOptions configures CheckArchive. Primary, Scope, Archive and Since are required.
type ArchiveOptions struct {
	Primary *mongo.Client
	Scope   scope.Scope
	Archive ArchiveRecords
	// Since is where the check starts in the primary's change history; it must be inside the
	// change stream's retention (DocumentDB: change_stream_log_retention_duration).
	Since time.Time
	// Settle: events newer than the end of the check minus Settle may still be on their way
	// through Kafka and apply; they are counted InFlight, not Missing (default 2m).
	Settle time.Duration
	// Intercepted reports whether the archive policy writes a line for an operation (default:
	// every delete, drop, rename and dropDatabase, the default INTERCEPT_POLICY).
	Intercepted func(changeevent.OperationType) bool
	MaxListed   int // problems listed (default 20; counts are complete)
	Now         func() time.Time
}

// ArchiveReport is the archive check's outcome.
type ArchiveReport struct {
	Scope string    `json:"scope"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	// Events are the intercepted events in the primary's history in [From, To); Lines the
	// archive lines of the scope in the same window.
	Events int `json:"events"`
	Lines  int `json:"lines"`
	// The problems: an event with no line; an event with more than one; a delete line without
	// a before-image; a line whose before-image apply could not prove (beforeExact false).
	Missing    int `json:"missing"`
	Duplicated int `json:"duplicated"`
	NullBefore int `json:"nullBefore"`
	Inexact    int `json:"inexact"`
	// Not problems: events too recent to judge, and lines whose event the check did not see
	// (written before From within the same second, or by another scope's stream).
	InFlight int            `json:"inFlight"`
	Unknown  int            `json:"unknown"`
	Problems []ArchiveIssue `json:"problems"`
}

// ArchiveIssue is one listed problem.
type ArchiveIssue struct {
	Kind        string    `json:"kind"` // missing, duplicated, null before, inexact before
	EventID     string    `json:"eventId"`
	Operation   string    `json:"operation"`
	NS          string    `json:"ns"`
	ID          string    `json:"_id,omitempty"`
	ClusterTime time.Time `json:"clusterTime"`
	Note        string    `json:"note,omitempty"`
}

// HasProblems reports whether the archive breaks its promise anywhere in the window.
func (r ArchiveReport) HasProblems() bool {
	return r.Missing+r.Duplicated+r.NullBefore+r.Inexact > 0
}

// intercepted is one event of the primary's history the archive must hold.
type intercepted struct {
	op   changeevent.OperationType
	ns   changeevent.Namespace
	id   string
	at   primitive.Timestamp
	seen int // lines
}

// CheckArchive compares the primary's change history in [Since, now) with the archive: every
// intercepted event of the scope must have exactly one line, and every delete line a before-image
// that apply proved. It reads the change stream (no documents: the events' identities only) and
// the archive's lines of the window; it writes nothing.
func CheckArchive(ctx context.Context, opts ArchiveOptions) (ArchiveReport, error) {
	if opts.Primary == nil || opts.Archive == nil || opts.Since.IsZero() {
		return ArchiveReport{}, errors.New("verify archive: primary, archive and a start time are required")
	}
	if err := opts.Scope.Validate(); err != nil {
		return ArchiveReport{}, fmt.Errorf("verify archive: %w", err)
	}
	opts.Settle = cmp.Or(opts.Settle, 2*time.Minute)
	opts.MaxListed = cmp.Or(opts.MaxListed, 20)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Intercepted == nil {
		opts.Intercepted = func(op changeevent.OperationType) bool {
			return op == changeevent.Delete || op == changeevent.Drop || op == changeevent.Rename || op == changeevent.DropDatabase
		}
	}
	end := opts.Now().UTC()
	rep := ArchiveReport{Scope: opts.Scope.String(), From: opts.Since.UTC(), To: end}

	events, order, err := readHistory(ctx, opts, end)
	if err != nil {
		return rep, err
	}
	rep.Events = len(events)
	list := func(kind string, ev *intercepted, evID, note string) {
		if len(rep.Problems) < opts.MaxListed {
			rep.Problems = append(rep.Problems, ArchiveIssue{Kind: kind, EventID: evID, Operation: string(ev.op),
				NS: ev.ns.String(), ID: ev.id, ClusterTime: changeevent.Time(ev.at).UTC(), Note: note})
		}
	}
	err = opts.Archive.Records(ctx, opts.Scope.DB, "", rep.From.Truncate(time.Second), end.Add(time.Second), func(r archive.Record) error {
		probe := changeevent.Event{Operation: changeevent.OperationType(r.Operation), NS: changeevent.Namespace{DB: r.DB, Coll: r.Coll}}
		if r.To != nil {
			probe.To = &changeevent.Namespace{DB: r.To.DB, Coll: r.To.Coll}
		}
		if !opts.Scope.Contains(&probe) {
			return nil
		}
		rep.Lines++
		ev, ok := events[r.EventID]
		if !ok {
			rep.Unknown++
			return nil
		}
		ev.seen++
		if ev.seen == 2 {
			rep.Duplicated++
			list("duplicated", ev, r.EventID, "")
		}
		if ev.seen > 1 || ev.op != changeevent.Delete {
			return nil
		}
		switch {
		case string(r.Before) == "null" || len(r.Before) == 0:
			rep.NullBefore++
			list("null before", ev, r.EventID, r.BeforeNote)
		case !r.BeforeExact:
			rep.Inexact++
			list("inexact before", ev, r.EventID, r.BeforeNote)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("verify archive: read the archive: %w", err)
	}
	settled := end.Add(-opts.Settle)
	for _, evID := range order {
		ev := events[evID]
		if ev.seen > 0 {
			continue
		}
		if changeevent.Time(ev.at).After(settled) {
			rep.InFlight++
			continue
		}
		rep.Missing++
		list("missing", ev, evID, "")
	}
	return rep, nil
}

// readHistory reads the scope's change stream from Since until it is past end or has nothing
// more, and returns the intercepted events by eventId, and their eventIds in stream order (which
// is cluster-time order: a change stream returns events in the order the cluster applied them).
func readHistory(ctx context.Context, opts ArchiveOptions, end time.Time) (map[string]*intercepted, []string, error) {
	ops := bson.A{}
	for _, op := range []changeevent.OperationType{changeevent.Delete, changeevent.Drop, changeevent.Rename, changeevent.DropDatabase} {
		if opts.Intercepted(op) {
			ops = append(ops, string(op))
		}
	}
	pipeline := append(opts.Scope.Pipeline(), bson.D{{Key: "$match", Value: bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: ops}}}}}},
		bson.D{{Key: "$project", Value: bson.D{{Key: "fullDocument", Value: 0}, {Key: "updateDescription", Value: 0}}}})
	csOpts := options.ChangeStream().
		SetStartAtOperationTime(&primitive.Timestamp{T: uint32(opts.Since.Unix())}).
		SetMaxAwaitTime(500 * time.Millisecond)
	var (
		cs  *mongo.ChangeStream
		err error
	)
	if opts.Scope.Single() {
		cs, err = opts.Primary.Database(opts.Scope.DB).Collection(opts.Scope.Collections[0]).Watch(ctx, pipeline, csOpts)
	} else {
		cs, err = opts.Primary.Database(opts.Scope.DB).Watch(ctx, pipeline, csOpts)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("verify archive: open the change stream of %s at %s (inside the change stream retention?): %w",
			opts.Scope, opts.Since.UTC().Format(time.RFC3339), err)
	}
	defer cs.Close(context.WithoutCancel(ctx))

	events := map[string]*intercepted{}
	var order []string
	idle := 0
	for idle < 2 {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				return nil, nil, fmt.Errorf("verify archive: read the change stream of %s: %w", opts.Scope, err)
			}
			idle++
			continue
		}
		idle = 0
		ev, err := changeevent.FromChangeStream(cs.Current)
		if err != nil {
			return nil, nil, fmt.Errorf("verify archive: change event: %w", err)
		}
		if !changeevent.Time(ev.ClusterTime).Before(end) {
			break
		}
		if !opts.Scope.Contains(&ev) || !opts.Intercepted(ev.Operation) {
			continue
		}
		it := &intercepted{op: ev.Operation, ns: ev.NS, at: ev.ClusterTime}
		if ev.Operation == changeevent.Delete {
			if id, err := ev.ID(); err == nil {
				it.id = idJSON(id)
			}
		}
		evID := ev.EventID()
		if _, dup := events[evID]; !dup {
			order = append(order, evID)
		}
		events[evID] = it
	}
	return events, order, nil
}
