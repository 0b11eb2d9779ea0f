package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

func init() {
	register(command{
		name:    "restore",
		summary: "undelete intercepted deletes, or (--as-of T) bring documents back to their versions at T (dry run unless --apply)",
		run:     runRestore,
	})
}

// idList is a repeatable --id flag.
type idList []string

func (l *idList) String() string     { return strings.Join(*l, " ") }
func (l *idList) Set(s string) error { *l = append(*l, s); return nil }

// restoreFlags are restore's flags as given.
type restoreFlags struct {
	db, colls, coll, from, to string
	ids                       idList
	apply, overwrite, json    bool
	asOf, filter, into        string
}

// restoreRequest is what restoreFlags ask for, checked.
type restoreRequest struct {
	sel         restore.Selection
	colls       []string // empty: the whole database
	pointInTime bool     // --as-of was given
	asOf        time.Time
	filter      bson.Raw
	into        string
	apply       bool
	overwrite   bool
}

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restore", stderr)
	var f restoreFlags
	fs.StringVar(&f.db, "db", "", "database of the deletes to restore (default WATCH_DB)")
	fs.StringVar(&f.colls, "collections", "", "comma-separated collections of the deletes to restore (default: every collection of the database)")
	fs.StringVar(&f.coll, "coll", "", "deprecated: --collections")
	fs.StringVar(&f.from, "from", "", "only deletes at or after this RFC 3339 time")
	fs.StringVar(&f.to, "to", "", "only deletes before this RFC 3339 time")
	fs.Var(&f.ids, "id", "only this _id (Extended JSON such as {\"$oid\":\"...\"} or {\"$numberLong\":\"5\"}, a 24-hex ObjectId, or a string); repeatable")
	fs.BoolVar(&f.apply, "apply", false, "write to the primary (default: dry run, report only)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace documents that exist in the primary again (default: skip them)")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&f.asOf, "as-of", "", "point-in-time restore: bring the selected documents of the one collection of --collections back to their versions at this RFC 3339 time (needs apply's ARCHIVE_HISTORY=on)")
	fs.StringVar(&f.filter, "filter", "", "with --as-of: select the documents whose current version matches this query (Extended JSON) in the primary or in DR")
	fs.StringVar(&f.into, "into", "", "with --as-of: write the selection as it was at T into this new collection of --db instead of restoring in place")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr restore [flags]
       docdbdr restore --as-of T --collections C [--id ID ... | --filter Q] [--into NEW] [flags]

Selects intercepted deletes from the archive (ARCHIVE_BUCKET) by namespace, time range and _id,
and copies DR's current version of each document back into the primary. Without --apply nothing
is written ("would restore"). A document that exists in the primary is skipped unless
--overwrite. DR's documents are read where NAMESPACE_MAP maps the primary's namespace (export
the NAMESPACE_MAP apply uses). A database or collection DR does not hold is refused (exit 2). On
a terminal a progress bar shows the documents done, the rate and the time left.

With --as-of T, every selected document of the collection that changed after T is brought back
to its version at T from the version history (the earliest archived before-image after T):
changed back, re-created (deleted after T), or removed (inserted after T); documents the
selection does not name are never touched. T before the history was switched on, or older than
ARCHIVE_EXPIRATION_DAYS, is refused.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, err := loadToolEnv(stderr)
	if err != nil {
		return err
	}
	req, err := f.request(env.cfg.WatchDB)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	reader, err := env.requireArchive(ctx, "restore")
	if err != nil {
		return err
	}
	nsmap, err := env.namespaceMap()
	if err != nil {
		return err
	}
	primary, dr, err := env.connectBoth(ctx)
	if err != nil {
		return err
	}
	defer disconnect(primary, dr)
	if !req.pointInTime {
		rep, err := undelete(ctx, env, req, restore.Options{Primary: primary, DR: dr, Archive: reader, MapNamespace: nsmap}, stderr)
		if err != nil {
			return err
		}
		if f.json {
			return rep.WriteJSON(stdout)
		}
		return rep.WriteTable(stdout)
	}
	rep, err := restore.RunAsOf(ctx, restore.AsOfOptions{Primary: primary, DR: dr, Archive: reader,
		Limits: apply.NewMongoWriter(dr).WithStateDB(env.cfg.DRStateDB), NS: changeevent.Namespace{DB: req.sel.DB, Coll: req.sel.Coll},
		AsOf: req.asOf, IDs: req.sel.IDs, Filter: req.filter, Into: req.into, MapNamespace: nsmap, Retention: env.cfg.ArchiveExpiration,
		Apply: req.apply, Logger: env.log})
	if err != nil {
		return err
	}
	if f.json {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
}

