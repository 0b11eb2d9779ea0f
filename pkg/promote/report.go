package promote

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
)

// Report is what Run found and did.
type Report struct {
	Apply     bool      `json:"apply"` // false: a dry run, counts are what it would do
	StartedAt time.Time `json:"startedAt"`
	StateDB   string    `json:"stateDb"`
	SideDB    string    `json:"sideDb"`
	Topic     string    `json:"topic"`

	Partitions []PartitionState `json:"partitions"`
	// Unreplicated is the number of records on the topic that apply had not applied (when Run
	// started; 0 once drained).
	Unreplicated int64 `json:"unreplicated"`
	// LastReplicated is the cluster time of the newest event apply applied, NewestOnTopic that
	// of the newest record on the topic (NewestExact false: a claim check's record timestamp).
	LastReplicated time.Time `json:"lastReplicated"`
	NewestOnTopic  time.Time `json:"newestOnTopic"`
	NewestExact    bool      `json:"newestExact"`
	// RPO is what the topic held that DR had not applied when Run started (NewestOnTopic -
	// LastReplicated, 0 when DR had everything): the loss if the topic were lost with the
	// primary. Changes capture never published are not on the topic: RPOToLoss, from the
	// operator's incident time, bounds them.
	RPO       time.Duration `json:"rpoNs"`
	RPOToLoss time.Duration `json:"rpoToLossNs,omitempty"`

	Fenced       bool `json:"fenced"`
	FenceExisted bool `json:"fenceExisted"` // an earlier run wrote it
	// AfterFence counts records on the topic after the fence: published after promote fenced
	// (a capture still running), never applied to the promoted DR.
	AfterFence int64 `json:"afterFence"`
	fence      *apply.Fence

	LedgerEntries  int `json:"ledgerEntries"`
	PendingArchive int `json:"pendingArchive"`

	Deletes                 DeleteMoves      `json:"deletes"`
	Collections             []CollectionMove `json:"collections"`
	AlreadyMovedCollections int              `json:"alreadyMovedCollections"`
	DroppedEmpty            []string         `json:"droppedEmpty"`

	Duration time.Duration `json:"durationNs"`
	// The parts of Duration: reading the topic and the frontiers (the first time), reading the
	// ledger and planning, the moves. The rest is the fence and the wait for apply.
	TopicCheck time.Duration `json:"topicCheckNs"`
	Plan       time.Duration `json:"planNs"`
	Moves      time.Duration `json:"movesNs"`
}

// PartitionState is one partition: its end offset and the last offset apply applied.
type PartitionState struct {
	Partition int64 `json:"partition"`
	End       int64 `json:"end"`
	Applied   int64 `json:"applied"` // -1: nothing
	Behind    int64 `json:"behind"`
}

// DeleteMoves counts the intercepted deletes.
type DeleteMoves struct {
	Intercepted  int `json:"intercepted"`  // intercepted versions the ledger places in live collections
	Moved        int `json:"moved"`        // moved now (dry run: to move)
	AlreadyMoved int `json:"alreadyMoved"` // in the side database from an earlier run
	NotInDR      int `json:"notInDr"`      // neither: DR did not keep it (a delete policy that applies)
}

// CollectionMove is one side collection moved out of a live database.
type CollectionMove struct {
	From      string `json:"from"`
	To        string `json:"to"`
	EventID   string `json:"eventId"`
	Op        string `json:"op"`
	Object    string `json:"archiveObject"`
	Documents int    `json:"documents"`
}

// againstFence compares the partitions with the fence: records before it not yet applied, and
// a description of partitions applied past it. It also counts AfterFence.
func (r *Report) againstFence() (behind int64, past string) {
	r.AfterFence = 0
	for _, p := range r.Partitions {
		end, ok := r.fence.Ends[p.Partition]
		if !ok {
			end = 0 // a partition added after the fence: apply takes none of it
		}
		if p.End > end {
			r.AfterFence += p.End - end
		}
		if end > 0 && p.Applied < end-1 {
			behind += end - 1 - p.Applied
		}
		if p.Applied >= end {
			past += fmt.Sprintf(" partition %d applied through %d, fence at %d;", p.Partition, p.Applied, end)
		}
	}
	return behind, past
}

// Changed reports whether the run moved or dropped anything (a second run reports false).
func (r Report) Changed() bool {
	return r.Deletes.Moved > 0 || len(r.Collections) > 0 || len(r.DroppedEmpty) > 0
}

func (r Report) topicRPO() time.Duration {
	if r.Unreplicated == 0 || r.NewestOnTopic.Before(r.LastReplicated) {
		return 0
	}
	return r.NewestOnTopic.Sub(r.LastReplicated)
}

// WriteJSON writes the report as one JSON document.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for a terminal.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	mode := "DRY RUN (nothing written; --apply to promote)"
	if r.Apply {
		mode = "APPLIED"
	}
	fmt.Fprintf(tw, "promote\t%s\n", mode)
	fmt.Fprintf(tw, "topic\t%s\n", r.Topic)
	for _, p := range r.Partitions {
		fmt.Fprintf(tw, "  partition %d\tend %d, applied through %d, behind %d\n", p.Partition, p.End, p.Applied, p.Behind)
	}
	fmt.Fprintf(tw, "last replicated event\t%s\n", stamp(r.LastReplicated))
	newest := stamp(r.NewestOnTopic)
	if !r.NewestExact && !r.NewestOnTopic.IsZero() {
		newest += " (record timestamp)"
	}
	fmt.Fprintf(tw, "newest event on topic\t%s\n", newest)
	fmt.Fprintf(tw, "RPO (unreplicated on topic)\t%s (%d records)\n", r.RPO, r.Unreplicated)
	if r.RPOToLoss != 0 {
		fmt.Fprintf(tw, "RPO to the primary's loss\t%s\n", r.RPOToLoss)
	}
	fence := "no (dry run)"
	if r.Fenced {
		fence = "yes"
		if r.FenceExisted {
			fence = "yes (by an earlier run)"
		}
	}
	fmt.Fprintf(tw, "fence in %s.%s\t%s\n", r.StateDB, apply.FenceCollection, fence)
	if r.AfterFence > 0 {
		fmt.Fprintf(tw, "records after the fence (not applied)\t%d\n", r.AfterFence)
	}
	fmt.Fprintf(tw, "ledger entries\t%d (%d pending)\n", r.LedgerEntries, r.PendingArchive)
	fmt.Fprintf(tw, "intercepted deletes in live collections\t%d: moved %d, already moved %d, not in DR %d\n",
		r.Deletes.Intercepted, r.Deletes.Moved, r.Deletes.AlreadyMoved, r.Deletes.NotInDR)
	fmt.Fprintf(tw, "side collections moved\t%d (already moved: %d)\n", len(r.Collections), r.AlreadyMovedCollections)
	for _, c := range r.Collections {
		fmt.Fprintf(tw, "  %s\t-> %s (%d documents, %s %s)\n", c.From, c.To, c.Documents, c.Op, c.Object)
	}
	fmt.Fprintf(tw, "empty dropped collections removed\t%d\n", len(r.DroppedEmpty))
	for _, c := range r.DroppedEmpty {
		fmt.Fprintf(tw, "  %s\t\n", c)
	}
	fmt.Fprintf(tw, "side database\t%s\n", r.SideDB)
	fmt.Fprintf(tw, "duration\t%s (topic check %s, plan %s, moves %s)\n", r.Duration.Round(time.Millisecond),
		r.TopicCheck.Round(time.Millisecond), r.Plan.Round(time.Millisecond), r.Moves.Round(time.Millisecond))
	return tw.Flush()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
