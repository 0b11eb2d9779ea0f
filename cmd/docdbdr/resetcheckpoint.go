package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.mongodb.org/mongo-driver/bson"

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
	to := fs.String("to", "", `where capture starts: "now" or an RFC 3339 time`)
	token := fs.String("resume-token", "", "or: resume after this token (Extended JSON, e.g. {\"_data\":\"...\"})")
	who := fs.String("who", defaultWho(), "recorded in the checkpoint's reset history")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr reset-checkpoint (--to now|<RFC 3339 time> | --resume-token <json>) [flags]

Moves the capture checkpoint of the scope (STATE_DB.STATE_COLLECTION on PRIMARY_*), recording who
and when and the position it replaced, and fences any running capture. This is the recovery when
capture fails because the change-stream history of its checkpoint is gone: changes between the
old checkpoint and the new start are NOT replicated, so follow with docdbdr bootstrap --restart
(which sets the checkpoint itself) or docdbdr verify.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var dest checkpoint.ResetTo
	switch {
	case (*to == "") == (*token == ""):
		fmt.Fprintln(stderr, "give exactly one of --to and --resume-token")
		return errUsage
	case *token != "":
		if err := bson.UnmarshalExtJSON([]byte(*token), false, &dest.ResumeToken); err != nil {
			fmt.Fprintf(stderr, "--resume-token: not an Extended JSON document: %v\n", err)
			return errUsage
		}
	case *to == "now":
		dest.StartAt = time.Now().UTC()
	default:
		t, err := time.Parse(time.RFC3339, *to)
		if err != nil {
			fmt.Fprintf(stderr, "--to: want \"now\" or an RFC 3339 time such as 2024-03-01T10:00:00Z: %v\n", err)
			return errUsage
		}
		dest.StartAt = t
	}
	if *who == "" {
		return errors.New("--who is empty: say who resets the checkpoint")
	}
	env, err := loadToolEnv(stderr)
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
	if err := store.Reset(ctx, id, dest, *who); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checkpoint of %s reset by %s\n", id, *who)
	if prev.Exists {
		fmt.Fprintf(stdout, "  previous: %s\n", describePosition(prev))
	}
	if len(dest.ResumeToken) > 0 {
		fmt.Fprintf(stdout, "  now: resume after %s\n", dest.ResumeToken)
	} else {
		fmt.Fprintf(stdout, "  now: start at %s\n", dest.StartAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// describePosition renders a checkpoint state's position for people.
func describePosition(st checkpoint.State) string {
	switch {
	case len(st.ResumeToken) > 0:
		return fmt.Sprintf("resume after %s (cluster time %d.%d)", st.ResumeToken, st.ClusterTime.T, st.ClusterTime.I)
	case !st.StartAt.IsZero():
		return "start at " + time.Unix(int64(st.StartAt.T), 0).UTC().Format(time.RFC3339)
	}
	return "none (capture would start at START_AT)"
}
