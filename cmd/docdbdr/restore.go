package main

import (
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

func runRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restore", stderr)
	db := fs.String("db", "", "database of the deletes to restore (default WATCH_DB)")
	colls := fs.String("collections", "", "comma-separated collections of the deletes to restore (default: every collection of the database)")
	coll := fs.String("coll", "", "deprecated: --collections")
	from := fs.String("from", "", "only deletes at or after this RFC 3339 time")
	to := fs.String("to", "", "only deletes before this RFC 3339 time")
	var ids idList
	fs.Var(&ids, "id", "only this _id (Extended JSON such as {\"$oid\":\"...\"} or {\"$numberLong\":\"5\"}, a 24-hex ObjectId, or a string); repeatable")
	doApply := fs.Bool("apply", false, "write to the primary (default: dry run, report only)")
	overwrite := fs.Bool("overwrite", false, "replace documents that exist in the primary again (default: skip them)")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	asOf := fs.String("as-of", "", "point-in-time restore: bring the selected documents of the one collection of --collections back to their versions at this RFC 3339 time (needs apply's ARCHIVE_HISTORY=on)")
	filter := fs.String("filter", "", "with --as-of: select the documents whose current version matches this query (Extended JSON) in the primary or in DR")
	into := fs.String("into", "", "with --as-of: write the selection as it was at T into this new collection of --db instead of restoring in place")
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
	sel := restore.Selection{DB: *db, IDs: ids}
	if sel.DB == "" {
		sel.DB = env.cfg.WatchDB
	}
	var errs []error
	if *coll != "" && *colls != "" {
		errs = append(errs, errors.New("give --collections (or the deprecated --coll), not both"))
	}
	var collList []string // empty: the whole database
	for _, c := range strings.Split(*colls+*coll, ",") {
		if c = strings.TrimSpace(c); c != "" {
			collList = append(collList, c)
		}
	}
	if sel.DB == "" {
		errs = append(errs, errors.New("no database: set WATCH_DB or pass --db"))
	}
	for _, t := range []struct {
		flag, value string
		dst         *time.Time
	}{{"--from", *from, &sel.From}, {"--to", *to, &sel.To}} {
		if t.value == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.value)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: want an RFC 3339 time such as 2024-03-01T10:00:00Z: %w", t.flag, err))
		}
		*t.dst = v
	}
	var asOfT time.Time
	if *asOf != "" {
		v, err := time.Parse(time.RFC3339, *asOf)
		if err != nil {
			errs = append(errs, fmt.Errorf("--as-of: want an RFC 3339 time such as 2024-03-01T10:42:00Z: %w", err))
		}
		asOfT = v
		if len(collList) != 1 {
			errs = append(errs, errors.New("--as-of needs one collection: --collections C"))
		} else {
			sel.Coll = collList[0]
		}
		if *from != "" || *to != "" || *overwrite {
			errs = append(errs, errors.New("--from, --to and --overwrite are for undeletes, not --as-of"))
		}
		if *filter != "" && len(ids) > 0 {
			errs = append(errs, errors.New("--filter and --id cannot be combined"))
		}
	} else if *filter != "" || *into != "" {
		errs = append(errs, errors.New("--filter and --into need --as-of"))
	}
	var query bson.Raw
	if *filter != "" {
		if err := bson.UnmarshalExtJSON([]byte(*filter), false, &query); err != nil {
			errs = append(errs, fmt.Errorf("--filter: want a query document in Extended JSON such as {\"status\": \"paid\"}: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
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
	if *asOf != "" {
		rep, err := restore.RunAsOf(ctx, restore.AsOfOptions{Primary: primary, DR: dr, Archive: reader,
			Limits: apply.NewMongoWriter(dr).WithStateDB(env.cfg.DRStateDB), NS: changeevent.Namespace{DB: sel.DB, Coll: sel.Coll},
			AsOf: asOfT, IDs: ids, Filter: query, Into: *into, MapNamespace: nsmap, Retention: env.cfg.ArchiveExpiration,
			Apply: *doApply, Logger: env.log})
		if err != nil {
			return err
		}
		if *asJSON {
			return rep.WriteJSON(stdout)
		}
		return rep.WriteTable(stdout)
	}

	// The deleted documents are in DR (apply never applies a delete): a database or collection
	// DR does not hold is a typo, or NAMESPACE_MAP is not the one apply uses.
	if len(collList) == 0 {
		collList = []string{""}
	}
	for _, c := range collList {
		sel.Coll = c
		if err := refuseMissing(ctx, dr, "DR", drScope(sel, nsmap)); err != nil {
			return err
		}
	}
	var rep restore.Report
	for i, c := range collList {
		sel.Coll = c
		ns := sel.DB
		if c != "" {
			ns += "." + c
		}
		progress, finish := newProgress(stderr, "restore "+ns)
		r, err := restore.Run(ctx, restore.Options{Primary: primary, DR: dr, Archive: reader, Select: sel,
			MapNamespace: nsmap, Apply: *doApply, Overwrite: *overwrite, Logger: env.log,
			Progress: func(done, total int) { progress(int64(done), int64(total)) }})
		finish()
		if err != nil {
			return err
		}
		if i == 0 {
			rep = r
		} else {
			rep.Merge(r)
		}
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteTable(stdout)
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
