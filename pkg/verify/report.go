package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the report for people: one row per collection, then the listed ids of each
// category, then the verdict.
func (r Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "verify %s: %d collection(s) in %s\n\n", r.Scope.ID(), len(r.Collections), r.Elapsed.Round(time.Millisecond))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "collection\tprimary\tDR\tequal\tmissing in DR\tdifferent\textra in DR\tintercepted deletes\t")
	for _, c := range r.Collections {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", c.Name, c.PrimaryCount, c.DRCount,
			c.Equal, c.Missing, c.Different, c.Extra, c.Intercepted)
	}
	t := r.Totals
	fmt.Fprintf(tw, "total\t\t\t%d\t%d\t%d\t%d\t%d\t\n", t.Equal, t.Missing, t.Different, t.Extra, t.Intercepted)
	if err := tw.Flush(); err != nil {
		return err
	}

	for _, c := range r.Collections {
		ns := r.Scope.DB + "." + c.Name
		list := func(title string, n int64, ids []string) {
			if n == 0 {
				return
			}
			fmt.Fprintf(&b, "\n%s in %s (%d", title, ns, n)
			if int64(len(ids)) < n {
				fmt.Fprintf(&b, ", first %d listed", len(ids))
			}
			b.WriteString("):\n")
			for _, id := range ids {
				fmt.Fprintf(&b, "  %s\n", id)
			}
		}
		list("missing in DR", c.Missing, c.MissingIDs)
		if c.Different > 0 {
			fmt.Fprintf(&b, "\ndifferent in %s (%d):\n", ns, c.Different)
			for _, d := range c.Differences {
				fmt.Fprintf(&b, "  %s: %s (primary %s, DR %s)\n", d.ID, strings.Join(d.Fields, "; "), d.Primary, d.DR)
			}
		}
		list("extra in DR", c.Extra, c.ExtraIDs)
		title := "intercepted deletes"
		if c.Dropped {
			title += " (collection dropped in the primary)"
		}
		list(title, c.Intercepted, c.InterceptedIDs)
	}

	if r.HasDifferences() {
		fmt.Fprintf(&b, "\nRESULT: %d real difference(s)\n", t.Real())
	} else {
		fmt.Fprintf(&b, "\nRESULT: no real differences (%d intercepted delete(s) kept in DR)\n", t.Intercepted)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON document, with "hasDifferences" added.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		HasDifferences bool `json:"hasDifferences"`
		Report
	}{r.HasDifferences(), r})
}
