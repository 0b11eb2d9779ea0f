package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/docdb-dr/docdb-dr/pkg/restore"
)

func init() {
	register(command{
		name:    "restore-collection",
		summary: "bring back a dropped, renamed-over or dropDatabase'd collection from DR (dry run unless --apply)",
		run:     runRestoreCollection,
	})
}

func runRestoreCollection(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restore-collection", stderr)
	db := fs.String("db", "", "database of the removed collection (default WATCH_DB)")
	collFlag := addCollectionFlag(fs, "the removed collection, as named in the primary (required)")
	event := fs.String("event", "", "eventId of the archive line to restore from, when the collection was removed more than once (default: the latest)")
	into := fs.String("into", "", "write into this collection of the database instead of the collection's own name")
	doApply := fs.Bool("apply", false, "write to the primary (default: dry run, report only)")
	overwrite := fs.Bool("overwrite", false, "replace documents that exist in the target (default: skip them)")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr restore-collection --collection C [flags]

When a drop, rename or dropDatabase is intercepted, apply keeps what it removed in a DR side
collection (<coll>.dropped.<T>-<I>) and names it in the event's archive line (preservedAs).
This finds that line in the archive (ARCHIVE_BUCKET) and copies the side collection's documents
back into the primary, byte for byte. Without --apply nothing is written. A document that exists
in the target is skipped unless --overwrite.

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
	if *db == "" {
		*db = env.cfg.WatchDB
	}
	var errs []error
	if *db == "" {
		errs = append(errs, errors.New("no database: set WATCH_DB or pass --db"))
	}
	coll, err := collFlag.value()
	errs = append(errs, err)
	if coll == "" && err == nil {
		errs = append(errs, errors.New("--collection is required"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	reader, err := env.requireArchive(ctx, "restore-collection")
	if err != nil {
		return err
	}
	primary, dr, err := env.connectBoth(ctx)
	if err != nil {
		return err
	}
	defer disconnect(primary, dr)

	rep, err := restore.Collection(ctx, restore.CollectionOptions{Primary: primary, DR: dr, Archive: reader,
		DB: *db, Coll: coll, EventID: *event, Into: *into, Apply: *doApply, Overwrite: *overwrite, Logger: env.log})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	verb := "restored"
	if rep.DryRun {
		verb = "would restore"
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "event\t%s (%s at %s)\n", rep.Event, rep.Operation, rep.RemovedAt.Format("2006-01-02T15:04:05Z"))
	fmt.Fprintf(tw, "from DR\t%s\n", rep.Source)
	fmt.Fprintf(tw, "into primary\t%s\n", rep.Target)
	overwrote := "overwrote"
	if rep.DryRun {
		overwrote = "would overwrite"
	}
	fmt.Fprintf(tw, "documents\t%d found, %s %d, %s %d, skipped %d (exist)\n", rep.Found, verb, rep.Restored, overwrote, rep.Overwritten, rep.SkippedExists)
	return tw.Flush()
}
