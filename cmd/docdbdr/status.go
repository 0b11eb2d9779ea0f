package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

func init() {
	register(command{
		name:    "status",
		summary: "where replication stands: checkpoint, lag, retention used, lease, resets, counts; exit 1 when unhealthy",
		run:     runStatus,
	})
}

// statusNow is status's clock; tests move it to make a known lag.
var statusNow = time.Now

// errUnhealthy makes status exit 1 (for cron jobs and health checks).
var errUnhealthy = errors.New("replication is unhealthy")

// statusLimits are the thresholds past which a scope is unhealthy.
type statusLimits struct {
	MaxLag            time.Duration
	MaxRetentionShare float64
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	sf := addScopeFlags(fs)
	all := fs.Bool("all", false, "every scope in the state collection (the default when neither --db nor WATCH_DB is set)")
	var lim statusLimits
	fs.DurationVar(&lim.MaxLag, "max-lag", 5*time.Minute, "unhealthy (exit 1) when the oldest change capture has not read is older than this")
	fs.Float64Var(&lim.MaxRetentionShare, "max-retention-share", 0.5, "unhealthy (exit 1) when the lag uses more than this share of CHANGE_STREAM_RETENTION")
	noCounts := fs.Bool("no-counts", false, "skip the per-collection document counts and the archive scan")
	asJSON := fs.Bool("json", false, "print the report as JSON (exact values: seconds, RFC 3339 times)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr status [flags]

Shows where replication of a scope (--db/--collections, else WATCH_DB/WATCH_COLLECTIONS, else every
scope in STATE_DB.STATE_COLLECTION) stands, read from the primary, DR and the archive:
  - the checkpoint: its resume token or start time and cluster time, its age, when it was saved;
  - the lag: the age of the oldest change in the scope's change stream after the checkpoint (0 when
    capture has read everything), and the share of CHANGE_STREAM_RETENTION it uses (at 100% that
    change falls out of the history and capture fails with history lost);
  - the lease: who holds it and until when;
  - the reset history (reset-checkpoint, bootstrap);
  - documents per collection in the primary and DR (estimated counts; NAMESPACE_MAP applies);
  - archive lines (intercepted deletes, drops, renames) in the last 24 hours and dead letters;
  - whether DR was promoted (docdbdr promote's fence in DR_STATE_DB).
Exit status 1 when DR was promoted, a scope has no checkpoint, its change stream cannot be read (not enabled: the
command to run is printed; history lost), the lag exceeds --max-lag, or the retention share
exceeds --max-retention-share. A scope with neither a checkpoint nor its database or collections
in the primary is refused as a typo (exit 2).

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
	var scopes []scope.Scope
	if !*all && (*sf.db != "" || env.cfg.WatchDB != "") {
		sc, err := env.scope(sf)
		if err != nil {
			return refusef("%v", err)
		}
		scopes = []scope.Scope{sc}
	} else if *sf.db != "" || *sf.collections != "" {
		return refusef("--all lists every scope: it takes no --db or --collections")
	}
	nsmap, err := env.namespaceMap()
	if err != nil {
		return err
	}
	primary, dr, err := env.connectBoth(ctx)
	if err != nil {
		return err
	}
	defer disconnect(primary, dr)
	store := env.checkpoints(primary)
	scopes, states, err := loadStates(ctx, primary, store, scopes)
	if err != nil {
		return err
	}
	var reader *restore.ArchiveReader
	if r, ok, err := env.archiveReader(ctx); err != nil {
		return err
	} else if ok && !*noCounts {
		reader = &r
	}

	rep := statusReport{
		At: statusNow().UTC(), StateCollection: store.Namespace(), Retention: jsonDuration(env.cfg.ChangeStreamRetention),
		Limits: statusLimitsJSON{MaxLag: jsonDuration(lim.MaxLag), MaxRetentionShare: lim.MaxRetentionShare},
	}
	// After docdbdr promote, DR is the copy applications use: this stack must not replicate into
	// it any more (apply refuses what comes after the fence, and the records pile up).
	fence, err := apply.NewMongoWriter(dr).WithStateDB(env.cfg.DRStateDB).Fence(ctx)
	if err != nil {
		return fmt.Errorf("read DR's fence %s.%s: %w", env.cfg.DRStateDB, apply.FenceCollection, err)
	}
	if fence != nil {
		t := fence.PromotedAt.UTC()
		rep.DRPromotedAt = &t
	}
	if ts, ok, err := newestClusterTime(ctx, primary); err != nil {
		return err
	} else if ok {
		t := changeevent.Time(ts)
		rep.PrimaryClusterTime = &t
	}
	every, err := store.List(ctx)
	if err != nil {
		return err
	}
	for i, sc := range scopes {
		s := scopeStatusOf(states[i], rep.At)
		s.Overlaps = overlapping(sc, every)
		s.readStream(ctx, primary, sc, states[i], rep.At, env.cfg.ChangeStreamRetention)
		if !*noCounts {
			if err := s.count(ctx, primary, dr, sc, nsmap); err != nil {
				return err
			}
		}
		if reader != nil {
			if err := s.countArchive(ctx, *reader, env.cfg.Archive.Prefix, env.cfg.Kafka.Topic, sc, rep.At); err != nil {
				return err
			}
		}
		s.judge(lim)
		if rep.DRPromotedAt != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("DR was promoted at %s (docdbdr promote): apply applies nothing after the fence; disable this stack's capture schedule and MSK mapping (docs/failover.md)",
				rep.DRPromotedAt.Format(time.RFC3339)))
		}
		rep.Scopes = append(rep.Scopes, s)
	}
	if err := rep.write(stdout, *asJSON); err != nil {
		return err
	}
	return rep.health()
}

