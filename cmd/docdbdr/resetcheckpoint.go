package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

func init() {
	register(command{
		name:    "reset-checkpoint",
		summary: "move capture's checkpoint to a time or resume token (recovery after change-stream history was lost)",
		run:     runResetCheckpoint,
	})
}

func runResetCheckpoint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("reset-checkpoint", stderr)
	sf := addScopeFlags(fs)
	to := fs.String("to", "", `where capture starts: "now" or an RFC 3339 time, neither in the future nor older than CHANGE_STREAM_RETENTION`)
	token := fs.String("resume-token", "", "or: resume after this token (Extended JSON, e.g. {\"_data\":\"...\"})")
	who := fs.String("who", defaultWho(), "recorded in the checkpoint's reset history")
	force := fs.Bool("force", false, "reset even a scope with no checkpoint yet, or one naming a database or collection the primary does not hold")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr reset-checkpoint (--to now|<RFC 3339 time> | --resume-token <json>) [flags]

Moves the capture checkpoint of the scope (STATE_DB.STATE_COLLECTION on PRIMARY_*), recording who
and when and the position it replaced, and fences any running capture. This is the recovery when
capture fails because the change-stream history of its checkpoint is gone: changes between the
old checkpoint and the new start are NOT replicated (the output says which), so follow with
docdbdr bootstrap --restart (which sets the checkpoint itself) or docdbdr verify.

Refused (exit 2): a --to time in the future (capture would skip every change until then) or
older than CHANGE_STREAM_RETENTION (the primary no longer has that history); and, unless --force,
a scope that has no checkpoint yet or names a database or collection the primary does not hold
(a typo would create a checkpoint nothing uses).

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (*to == "") == (*token == "") {
		fmt.Fprintln(stderr, "give exactly one of --to and --resume-token")
		return errUsage
	}
	if *who == "" {
		return refusef("--who is empty: say who resets the checkpoint")
	}
	env, err := loadToolEnv(stderr)
	if err != nil {
		return err
	}
	dest, err := parseResetTo(*to, *token, time.Now().UTC(), env.cfg.ChangeStreamRetention)
	if err != nil {
		return err
	}
	scope, err := env.scope(sf)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	primary, err := env.connect(ctx, "PRIMARY", env.cfg.Primary)
	if err != nil {
		return err
	}
	defer disconnect(primary)

	store := env.checkpoints(primary)
	id := scope.ID()
	prev, err := store.Load(ctx, id)
	if err != nil {
		return err
	}
	var forced []string
	switch err := refuseMissing(ctx, primary, "the primary", scope); {
	case err == nil:
	case !errors.Is(err, errUsage):
		return err
	case !*force:
		return fmt.Errorf("%w; --force resets it anyway", err)
	default:
		forced = append(forced, err.Error())
	}
	if !prev.Exists {
		msg := fmt.Sprintf("%s has no checkpoint in %s (capture has never run for this scope: check the scope, STATE_DB and STATE_COLLECTION)",
			id, store.Namespace())
		if !*force {
			return refusef("%s; --force creates it", msg)
		}
		forced = append(forced, msg)
	}
	if err := store.Reset(ctx, id, dest, *who); err != nil {
		return err
	}
	res := newResetResult(id, *who, prev, dest, forced)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(res)
	}
	res.writeText(stdout)
	return nil
}

// parseResetTo turns --to or --resume-token into the checkpoint's new position, refusing a
// start time in the future or older than the change-stream retention.
func parseResetTo(to, token string, now time.Time, retention time.Duration) (checkpoint.ResetTo, error) {
	var dest checkpoint.ResetTo
	switch {
	case token != "":
		if err := bson.UnmarshalExtJSON([]byte(token), false, &dest.ResumeToken); err != nil {
			return dest, refusef("--resume-token: not an Extended JSON document: %v", err)
		}
		return dest, nil
	case to == "now":
		dest.StartAt = now
		return dest, nil
	}
	t, err := time.Parse(time.RFC3339, to)
	if err != nil {
		return dest, refusef("--to: want \"now\" or an RFC 3339 time such as 2024-03-01T10:00:00Z: %v", err)
	}
	t = t.UTC()
	oldest := now.Add(-retention)
	switch {
	case t.After(now):
		return dest, refusef("--to %s is in the future (now is %s): capture would skip every change until then",
			t.Format(time.RFC3339), now.Format(time.RFC3339))
	case t.Before(oldest):
		return dest, refusef("--to %s is older than the change-stream retention (CHANGE_STREAM_RETENTION=%s): the oldest position the primary still has is %s; "+
			"if the cluster's change_stream_log_retention_duration is longer, set CHANGE_STREAM_RETENTION to it",
			t.Format(time.RFC3339), retention, oldest.Truncate(time.Second).Format(time.RFC3339))
	}
	dest.StartAt = t
	return dest, nil
}

