package restore

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the report for people: the verdict line, then one row per document.
func (r Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	if r.DryRun {
		fmt.Fprintf(&b, "restore (dry run: nothing written; --apply to write): %d selected, %d would restore, %d would overwrite, %d skipped (exist in primary), %d missing in DR\n",
			r.Selected, r.WouldRestore, r.WouldOverwrite, r.SkippedExists, r.MissingInDR)
	} else {
		fmt.Fprintf(&b, "restore: %d selected, %d restored, %d overwritten, %d skipped (exist in primary), %d missing in DR\n",
			r.Selected, r.Restored, r.Overwritten, r.SkippedExists, r.MissingInDR)
	}
	if len(r.Items) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "namespace\t_id\tdeleted at\toutcome")
		for _, it := range r.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.NS, it.ID, it.DeletedAt.Format(time.RFC3339), it.Outcome)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(r.Items) < r.Selected {
			fmt.Fprintf(&b, "(first %d of %d listed)\n", len(r.Items), r.Selected)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON document.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}