// loadStates reads the state documents of scopes, or of every scope in store when scopes is nil.
// A scope with neither a checkpoint nor its database or collections in the primary is refused as
// a typo; one capture has a checkpoint for may be waiting for its first write.
func loadStates(ctx context.Context, primary *mongo.Client, store *checkpoint.Store, scopes []scope.Scope) ([]scope.Scope, []checkpoint.State, error) {
	if scopes != nil {
		st, err := store.Load(ctx, scopes[0].ID())
		if err != nil {
			return nil, nil, err
		}
		if !st.Exists {
			if err := refuseMissing(ctx, primary, "the primary", scopes[0]); err != nil {
				return nil, nil, fmt.Errorf("%w, and no checkpoint in %s", err, store.Namespace())
			}
		}
		return scopes, []checkpoint.State{st}, nil
	}
	states, err := store.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(states) == 0 {
		return nil, nil, fmt.Errorf("no scope has a checkpoint in %s on the primary: capture has never run (or STATE_DB/STATE_COLLECTION differ)", store.Namespace())
	}
	for _, st := range states {
		sc, err := scope.ParseID(st.Scope)
		if err != nil {
			return nil, nil, fmt.Errorf("state document %q: %w", st.Scope, err)
		}
		scopes = append(scopes, sc)
	}
	return scopes, states, nil
}

