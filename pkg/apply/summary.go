package apply

import (
	"log/slog"
	"sort"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/metrics"
)

// Summary counts what one invocation did.
type Summary struct {
	Records int            // Kafka records received
	ByOp    map[string]int // records by operation type ("poison" for dead-lettered ones)
	// Applied counts DR operations performed: document writes and drop/rename commands.
	Applied int
	// Archived counts records written to delete archive objects; ArchiveObjects the objects
	// and ArchivePuts the PUT requests (an object may be written more than once, see docs/apply.md).
	Archived       int
	ArchiveObjects int
	ArchivePuts    int
	DeadLettered   int
	// MissingDocumentUpdates counts update operations (delta updates, without the full document)
	// that matched no DR document: DR lacks a document that the primary had.
	MissingDocumentUpdates int
	Duration               time.Duration
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
		slog.Int("records", s.Records),
		slog.Group("byOp", byOp...),
		slog.Int("applied", s.Applied),
		slog.Int("archived", s.Archived),
		slog.Int("archiveObjects", s.ArchiveObjects),
		slog.Int("archivePuts", s.ArchivePuts),
		slog.Int("deadLettered", s.DeadLettered),
		slog.Int("missingDocumentUpdates", s.MissingDocumentUpdates),
		slog.Int64("durationMs", s.Duration.Milliseconds()),
		slog.Int64("maxLagMs", s.MaxLag.Milliseconds()),
	}
	var m metrics.Set
	m.Dimension("Function", "apply")
	m.Add("Records", metrics.Count, float64(s.Records))
	m.Add("Applied", metrics.Count, float64(s.Applied))
	m.Add("Archived", metrics.Count, float64(s.Archived))
	m.Add("DeadLettered", metrics.Count, float64(s.DeadLettered))
	m.Add("MissingDocumentUpdates", metrics.Count, float64(s.MissingDocumentUpdates))
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
