package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Version is one archived change of a document (docdbdr history): the event, the version it
// overwrote (Before) and what it changed, field by field, into the next known version (the next
// line's before; for the newest line, DR's current copy, or nothing after a delete).
type Version struct {
	At          time.Time           `json:"at"`
	ClusterTime primitive.Timestamp `json:"-"`
	Cluster     string              `json:"clusterTime"` // "T.I"
	Operation   string              `json:"operation"`
	EventID     string              `json:"eventId"`
	Exact       bool                `json:"beforeExact"`
	Note        string              `json:"beforeNote,omitempty"`
	Before      json.RawMessage     `json:"before"` // canonical Extended JSON; null before an insert
	Changes     []Change            `json:"changes"`
}

// Change is one field changed by an event. Path is dotted; Kind is "added", "removed",
// "changed", or "reordered" (the same fields in another order, Path empty), "created" or
// "deleted" for the whole document. Before and After are canonical Extended JSON.
type Change struct {
	Path   string          `json:"path"`
	Kind   string          `json:"kind"`
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// LineIndex finds the archive objects that hold the lines of one document, so that reading one
// document's history does not read its whole collection's. apply.MongoWriter implements it over
// apply's ledger in DR. History calls it from one goroutine.
type LineIndex interface {
	ObjectsOf(ctx context.Context, ns changeevent.Namespace, id bson.RawValue) ([]string, error)
}

// ObjectReader reads the lines of named archive objects; ArchiveReader implements it. History
// calls it from one goroutine, and fn runs on that goroutine.
type ObjectReader interface {
	Objects(ctx context.Context, keys []string, fn func(archive.Record) error) error
}

// HistoryOptions configures History. Archive and NS are required; DR, when set, gives the newest
// line's "after" (DR's current copy of the document, at MapNamespace(NS)). With Index (and an
// Archive that is an ObjectReader), only the objects the ledger names for the document are read;
// otherwise every line of the collection is.
type HistoryOptions struct {
	Archive      VersionArchive
	Index        LineIndex
	DR           *mongo.Client
	MapNamespace func(changeevent.Namespace) changeevent.Namespace
	NS           changeevent.Namespace
	ID           string // see ParseID
}

// History returns every archived version of one document, in cluster-time order.
func History(ctx context.Context, opts HistoryOptions) ([]Version, error) {
	id, err := ParseID(opts.ID)
	if err != nil {
		return nil, err
	}
	key := idKey(id)
	type line struct {
		ts  primitive.Timestamp
		off int64
		rec archive.Record
	}
	var lines []line
	visit := func(rec archive.Record) error {
		if !changeevent.OperationType(rec.Operation).IsDocumentChange() || rec.DB != opts.NS.DB || rec.Coll != opts.NS.Coll {
			return nil
		}
		rid, err := rec.IDValue()
		if err != nil || idKey(rid) != key {
			return err
		}
		ts, err := rec.ClusterTimestamp()
		if err != nil {
			return err
		}
		lines = append(lines, line{ts: ts, off: rec.Kafka.Offset, rec: rec})
		return nil
	}
	objects, indexed := opts.Archive.(ObjectReader)
	if opts.Index != nil && indexed {
		keys, err := opts.Index.ObjectsOf(ctx, opts.NS, id)
		if err == nil {
			err = objects.Objects(ctx, keys, visit)
		}
		if err != nil {
			return nil, fmt.Errorf("read the archive of %s %s: %w", opts.NS, key, err)
		}
	} else if err := opts.Archive.Versions(ctx, opts.NS.DB, opts.NS.Coll, time.Time{}, time.Time{}, visit); err != nil {
		return nil, fmt.Errorf("read the archive of %s: %w", opts.NS, err)
	}
	slices.SortStableFunc(lines, func(a, b line) int {
		if c := a.ts.Compare(b.ts); c != 0 {
			return c
		}
		return int(a.off - b.off)
	})
	docs := make([]bson.Raw, len(lines)+1) // docs[i]: before line i; docs[len]: the newest version
	for i, l := range lines {
		if docs[i], err = l.rec.BeforeDocument(); err != nil {
			return nil, fmt.Errorf("event %s: %w", l.rec.EventID, err)
		}
	}
	if n := len(lines); n > 0 && lines[n-1].rec.Operation != string(changeevent.Delete) && opts.DR != nil {
		ns := opts.NS
		if opts.MapNamespace != nil {
			ns = opts.MapNamespace(ns)
		}
		cur, err := lookup(ctx, opts.DR.Database(ns.DB).Collection(ns.Coll), bson.A{id}, false)
		if err != nil {
			return nil, fmt.Errorf("read %s on DR: %w", ns, err)
		}
		docs[n] = cur[key]
	}
	out := make([]Version, len(lines))
	for i, l := range lines {
		out[i] = Version{At: time.Unix(int64(l.ts.T), 0).UTC(), ClusterTime: l.ts, Cluster: fmt.Sprintf("%d.%d", l.ts.T, l.ts.I),
			Operation: l.rec.Operation, EventID: l.rec.EventID, Exact: l.rec.BeforeExact, Note: l.rec.BeforeNote,
			Before: l.rec.Before, Changes: Diff(docs[i], docs[i+1])}
		if l.rec.Operation == string(changeevent.Insert) {
			out[i].Exact = true
		}
		if i == len(lines)-1 && docs[i+1] == nil && l.rec.Operation != string(changeevent.Delete) {
			out[i].Changes = nil // the version after it is not known here
		}
	}
	return out, nil
}

// Diff lists what changed from document a to document b, field by field: embedded documents
// are compared field by field (dotted paths), any other value (arrays included) as a whole, by
// its bytes (so a type change is a change). nil stands for no document.
func Diff(a, b bson.Raw) []Change {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		return []Change{{Kind: "created", After: valueJSON(bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: b})}}
	case b == nil:
		return []Change{{Kind: "deleted", Before: valueJSON(bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: a})}}
	}
	changes := diffDocs("", a, b)
	if len(changes) == 0 && !bytes.Equal(a, b) {
		changes = []Change{{Kind: "reordered"}}
	}
	return changes
}

