package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
)

func init() {
	register(command{
		name:    "history",
		summary: "every archived version of one document, in cluster-time order, with what each change did",
		run:     runHistory,
	})
}

func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("history", stderr)
	db := fs.String("db", "", "database of the document (default WATCH_DB)")
	coll := addCollectionFlag(fs, "collection of the document (required)")
	id := fs.String("id", "", "the document's _id (Extended JSON such as {\"$oid\":\"...\"}, a 24-hex ObjectId, or a string; required)")
	asJSON := fs.Bool("json", false, "print the versions as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr history --collection C --id ID [flags]

Lists every archived version of one document: the version history (apply's ARCHIVE_HISTORY=on)
and the delete archive, in cluster-time order, each with its operation, whether its before-image
is exact, and what the change did field by field (into the next version; the newest into DR's
current copy). With DR configured, only the archive objects that apply's ledger names for the
document are read; without, every line of the collection.

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
	ns := changeevent.Namespace{DB: *db}
	if ns.DB == "" {
		ns.DB = env.cfg.WatchDB
	}
	var errs []error
	ns.Coll, err = coll.value()
	errs = append(errs, err)
	if ns.DB == "" {
		errs = append(errs, errors.New("no database: set WATCH_DB or pass --db"))
	}
	if ns.Coll == "" && err == nil {
		errs = append(errs, errors.New("--collection is required"))
	}
	if *id == "" {
		errs = append(errs, errors.New("--id is required"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	reader, err := env.requireArchive(ctx, "history")
	if err != nil {
		return err
	}
	nsmap, err := env.namespaceMap()
	if err != nil {
		return err
	}
	opts := restore.HistoryOptions{Archive: reader, MapNamespace: nsmap, NS: ns, ID: *id}
	if env.cfg.DR.URI != "" || env.cfg.DR.SecretARN != "" {
		dr, err := env.connect(ctx, "DR", env.cfg.DR)
		if err != nil {
			return err
		}
		defer disconnect(dr)
		opts.DR = dr
		// The ledger names the objects holding the document's lines: only those are read.
		opts.Index = apply.NewMongoWriter(dr).WithStateDB(env.cfg.DRStateDB)
	}
	vs, err := restore.History(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		return restore.WriteHistoryJSON(stdout, vs)
	}
	return restore.WriteHistoryTable(stdout, ns, *id, vs)
}
