package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/verify"
)

func init() {
	register(command{
		name:    "verify",
		summary: "compare the scope in the primary and DR document by document; exit 1 on real differences",
		run:     runVerify,
	})
}

// errDifferences makes verify exit non-zero when the comparison found real differences.
var errDifferences = errors.New("primary and DR differ")

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", stderr)
	sf := addScopeFlags(fs)
	workers := fs.Int("workers", 4, "parallel range comparisons")
	ranges := fs.Int("ranges", 0, "_id ranges per collection (default 4 × workers)")
	list := fs.Int("list", 20, "ids listed per category and collection")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	archiveCheck := fs.Bool("archive", false, "check the archive instead: every delete, drop, rename and dropDatabase of the primary's change history since --since has exactly one line with a proven before-image")
	since := fs.String("since", "1h", "with --archive: where the check starts, an RFC 3339 time or a duration ago; must be inside the change stream retention")
	settle := fs.Duration("settle", 2*time.Minute, "with --archive: events newer than this are still on their way, not missing")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr verify [flags]

Compares every document of the sc in PRIMARY_* and DR_* by its raw BSON (a change of type
alone is a difference) and reports documents missing in DR, different, and extra in DR. Extra
documents whose delete (or collection drop) is in the archive (ARCHIVE_BUCKET) are intercepted
deletes, kept in DR on purpose, and are not differences. Exit status 1 when there are real
differences. Run it when apply has caught up: documents changing during the scan may differ.

With --archive it checks the archive against the primary's change history instead: each
intercepted event since --since must have exactly one line, and each delete line a before-image
apply proved (beforeExact). Exit status 1 when an event is missing or duplicated, or a
before-image is null or inexact.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, sc, nsmap, primary, dr, err := openScoped(ctx, sf, stderr)
	if err != nil {
		return err
	}
	defer disconnect(primary, dr)
	if *archiveCheck {
		return runVerifyArchive(ctx, env, sc, primary, *since, *settle, *list, *asJSON, stdout, stderr)
	}

	opts := verify.Options{Primary: primary, DR: dr, Scope: sc, MapNamespace: nsmap,
		Workers: *workers, Ranges: *ranges, MaxListed: *list, Logger: env.log}
	reader, ok, err := env.archiveReader(ctx)
	if err != nil {
		return err
	}
	if ok {
		opts.Archive = reader
	} else {
		env.log.Warn("ARCHIVE_BUCKET not set: extra DR documents cannot be told apart from intercepted deletes")
	}
	rep, err := verify.Run(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	if rep.HasDifferences() {
		return fmt.Errorf("%w: %d missing in DR, %d different, %d extra", errDifferences,
			rep.Totals.Missing, rep.Totals.Different, rep.Totals.Extra)
	}
	return nil
}