func diffDocs(prefix string, a, b bson.Raw) []Change {
	ae, _ := a.Elements()
	be, _ := b.Elements()
	inB := make(map[string]bson.RawValue, len(be))
	for _, e := range be {
		inB[e.Key()] = e.Value()
	}
	var out []Change
	seen := make(map[string]bool, len(ae))
	for _, e := range ae {
		k, av := e.Key(), e.Value()
		seen[k] = true
		bv, ok := inB[k]
		switch {
		case !ok:
			out = append(out, Change{Path: prefix + k, Kind: "removed", Before: valueJSON(av)})
		case av.Type == bson.TypeEmbeddedDocument && bv.Type == bson.TypeEmbeddedDocument:
			sub := diffDocs(prefix+k+".", av.Value, bv.Value)
			if len(sub) == 0 && !bytes.Equal(av.Value, bv.Value) {
				sub = []Change{{Path: prefix + k, Kind: "reordered"}}
			}
			out = append(out, sub...)
		case av.Type != bv.Type || !bytes.Equal(av.Value, bv.Value):
			out = append(out, Change{Path: prefix + k, Kind: "changed", Before: valueJSON(av), After: valueJSON(bv)})
		}
	}
	for _, e := range be {
		if !seen[e.Key()] {
			out = append(out, Change{Path: prefix + e.Key(), Kind: "added", After: valueJSON(e.Value())})
		}
	}
	return out
}

// valueJSON is one BSON value as canonical Extended JSON.
func valueJSON(v bson.RawValue) json.RawMessage {
	js, err := bson.MarshalExtJSON(bson.D{{Key: "v", Value: v}}, true, false)
	if err != nil {
		return json.RawMessage(fmt.Sprintf("%q", v.String()))
	}
	return js[len(`{"v":`) : len(js)-1]
}

// WriteHistoryTable writes versions for people: one row per event, its changes on the row.
func WriteHistoryTable(w io.Writer, ns changeevent.Namespace, id string, vs []Version) error {
	var b strings.Builder
	fmt.Fprintf(&b, "history of %s _id %s: %d archived versions\n", ns, id, len(vs))
	if len(vs) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "at\tclusterTime\toperation\texact\tchanges")
		for _, v := range vs {
			exact := "yes"
			if !v.Exact {
				exact = "no: " + v.Note
			}
			var cs []string
			for _, c := range v.Changes {
				switch c.Kind {
				case "added":
					cs = append(cs, fmt.Sprintf("+%s=%s", c.Path, c.After))
				case "removed":
					cs = append(cs, fmt.Sprintf("-%s (was %s)", c.Path, c.Before))
				case "changed":
					cs = append(cs, fmt.Sprintf("%s: %s -> %s", c.Path, c.Before, c.After))
				default:
					cs = append(cs, strings.TrimSpace(c.Kind+" "+c.Path))
				}
			}
			if v.Changes == nil {
				cs = []string{"(next version unknown)"}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.At.Format(time.RFC3339), v.Cluster, v.Operation, exact, strings.Join(cs, "; "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteHistoryJSON writes versions as one indented JSON array.
func WriteHistoryJSON(w io.Writer, vs []Version) error {
	if vs == nil {
		vs = []Version{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(vs)
}

// WriteTable writes the point-in-time restore report for people.
func (r AsOfReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	mode := "restore --as-of"
	if r.DryRun {
		mode += " (dry run: nothing written; --apply to write)"
	}
	into := "in place"
	if r.Into != "" {
		into = "into " + r.Into
	}
	fmt.Fprintf(&b, "%s %s to %s, %s: %d selected, %d changed back, %d re-created, %d removed (inserted after T), %d unchanged, %d unknown at T, %d inexact\n",
		mode, r.NS, r.AsOf.Format(time.RFC3339), into, r.Selected, r.ChangedBack, r.Recreated, r.Removed, r.Unchanged, r.Unknown, r.Inexact)
	if len(r.Items) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "_id\tfirst change after T\tat\toutcome\tnote")
		for _, it := range r.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.ID, it.Operation, it.ChangedAt.Format(time.RFC3339), it.Outcome, it.Note)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the point-in-time restore report as one indented JSON document.
func (r AsOfReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}