// write prints the report as a table, or as indented JSON.
func (r statusReport) write(w io.Writer, asJSON bool) error {
	if !asJSON {
		return r.writeTable(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// health is nil when no scope has a problem, else errUnhealthy with every scope's problems.
func (r statusReport) health() error {
	var bad []string
	for _, s := range r.Scopes {
		if len(s.Problems) > 0 {
			bad = append(bad, s.Scope+": "+strings.Join(s.Problems, "; "))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", errUnhealthy, strings.Join(bad, " | "))
	}
	return nil
}

// statusReport is what status prints.
type statusReport struct {
	At                 time.Time        `json:"at"`
	StateCollection    string           `json:"stateCollection"` // on the primary
	PrimaryClusterTime *time.Time       `json:"primaryClusterTime,omitempty"`
	DRPromotedAt       *time.Time       `json:"drPromotedAt,omitempty"` // docdbdr promote fenced DR then
	Retention          jsonDuration     `json:"changeStreamRetention"`
	Limits             statusLimitsJSON `json:"limits"`
	Scopes             []scopeStatus    `json:"scopes"`
}

type statusLimitsJSON struct {
	MaxLag            jsonDuration `json:"maxLag"`
	MaxRetentionShare float64      `json:"maxRetentionShare"`
}

// scopeStatus is one scope's state. Durations are exact (seconds in JSON).
type scopeStatus struct {
	Scope      string `json:"scope"`
	Checkpoint bool   `json:"checkpoint"` // false: capture never ran for the scope

	ResumeToken    string        `json:"resumeToken,omitempty"`    // canonical Extended JSON
	ClusterTime    *clusterTimeJ `json:"clusterTime,omitempty"`    // of the last event capture published
	StartAt        *time.Time    `json:"startAt,omitempty"`        // a reset to a time, not yet used by capture
	CheckpointAge  *jsonDuration `json:"checkpointAge,omitempty"`  // now - clusterTime (or startAt)
	LastSaved      *time.Time    `json:"lastSaved,omitempty"`      // updatedAt: the last checkpoint save or reset
	OldestUnread   *time.Time    `json:"oldestUnread,omitempty"`   // the first change after the checkpoint; nil: none
	Lag            *jsonDuration `json:"lag,omitempty"`            // now - oldestUnread; 0 when none
	RetentionShare *float64      `json:"retentionShare,omitempty"` // lag / CHANGE_STREAM_RETENTION
	StreamError    string        `json:"streamError,omitempty"`    // the change stream could not be read
	HistoryLost    bool          `json:"historyLost,omitempty"`    // ... because its history is gone
	// StreamsNotEnabled: ... because DocumentDB change streams are not enabled for the scope;
	// EnableCommands are what to run on the primary.
	StreamsNotEnabled bool          `json:"streamsNotEnabled,omitempty"`
	EnableCommands    []string      `json:"enableCommands,omitempty"`
	Lease             *leaseStatus  `json:"lease,omitempty"`           // nil: free
	Fence             int64         `json:"fence"`                     // leases taken and resets so far
	Resets            []resetStatus `json:"resets,omitempty"`          // newest last
	Namespaces        []nsCount     `json:"namespaces,omitempty"`      // documents per collection
	ArchiveLines24h   *int          `json:"archiveLines24h,omitempty"` // intercepted events archived in the last 24h
	// Dead letters in the last 24 hours: capture's for this scope; apply's for the whole topic
	// (their keys are dated by day, so these are the days of the window).
	CaptureDeadLetters24h *int `json:"captureDeadLetters24h,omitempty"`
	ApplyDeadLetters      *int `json:"applyDeadLettersTopicTodayYesterday,omitempty"`
	// Overlaps lists the other scopes in the state collection that share a namespace with this
	// one: a stale state document, or two captures publishing the same changes twice.
	Overlaps []string `json:"overlaps,omitempty"`
	Problems []string `json:"problems,omitempty"` // why the scope is unhealthy; empty when healthy
}

type clusterTimeJ struct {
	T    uint32    `json:"t"`
	I    uint32    `json:"i"`
	Time time.Time `json:"time"`
}

type leaseStatus struct {
	Owner     string       `json:"owner"`
	ExpiresAt time.Time    `json:"expiresAt"`
	Expired   bool         `json:"expired"`
	ExpiresIn jsonDuration `json:"expiresIn"` // negative when expired
}

type resetStatus struct {
	Who                 string     `json:"who"`
	At                  time.Time  `json:"at"`
	PreviousToken       string     `json:"previousToken,omitempty"`
	PreviousClusterTime *time.Time `json:"previousClusterTime,omitempty"`
}

type nsCount struct {
	Primary string `json:"primary"` // namespace in the primary
	DR      string `json:"dr"`      // where apply writes it (NAMESPACE_MAP)
	InPrim  int64  `json:"primaryDocs"`
	InDR    int64  `json:"drDocs"`
}

// jsonDuration is a duration: seconds (a number) in JSON, Go syntax for people.
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(d).Seconds(), 'f', -1, 64), nil
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	*d = jsonDuration(time.Duration(f * float64(time.Second)))
	return err
}

func (d jsonDuration) String() string { return humanDuration(time.Duration(d)) }

// humanDuration rounds a duration for people: 1.234s, 1m30s, 3h0m0s.
func humanDuration(d time.Duration) string {
	switch a := d.Abs(); {
	case a < time.Second:
		return d.Round(time.Millisecond).String()
	case a < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func durationPtr(d time.Duration) *jsonDuration { j := jsonDuration(d); return &j }

// scopeStatusOf is what the state document says, at now.
func scopeStatusOf(st checkpoint.State, now time.Time) scopeStatus {
	s := scopeStatus{Scope: st.Scope, Checkpoint: st.Exists, Fence: st.Fence}
	if !st.Exists {
		return s
	}
	if len(st.ResumeToken) > 0 {
		s.ResumeToken = extJSON(st.ResumeToken)
	}
	var at time.Time
	switch {
	case st.ClusterTime.T != 0:
		at = changeevent.Time(st.ClusterTime)
		s.ClusterTime = &clusterTimeJ{T: st.ClusterTime.T, I: st.ClusterTime.I, Time: at}
	case st.StartAt.T != 0:
		at = changeevent.Time(st.StartAt)
		s.StartAt = &at
	}
	if !at.IsZero() {
		s.CheckpointAge = durationPtr(now.Sub(at))
	}
	if !st.UpdatedAt.IsZero() {
		u := st.UpdatedAt.UTC()
		s.LastSaved = &u
	}
	if st.Lease != nil {
		s.Lease = &leaseStatus{Owner: st.Lease.Owner, ExpiresAt: st.Lease.ExpiresAt.UTC(),
			Expired: !st.Lease.ExpiresAt.After(now), ExpiresIn: jsonDuration(st.Lease.ExpiresAt.Sub(now))}
	}
	for _, h := range st.History {
		r := resetStatus{Who: h.Who, At: h.At.UTC()}
		if len(h.PreviousToken) > 0 {
			r.PreviousToken = extJSON(h.PreviousToken)
		}
		if h.PreviousClusterTime.T != 0 {
			t := changeevent.Time(h.PreviousClusterTime)
			r.PreviousClusterTime = &t
		}
		s.Resets = append(s.Resets, r)
	}
	return s
}

// readStream opens the scope's change stream where capture would resume (read only: nothing is
// saved) and takes the cluster time of the first change, the oldest one capture has not
// published: the lag is its age. No change means capture is caught up (lag 0).
func (s *scopeStatus) readStream(ctx context.Context, primary *mongo.Client, sc scope.Scope, st checkpoint.State, now time.Time, retention time.Duration) {
	if !st.Exists {
		return
	}
	var start capture.Start
	switch {
	case len(st.ResumeToken) > 0 && st.AfterInvalidate:
		start.StartAfter = st.ResumeToken
	case len(st.ResumeToken) > 0:
		start.ResumeAfter = st.ResumeToken
	case st.StartAt.T != 0:
		ts := st.StartAt
		start.StartAt = &ts
	default:
		return // a lease but no position yet: capture starts at START_AT
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := capture.MongoStreams{Client: primary, MaxAwait: 300 * time.Millisecond}.Open(ctx, sc, start)
	if err == nil {
		defer func() { _ = stream.Close(context.Background()) }()
		// The first batch of a fresh stream may be empty on a server that has the change: a
		// few short reads find it.
		for range 3 {
			if stream.TryNext(ctx) {
				break
			}
			if stream.Err() != nil {
				break
			}
		}
		err = stream.Err()
	}
	if err != nil {
		s.StreamError = err.Error()
		s.StreamsNotEnabled = streamsNotEnabled(err)
		s.HistoryLost = !s.StreamsNotEnabled && isHistoryLost(err)
		if s.StreamsNotEnabled {
			s.EnableCommands = sc.EnableCommands()
		}
		return
	}
	lag := time.Duration(0)
	if cur := stream.Current(); len(cur) > 0 {
		if sec, _, ok := cur.Lookup("clusterTime").TimestampOK(); ok {
			t := time.Unix(int64(sec), 0).UTC()
			s.OldestUnread = &t
			lag = max(now.Sub(t), 0)
		}
	}
	s.Lag = durationPtr(lag)
	if retention > 0 {
		share := lag.Seconds() / retention.Seconds()
		s.RetentionShare = &share
	}
}

// streamsNotEnabled is DocumentDB's refusal of a change stream on a namespace whose streams were
// never enabled (modifyChangeStreams); it may carry code 136 like history loss, so it is told
// apart by its message first, as pkg/capture does.
func streamsNotEnabled(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "modifychangestreams") || strings.Contains(msg, "not enabled")
}

// isHistoryLost is a change-stream error saying the resume point is gone (MongoDB 286,
// DocumentDB 136), as pkg/capture classifies it.
func isHistoryLost(err error) bool {
	var se mongo.ServerError
	if errors.As(err, &se) && (se.HasErrorCode(286) || se.HasErrorCode(136)) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "history lost") || strings.Contains(msg, "resume point may no longer be in the oplog") || strings.Contains(msg, "capped position")
}

// count adds the estimated document count of each collection of the scope in the primary and
// where apply writes it in DR.
func (s *scopeStatus) count(ctx context.Context, primary, dr *mongo.Client, sc scope.Scope, nsmap func(changeevent.Namespace) changeevent.Namespace) error {
	colls, err := sc.Resolve(ctx, primary)
	if err != nil {
		return err
	}
	for _, c := range colls {
		ns := changeevent.Namespace{DB: sc.DB, Coll: c}
		drNS := ns
		if nsmap != nil {
			drNS = nsmap(ns)
		}
		n := nsCount{Primary: ns.String(), DR: drNS.String()}
		if n.InPrim, err = primary.Database(ns.DB).Collection(ns.Coll).EstimatedDocumentCount(ctx); err != nil {
			return fmt.Errorf("count %s in the primary: %w", ns, err)
		}
		if n.InDR, err = dr.Database(drNS.DB).Collection(drNS.Coll).EstimatedDocumentCount(ctx); err != nil {
			return fmt.Errorf("count %s in DR: %w", drNS, err)
		}
		s.Namespaces = append(s.Namespaces, n)
	}
	return nil
}

// countArchive counts the scope's archive lines of the last 24 hours, capture's dead letters of
// the scope in that window and apply's dead letters of the topic dated today or yesterday.
func (s *scopeStatus) countArchive(ctx context.Context, r restore.ArchiveReader, prefix, topic string, sc scope.Scope, now time.Time) error {
	since := now.Add(-24 * time.Hour)
	colls := sc.Collections
	if len(colls) == 0 {
		colls = []string{""} // the whole database
	}
	lines := 0
	for _, c := range colls {
		err := r.Records(ctx, sc.DB, c, since, time.Time{}, func(archive.Record) error { lines++; return nil })
		if err != nil {
			return err
		}
	}
	s.ArchiveLines24h = &lines

	days := []string{now.Format(time.DateOnly), since.Format(time.DateOnly)}
	capDL := 0
	for _, day := range days {
		keys, err := r.Store.List(ctx, fmt.Sprintf("%sscope=%s/dt=%s/", capture.DeadLetterPrefix(prefix), url.PathEscape(sc.ID()), day))
		if err != nil {
			return fmt.Errorf("list capture's dead letters: %w", err)
		}
		for _, k := range keys {
			// <T>-<I>-<hash>.json: T is the event's cluster time.
			name := k[strings.LastIndex(k, "/")+1:]
			t, _, _ := strings.Cut(name, "-")
			if sec, err := strconv.ParseInt(t, 10, 64); err == nil && !time.Unix(sec, 0).Before(since) {
				capDL++
			}
		}
	}
	s.CaptureDeadLetters24h = &capDL
	applyDL := 0
	for _, day := range days {
		keys, err := r.Store.List(ctx, fmt.Sprintf("%sdeadletter/dt=%s/%s-", prefix, day, url.PathEscape(topic)))
		if err != nil {
			return fmt.Errorf("list apply's dead letters: %w", err)
		}
		applyDL += len(keys)
	}
	s.ApplyDeadLetters = &applyDL
	return nil
}

// judge records why the scope is unhealthy under the limits.
func (s *scopeStatus) judge(lim statusLimits) {
	switch {
	case !s.Checkpoint:
		s.Problems = append(s.Problems, "no checkpoint: capture has never run for this scope")
	case s.StreamsNotEnabled:
		s.Problems = append(s.Problems, "change streams are not enabled for the scope: run "+strings.Join(s.EnableCommands, " and ")+" on the primary")
	case s.HistoryLost:
		s.Problems = append(s.Problems, "change-stream history lost: bootstrap or reset-checkpoint (README runbook)")
	case s.StreamError != "":
		s.Problems = append(s.Problems, "change stream unreadable: "+s.StreamError)
	}
	if s.Lag != nil && time.Duration(*s.Lag) > lim.MaxLag {
		s.Problems = append(s.Problems, fmt.Sprintf("lag %s exceeds --max-lag %s", *s.Lag, jsonDuration(lim.MaxLag)))
	}
	if s.RetentionShare != nil && *s.RetentionShare > lim.MaxRetentionShare {
		s.Problems = append(s.Problems, fmt.Sprintf("lag uses %.1f%% of the change-stream retention, more than --max-retention-share %.0f%%",
			100**s.RetentionShare, 100*lim.MaxRetentionShare))
	}
}

func (r statusReport) writeTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "status at %s (state %s on the primary", r.At.Format(time.RFC3339), r.StateCollection)
	if r.PrimaryClusterTime != nil {
		fmt.Fprintf(&b, "; primary's newest cluster time %s", r.PrimaryClusterTime.Format(time.RFC3339))
	}
	b.WriteString(")\n")
	if r.DRPromotedAt != nil {
		fmt.Fprintf(&b, "DR PROMOTED at %s (docdbdr promote): apply applies nothing after the fence\n", r.DRPromotedAt.Format(time.RFC3339))
	}
	for _, s := range r.Scopes {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		row := func(k, format string, args ...any) {
			fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
		}
		fmt.Fprintf(tw, "scope %s\n", s.Scope)
		switch {
		case !s.Checkpoint:
			row("checkpoint", "none: capture has never run for this scope")
		case s.ClusterTime != nil:
			row("checkpoint", "%s, cluster time %s (%d.%d), %s old", s.ResumeToken, s.ClusterTime.Time.Format(time.RFC3339), s.ClusterTime.T, s.ClusterTime.I, s.CheckpointAge)
		case s.StartAt != nil:
			row("checkpoint", "start at %s (set by a reset; capture has not run since), %s old", s.StartAt.Format(time.RFC3339), s.CheckpointAge)
		case s.ResumeToken != "":
			row("checkpoint", "%s", s.ResumeToken)
		default:
			row("checkpoint", "no position yet (capture starts at START_AT)")
		}
		if s.LastSaved != nil {
			row("last saved", "%s (%s ago)", s.LastSaved.Format(time.RFC3339), jsonDuration(r.At.Sub(*s.LastSaved)))
		}
		switch {
		case s.StreamError != "":
			row("lag", "unknown: %s", s.StreamError)
		case s.Lag != nil && s.OldestUnread == nil:
			row("lag", "0 (capture has read every change)")
		case s.Lag != nil:
			row("lag", "%s (oldest change not captured: %s)", s.Lag, s.OldestUnread.Format(time.RFC3339))
		}
		if s.RetentionShare != nil {
			row("retention used", "%.1f%% of %s (CHANGE_STREAM_RETENTION)", 100**s.RetentionShare, r.Retention)
		}
		switch {
		case s.Lease == nil:
			row("lease", "free (fence %d)", s.Fence)
		case s.Lease.Expired:
			row("lease", "expired: %s, %s ago (fence %d)", s.Lease.Owner, jsonDuration(-s.Lease.ExpiresIn), s.Fence)
		default:
			row("lease", "held by %s until %s (%s left, fence %d)", s.Lease.Owner, s.Lease.ExpiresAt.Format(time.RFC3339), s.Lease.ExpiresIn, s.Fence)
		}
		if len(s.Resets) == 0 {
			row("resets", "none")
		}
		for i, h := range s.Resets {
			k := ""
			if i == 0 {
				k = "resets"
			}
			prev := "no previous position"
			switch {
			case h.PreviousClusterTime != nil:
				prev = "replaced cluster time " + h.PreviousClusterTime.Format(time.RFC3339)
			case h.PreviousToken != "":
				prev = "replaced " + h.PreviousToken
			}
			row(k, "%s by %s, %s", h.At.Format(time.RFC3339), h.Who, prev)
		}
		if s.ArchiveLines24h != nil {
			row("archive", "%d line(s) in the last 24h", *s.ArchiveLines24h)
		}
		if s.CaptureDeadLetters24h != nil {
			row("dead letters", "capture: %d in the last 24h; apply (topic): %d today and yesterday", *s.CaptureDeadLetters24h, *s.ApplyDeadLetters)
		}
		if len(s.Overlaps) > 0 {
			row("overlaps", "WARNING: other scopes with a checkpoint here share namespaces with this one: %s (a stale state document, or two captures publishing the same changes)",
				strings.Join(s.Overlaps, ", "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(s.Namespaces) > 0 {
			tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  collection\tprimary docs\tDR docs\t")
			for _, n := range s.Namespaces {
				name := n.Primary
				if n.DR != n.Primary {
					name += " → " + n.DR
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t\n", name, thousands(n.InPrim), thousands(n.InDR))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(s.Problems) == 0 {
			b.WriteString("  healthy\n")
		}
		for _, p := range s.Problems {
			fmt.Fprintf(&b, "  UNHEALTHY: %s\n", p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// newestClusterTime is the primary's latest cluster time (operationTime of a ping), when the
// server reports one.
func newestClusterTime(ctx context.Context, primary *mongo.Client) (primitive.Timestamp, bool, error) {
	raw, err := primary.Database("admin").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Raw()
	if err != nil {
		return primitive.Timestamp{}, false, fmt.Errorf("ping the primary: %w", err)
	}
	t, i, ok := raw.Lookup("operationTime").TimestampOK()
	return primitive.Timestamp{T: t, I: i}, ok, nil
}

// thousands writes n with thousands separators: 1,234,567.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// overlapping names the scopes of the state documents, other than sc, that share a namespace
// with it.
func overlapping(sc scope.Scope, states []checkpoint.State) []string {
	var out []string
	for _, st := range states {
		o, err := scope.ParseID(st.Scope)
		if err == nil && st.Scope != sc.ID() && sc.Overlaps(o) {
			out = append(out, st.Scope)
		}
	}
	return out
}