// request checks the flags and resolves their defaults (watchDB is WATCH_DB); every problem found
// is in the error.
func (f *restoreFlags) request(watchDB string) (restoreRequest, error) {
	r := restoreRequest{sel: restore.Selection{DB: cmp.Or(f.db, watchDB), IDs: f.ids}, into: f.into, apply: f.apply, overwrite: f.overwrite}
	var errs []error
	if f.coll != "" && f.colls != "" {
		errs = append(errs, errors.New("give --collections (or the deprecated --coll), not both"))
	}
	for _, c := range strings.Split(f.colls+f.coll, ",") {
		if c = strings.TrimSpace(c); c != "" {
			r.colls = append(r.colls, c)
		}
	}
	if r.sel.DB == "" {
		errs = append(errs, errors.New("no database: set WATCH_DB or pass --db"))
	}
	for _, t := range []struct {
		flag, value string
		dst         *time.Time
	}{{"--from", f.from, &r.sel.From}, {"--to", f.to, &r.sel.To}} {
		if t.value == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: want an RFC 3339 time such as 2024-03-01T10:00:00Z: %w", t.flag, err))
		}
		*t.dst = v
	}
	if f.asOf != "" {
		v, err := time.Parse(time.RFC3339, f.asOf)
		if err != nil {
			errs = append(errs, fmt.Errorf("--as-of: want an RFC 3339 time such as 2024-03-01T10:42:00Z: %w", err))
		}
		r.pointInTime, r.asOf = true, v
		if len(r.colls) != 1 {
			errs = append(errs, errors.New("--as-of needs one collection: --collections C"))
		} else {
			r.sel.Coll = r.colls[0]
		}
		if f.from != "" || f.to != "" || f.overwrite {
			errs = append(errs, errors.New("--from, --to and --overwrite are for undeletes, not --as-of"))
		}
		if f.filter != "" && len(f.ids) > 0 {
			errs = append(errs, errors.New("--filter and --id cannot be combined"))
		}
	} else if f.filter != "" || f.into != "" {
		errs = append(errs, errors.New("--filter and --into need --as-of"))
	}
	if f.filter != "" {
		if err := bson.UnmarshalExtJSON([]byte(f.filter), false, &r.filter); err != nil {
			errs = append(errs, fmt.Errorf("--filter: want a query document in Extended JSON such as {\"status\": \"paid\"}: %w", err))
		}
	}
	return r, errors.Join(errs...)
}

// undelete restores the request's intercepted deletes, one collection after another (with
// progress on stderr), into one report. opts holds the clients, the archive and the namespace
// map.
func undelete(ctx context.Context, env *toolEnv, req restoreRequest, opts restore.Options, stderr io.Writer) (restore.Report, error) {
	// The deleted documents are in DR (apply never applies a delete): a database or collection
	// DR does not hold is a typo, or NAMESPACE_MAP is not the one apply uses.
	colls := req.colls
	if len(colls) == 0 {
		colls = []string{""}
	}
	sel := req.sel
	for _, c := range colls {
		sel.Coll = c
		if err := refuseMissing(ctx, opts.DR, "DR", drScope(sel, opts.MapNamespace)); err != nil {
			return restore.Report{}, err
		}
	}
	var rep restore.Report
	for i, c := range colls {
		sel.Coll = c
		ns := sel.DB
		if c != "" {
			ns += "." + c
		}
		progress, finish := newProgress(stderr, "restore "+ns)
		o := opts
		o.Select, o.Apply, o.Overwrite, o.Logger = sel, req.apply, req.overwrite, env.log
		o.Progress = func(done, total int) { progress(int64(done), int64(total)) }
		r, err := restore.Run(ctx, o)
		finish()
		if err != nil {
			return restore.Report{}, err
		}
		if i == 0 {
			rep = r
		} else {
			rep.Merge(r)
		}
	}
	return rep, nil
}

// drScope is where in DR the selection's documents are: its namespace through NAMESPACE_MAP.
func drScope(sel restore.Selection, nsmap func(changeevent.Namespace) changeevent.Namespace) scope.Scope {
	ns := changeevent.Namespace{DB: sel.DB, Coll: sel.Coll}
	if nsmap != nil {
		ns = nsmap(ns)
	}
	sc := scope.Scope{DB: ns.DB}
	if sel.Coll != "" {
		sc.Collections = []string{ns.Coll}
	}
	return sc
}
