package apply

import (
	"log/slog"
	"sort"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/metrics"
)

// Summary counts what one invocation did.
type Summary struct {
	Topic   string         // the records' topic (an event source mapping reads one); "" for no records
	Records int            // Kafka records received
	ByOp    map[string]int // records by operation type ("poison" for dead-lettered ones)
	// Applied counts DR operations performed: document writes and drop/rename commands.
	Applied int
	// Archived counts the archive lines this invocation claimed in the ledger (each intercepted
	// event is counted once, by the one invocation that archived it); AlreadyArchived the lines
	// it did not write because the ledger or an earlier copy in the batch had the event.
	// ArchiveObjects counts the objects written and marked, ArchivePuts the PUT requests
	// (archive objects and dead letters), RecoveredObjects the objects an earlier invocation
	// left pending that this one wrote.
	Archived        int
	AlreadyArchived int
	// HistoryLines counts the version history lines among Archived (ARCHIVE_HISTORY=on).
	HistoryLines int
	// AlreadyApplied counts document changes not applied again because the applied frontier
	// shows an earlier delivery applied them (a redelivery, a consumer-group replay).
	AlreadyApplied   int
	ArchiveObjects   int
	ArchivePuts      int
	RecoveredObjects int
	// BeforeMissing counts archived deletes whose before-image is null because DR had no version
	// of the document; BeforeInexact those whose before-image is not proven to be the version
	// at the delete (beforeExact false: healed from updateLookup, or an update that did not apply).
	BeforeMissing int
	BeforeInexact int
	// DeadLettered counts records set aside: undecodable, or refused by DR for ever.
	DeadLettered int
	// MissingDocumentUpdates counts updates of documents DR does not have that carried no full
	// document to heal them with (not applied), and delta updates that matched nothing.
	MissingDocumentUpdates int
	// Barriers counts the partition shares of collection events performed; MovedDocuments the
	// documents they moved into side collections or rename targets.
	Barriers       int
	MovedDocuments int
	// CorruptState counts state entries (ledger, barrier markers) that could not be read: the
	// batch fails rather than guess.
	CorruptState int
	// Fenced counts records not applied because DR was promoted before them (Fence).
	Fenced   int
	Duration time.Duration
	// MaxLag is the longest end-to-end delay in the batch: end of apply minus cluster time.
	MaxLag time.Duration
}

// report writes the summary as one JSON log line and one EMF metrics line.
func (h *Handler) report(s Summary, err error, now time.Time) {
	ops := make([]string, 0, len(s.ByOp))
	for op := range s.ByOp {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	byOp := make([]any, 0, len(ops))
	for _, op := range ops {
		byOp = append(byOp, slog.Int(op, s.ByOp[op]))
	}
	attrs := []any{
		slog.String("topic", s.Topic),
		slog.Int("records", s.Records),
		slog.Group("byOp", byOp...),
		slog.Int("applied", s.Applied),
		slog.Int("archived", s.Archived),
		slog.Int("alreadyArchived", s.AlreadyArchived),
		slog.Int("historyLines", s.HistoryLines),
		slog.Int("alreadyApplied", s.AlreadyApplied),
		slog.Int("archiveObjects", s.ArchiveObjects),
		slog.Int("archivePuts", s.ArchivePuts),
		slog.Int("recoveredObjects", s.RecoveredObjects),
		slog.Int("beforeMissing", s.BeforeMissing),
		slog.Int("beforeInexact", s.BeforeInexact),
		slog.Int("deadLettered", s.DeadLettered),
		slog.Int("missingDocumentUpdates", s.MissingDocumentUpdates),
		slog.Int("barriers", s.Barriers),
		slog.Int("movedDocuments", s.MovedDocuments),
		slog.Int("corruptState", s.CorruptState),
		slog.Int("fenced", s.Fenced),
		slog.Int64("durationMs", s.Duration.Milliseconds()),
		slog.Int64("maxLagMs", s.MaxLag.Milliseconds()),
	}
	var m metrics.Set
	m.Dimension("Function", "apply")
	if s.Topic != "" {
		// Two stacks (two scopes) each read their own topic: the Topic dimension keeps their
		// metrics, and so their alarms, apart, as capture's Scope does.
		m.Dimension("Topic", s.Topic)
	}
	m.Add("Records", metrics.Count, float64(s.Records))
	m.Add("Applied", metrics.Count, float64(s.Applied))
	m.Add("Archived", metrics.Count, float64(s.Archived))
	m.Add("DeadLettered", metrics.Count, float64(s.DeadLettered))
	m.Add("MissingDocumentUpdates", metrics.Count, float64(s.MissingDocumentUpdates))
	m.Add("BeforeMissing", metrics.Count, float64(s.BeforeMissing))
	m.Add("BeforeInexact", metrics.Count, float64(s.BeforeInexact))
	m.Add("AlreadyArchived", metrics.Count, float64(s.AlreadyArchived))
	m.Add("HistoryLines", metrics.Count, float64(s.HistoryLines))
	m.Add("Barriers", metrics.Count, float64(s.Barriers))
	m.Add("CorruptState", metrics.Count, float64(s.CorruptState))
	m.Duration("Duration", s.Duration)
	m.Put("MaxLag", metrics.Seconds, s.MaxLag.Seconds())
	if err != nil {
		m.Add("Errors", metrics.Count, 1)
		h.log.Error("apply batch failed", append(attrs, slog.String("error", err.Error()))...)
	} else {
		m.Add("Errors", metrics.Count, 0)
		h.log.Info("apply batch", attrs...)
	}
	if err := m.Emit(h.opts.Metrics, now); err != nil {
		h.log.Warn("emit metrics", slog.String("error", err.Error()))
	}
}
