package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/scope"
	"github.com/docdb-dr/docdb-dr/pkg/verify"
)

// errArchiveProblems makes verify --archive exit non-zero when the archive breaks its promise.
var errArchiveProblems = errors.New("the archive does not hold every intercepted event exactly once with a proven before-image")

// runVerifyArchive is verify --archive.
func runVerifyArchive(ctx context.Context, env *toolEnv, sc scope.Scope, primary *mongo.Client, since string,
	settle time.Duration, list int, asJSON bool, stdout, stderr io.Writer) error {
	start, err := parseSince(since, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	reader, err := env.requireArchive(ctx, "verify --archive")
	if err != nil {
		return err
	}
	rep, err := verify.CheckArchive(ctx, verify.ArchiveOptions{Primary: primary, Scope: sc, Archive: reader,
		Since: start, Settle: settle, MaxListed: list})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = writeArchiveTable(stdout, rep)
	}
	if err != nil {
		return err
	}
	if rep.HasProblems() {
		return fmt.Errorf("%w: %d missing, %d duplicated, %d null and %d inexact before-images", errArchiveProblems,
			rep.Missing, rep.Duplicated, rep.NullBefore, rep.Inexact)
	}
	return nil
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %s: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time such as 2024-03-01T10:00:00Z or a duration such as 3h", s)
	}
	if t.After(now) {
		return time.Time{}, fmt.Errorf("--since %s is in the future", s)
	}
	return t, nil
}

func writeArchiveTable(w io.Writer, r verify.ArchiveReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "scope\t%s\n", r.Scope)
	fmt.Fprintf(tw, "window\t%s .. %s\n", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
	fmt.Fprintf(tw, "intercepted events\t%d in the primary's change history\n", r.Events)
	fmt.Fprintf(tw, "archive lines\t%d\n", r.Lines)
	fmt.Fprintf(tw, "missing\t%d\n", r.Missing)
	fmt.Fprintf(tw, "duplicated\t%d\n", r.Duplicated)
	fmt.Fprintf(tw, "null before-image\t%d\n", r.NullBefore)
	fmt.Fprintf(tw, "inexact before-image\t%d\n", r.Inexact)
	fmt.Fprintf(tw, "in flight (too recent)\t%d\n", r.InFlight)
	fmt.Fprintf(tw, "lines of unseen events\t%d\n", r.Unknown)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Problems) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROBLEM\tEVENT\tOPERATION\tNAMESPACE\t_ID\tCLUSTER TIME\tNOTE")
	for _, p := range r.Problems {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Kind, p.EventID, p.Operation, p.NS, p.ID, p.ClusterTime.Format(time.RFC3339), p.Note)
	}
	return tw.Flush()
}
