// Package apply is the apply function's logic: it takes a batch of Kafka records from the MSK
// event source mapping, applies inserts, updates and replaces to the DR cluster with ordered,
// idempotent bulk writes, and intercepts deletes, drops, renames and dropDatabase
// (INTERCEPT_POLICY): each gets exactly one line in the S3 archive, a delete's with the document
// exactly as it was at the delete, and DR keeps what they removed. Records that cannot be used,
// or that DR refuses for ever, are dead-lettered so they never block their partition.
//
// Reading order: handler.go (options, one invocation), batch.go (decoding, recovery, the
// order of segments and barriers), segment.go (the walk: versions, writes, lines), ledger.go
// (exactly-once archive), barrier.go (collection events), writes.go, poison.go, mongo.go.
//
// An invocation succeeds only when every DR write and every archive write succeeded; otherwise
// Handle returns an error and the event source mapping redelivers the batch, which converges to
// the same DR state and archives nothing twice (see docs/apply.md).
package apply

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"strings"

	"github.com/aws/aws-lambda-go/events"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Defaults of Options.
const (
	DefaultMaxBulkOps   = 1000
	DefaultMaxBulkBytes = 16 * 1000 * 1000 // MongoDB's 16 MB command limit, less headroom for the command itself
	defaultPutParallel  = 4
)

// Options configure a Handler. The zero value of every field is its default.
type Options struct {
	Policy       *Policy      // nil: DefaultPolicy
	NamespaceMap NamespaceMap // zero: no renaming
	MaxBulkOps   int          // operations per bulk write and _ids per before-image read; 0: 1000
	MaxBulkBytes int          // document bytes per bulk write; 0: 16 MB
	// ArchivePrefix is the key prefix of every archive object (ARCHIVE_PREFIX).
	ArchivePrefix string
	// ClaimCheckBucket, when set, is the only bucket a claim check may name (the archive's).
	ClaimCheckBucket string
	Logger           *slog.Logger     // nil: slog.Default()
	Metrics          io.Writer        // where EMF lines go; nil: discarded
	Now              func() time.Time // nil: time.Now
	PutParallelism   int              // archive objects written at once; 0: 4
	// History (ARCHIVE_HISTORY=on) archives, for every insert, update, replace and delete (one
	// that the delete policy does not archive already), the version it overwrote, under
	// <prefix>history/ (see segment.go and docs/apply.md#version-history).
	History bool
}

// Handler applies batches. It holds no per-batch state and may serve invocations one after the
// other for the life of a Lambda container.
type Handler struct {
	dr      DR
	archive Archive
	layout  archive.Layout
	policy  Policy
	opts    Options
	log     *slog.Logger
	// claimID names one invocation's claims in archive object keys (see archive.Layout).
	claimID func() string

	stateMu    sync.Mutex
	stateReady bool // the state collections' indexes exist (and, history off, its markers are gone)
	// marked holds the primary namespaces whose history marker this Handler has written.
	marked map[changeevent.Namespace]bool
}

// New returns a Handler that writes to dr and archives to ar.
func New(dr DR, ar Archive, opts Options) (*Handler, error) {
	if dr == nil || ar == nil {
		return nil, errors.New("apply: a DR writer and an archive are required")
	}
	if opts.MaxBulkOps < 0 || opts.MaxBulkBytes < 0 || opts.PutParallelism < 0 {
		return nil, errors.New("apply: MaxBulkOps, MaxBulkBytes and PutParallelism cannot be negative")
	}
	policy := DefaultPolicy
	if opts.Policy != nil {
		policy = *opts.Policy
	}
	for _, op := range []changeevent.OperationType{changeevent.Delete, changeevent.Drop, changeevent.Rename, changeevent.DropDatabase} {
		if a := policy.For(op); !a.Apply && !a.Archive {
			return nil, fmt.Errorf("apply: policy for %s neither applies nor archives", op)
		}
	}
	if opts.MaxBulkOps == 0 {
		opts.MaxBulkOps = DefaultMaxBulkOps
	}
	if opts.MaxBulkBytes == 0 {
		opts.MaxBulkBytes = DefaultMaxBulkBytes
	}
	if opts.PutParallelism == 0 {
		opts.PutParallelism = defaultPutParallel
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = io.Discard
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := checkStateDB(dr.StateDB(), opts.NamespaceMap); err != nil {
		return nil, err
	}
	return &Handler{
		dr:      dr,
		archive: ar,
		layout:  archive.Layout{Prefix: opts.ArchivePrefix},
		policy:  policy,
		opts:    opts,
		log:     opts.Logger,
		claimID: randomClaimID,
		marked:  map[changeevent.Namespace]bool{},
	}, nil
}

// checkStateDB refuses a state database that is not a valid name or that the namespace map
// writes into.
func checkStateDB(db string, m NamespaceMap) error {
	if _, err := parseNamespace(db); err != nil || db == "" || strings.Contains(db, ".") {
		return fmt.Errorf("apply: DR_STATE_DB %q is not a database name", db)
	}
	if m.Targets(db) {
		return fmt.Errorf("apply: NAMESPACE_MAP writes into DR_STATE_DB %q, apply's state database", db)
	}
	return nil
}

func randomClaimID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ensureState creates the state collections' indexes once per Handler (again after a failure).
func (h *Handler) ensureState(ctx context.Context) error {
	h.stateMu.Lock()
	defer h.stateMu.Unlock()
	if h.stateReady {
		return nil
	}
	if err := h.dr.EnsureState(ctx); err != nil {
		return fmt.Errorf("prepare DR_STATE_DB %q: %w", h.dr.StateDB(), err)
	}
	if !h.opts.History {
		// The history is off: what it holds from an earlier period on no longer reaches now.
		if err := h.dr.ClearHistory(ctx); err != nil {
			return fmt.Errorf("clear the history markers in DR_STATE_DB %q: %w", h.dr.StateDB(), err)
		}
	}
	h.stateReady = true
	return nil
}

// markHistory writes the history markers of the namespaces this Handler has not marked yet, with
// since = the start of the batch: every event applied from then on by a Handler with history on
// has its line (see docs/apply.md#version-history).
func (h *Handler) markHistory(ctx context.Context, nss []changeevent.Namespace, since time.Time) error {
	h.stateMu.Lock()
	defer h.stateMu.Unlock()
	var fresh []changeevent.Namespace
	for _, ns := range nss {
		if !h.marked[ns] {
			fresh = append(fresh, ns)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := h.dr.MarkHistory(ctx, fresh, since); err != nil {
		return fmt.Errorf("record the history markers of %d namespaces: %w", len(fresh), err)
	}
	for _, ns := range fresh {
		h.marked[ns] = true
	}
	return nil
}

// Handle applies one batch from the event source mapping. It returns an error, and the batch is
// to be redelivered, unless every DR write and every archive write succeeded. The summary is
// filled in either way and is also logged (one JSON line) and emitted as metrics.
func (h *Handler) Handle(ctx context.Context, ev events.KafkaEvent) (Summary, error) {
	start := h.opts.Now()
	b := newBatch(h)
	b.start = start
	err := b.run(ctx, partitionRecords(ev))
	end := h.opts.Now()

	s := b.sum
	for _, recs := range ev.Records {
		if len(recs) > 0 {
			s.Topic = recs[0].Topic
			break
		}
	}
	s.Duration = end.Sub(start)
	if !b.oldest.IsZero() {
		s.MaxLag = end.Sub(b.oldest)
	}
	h.report(s, err, end)
	if err != nil {
		return s, fmt.Errorf("apply batch of %d records: %w", s.Records, err)
	}
	return s, nil
}