// resetResult is what reset-checkpoint did, printed as text or JSON.
type resetResult struct {
	Scope    string           `json:"scope"`
	Who      string           `json:"who"`
	Previous *resetPosition   `json:"previous"` // null when the scope had no checkpoint
	Now      resetPosition    `json:"now"`
	Gap      string           `json:"gap"`               // what the move skips or replays
	Skipped  *clusterTimeSpan `json:"skipped,omitempty"` // changes NOT replicated
	Replayed *clusterTimeSpan `json:"replayed,omitempty"`
	Forced   []string         `json:"forced,omitempty"` // refusals overridden by --force
}

// resetPosition is a checkpoint position: after a resume token, or at a start time.
type resetPosition struct {
	ResumeToken string     `json:"resumeToken,omitempty"` // canonical Extended JSON
	ClusterTime *time.Time `json:"clusterTime,omitempty"` // of the token's event, when known
	StartAt     *time.Time `json:"startAt,omitempty"`
}

type clusterTimeSpan struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

func newResetResult(scope, who string, prev checkpoint.State, dest checkpoint.ResetTo, forced []string) resetResult {
	res := resetResult{Scope: scope, Who: who, Forced: forced}
	var prevAt time.Time
	if prev.Exists && (len(prev.ResumeToken) > 0 || prev.StartAt.T != 0) {
		p := &resetPosition{}
		if len(prev.ResumeToken) > 0 {
			p.ResumeToken = extJSON(prev.ResumeToken)
		}
		switch {
		case prev.ClusterTime.T != 0:
			prevAt = changeevent.Time(prev.ClusterTime)
			p.ClusterTime = &prevAt
		case prev.StartAt.T != 0:
			prevAt = changeevent.Time(prev.StartAt)
			p.StartAt = &prevAt
		}
		res.Previous = p
	}
	if len(dest.ResumeToken) > 0 {
		res.Now.ResumeToken = extJSON(dest.ResumeToken)
	} else {
		at := time.Unix(dest.StartAt.Unix(), 0).UTC() // a cluster time has whole seconds
		res.Now.StartAt = &at
	}
	switch {
	case res.Previous == nil:
		res.Gap = "no previous position: capture starts at the new one"
	case res.Now.StartAt == nil || prevAt.IsZero():
		res.Gap = "unknown: a resume token's time is opaque; run docdbdr verify once capture has caught up"
	case res.Now.StartAt.After(prevAt):
		res.Skipped = &clusterTimeSpan{From: prevAt, To: *res.Now.StartAt}
		res.Gap = fmt.Sprintf("changes from %s to %s (%s) are NOT replicated: bootstrap --restart or verify",
			prevAt.Format(time.RFC3339), res.Now.StartAt.Format(time.RFC3339), res.Now.StartAt.Sub(prevAt))
	case res.Now.StartAt.Before(prevAt):
		res.Replayed = &clusterTimeSpan{From: *res.Now.StartAt, To: prevAt}
		res.Gap = fmt.Sprintf("changes from %s to %s (%s) are captured again (apply skips what it already applied)",
			res.Now.StartAt.Format(time.RFC3339), prevAt.Format(time.RFC3339), prevAt.Sub(*res.Now.StartAt))
	default:
		res.Gap = "none: the new position is the old one's time"
	}
	return res
}

func (r resetResult) writeText(w io.Writer) {
	fmt.Fprintf(w, "checkpoint of %s reset by %s\n", r.Scope, r.Who)
	for _, f := range r.Forced {
		fmt.Fprintf(w, "  forced: %s\n", f)
	}
	fmt.Fprintf(w, "  previous: %s\n", r.Previous.describe())
	fmt.Fprintf(w, "  now:      %s\n", r.Now.describe())
	fmt.Fprintf(w, "  gap:      %s\n", r.Gap)
}

func (p *resetPosition) describe() string {
	switch {
	case p == nil:
		return "none (capture would have started at START_AT)"
	case p.ResumeToken != "" && p.ClusterTime != nil:
		return fmt.Sprintf("resume after %s (cluster time %s)", p.ResumeToken, p.ClusterTime.Format(time.RFC3339))
	case p.ResumeToken != "":
		return "resume after " + p.ResumeToken
	case p.StartAt != nil:
		return "start at " + p.StartAt.Format(time.RFC3339)
	}
	return "none"
}
