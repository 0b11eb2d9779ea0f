package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

func TestParseResetTo(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	const retention = 3 * time.Hour
	tests := []struct {
		name, to, token string
		want            time.Time
		wantErr         string // "" for success
	}{
		{name: "now", to: "now", want: now},
		{name: "an hour ago", to: "2026-12-02T11:00:00Z", want: now.Add(-time.Hour)},
		{name: "at the retention limit", to: "2026-12-02T09:00:00Z", want: now.Add(-retention)},
		{name: "other zone", to: "2026-12-02T12:30:00+01:00", want: now.Add(-30 * time.Minute)},
		{name: "future", to: "2030-01-01T00:00:00Z", wantErr: "in the future"},
		{name: "one second ahead", to: "2026-12-02T12:00:01Z", wantErr: "in the future"},
		{name: "older than retention", to: "2026-12-02T08:59:59Z", wantErr: "older than the change-stream retention (CHANGE_STREAM_RETENTION=3h0m0s): the oldest position the primary still has is 2026-12-02T09:00:00Z"},
		{name: "not a time", to: "yesterday", wantErr: "RFC 3339"},
		{name: "token", token: `{"_data":"8263"}`},
		{name: "bad token", token: `{_data`, wantErr: "not an Extended JSON document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseResetTo(tt.to, tt.token, now, retention)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errUsage) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				if len(got.ResumeToken) == 0 || !got.StartAt.IsZero() {
					t.Errorf("got %+v, want the token", got)
				}
				return
			}
			if !got.StartAt.Equal(tt.want) {
				t.Errorf("start at %s, want %s", got.StartAt, tt.want)
			}
		})
	}
}

func TestResetResultGap(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: "82AA"}})
	withToken := checkpoint.State{Exists: true, Position: checkpoint.Position{ResumeToken: tok, ClusterTime: primitive.Timestamp{T: uint32(at.Unix()), I: 4}}}
	tests := []struct {
		name           string
		prev           checkpoint.State
		dest           checkpoint.ResetTo
		skipped, again bool
		gap            string
	}{
		{name: "forward skips", prev: withToken, dest: checkpoint.ResetTo{StartAt: at.Add(time.Hour)}, skipped: true,
			gap: "changes from 2026-12-02T10:00:00Z to 2026-12-02T11:00:00Z (1h0m0s) are NOT replicated"},
		{name: "backward replays", prev: withToken, dest: checkpoint.ResetTo{StartAt: at.Add(-time.Minute)}, again: true,
			gap: "captured again"},
		{name: "after a reset to a time", prev: checkpoint.State{Exists: true, StartAt: primitive.Timestamp{T: uint32(at.Unix())}},
			dest: checkpoint.ResetTo{StartAt: at.Add(time.Second)}, skipped: true, gap: "(1s) are NOT replicated"},
		{name: "no previous", prev: checkpoint.State{}, dest: checkpoint.ResetTo{StartAt: at}, gap: "no previous position"},
		{name: "to a token", prev: withToken, dest: checkpoint.ResetTo{ResumeToken: tok}, gap: "opaque"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newResetResult("bar.foo", "me", tt.prev, tt.dest, nil)
			if (r.Skipped != nil) != tt.skipped || (r.Replayed != nil) != tt.again || !strings.Contains(r.Gap, tt.gap) {
				t.Errorf("gap %q (skipped %v, replayed %v), want %q (skipped %v, replayed %v)", r.Gap, r.Skipped, r.Replayed, tt.gap, tt.skipped, tt.again)
			}
		})
	}
}

// TestGuardRails drives every refusal of a dangerous command against the embedded stack: the exit
// status, the message naming the problem, and that a refused reset-checkpoint wrote nothing.
func TestGuardRails(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := startStack(ctx, t)
	primary := connectTo(ctx, t, st.PrimaryURI)
	dr := connectTo(ctx, t, st.DRURI)
	for _, c := range []*mongo.Client{primary, dr} {
		for _, coll := range []string{"foo", "x"} {
			if _, err := c.Database("bar").Collection(coll).InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	store := checkpoint.New(primary.Database("docdbdr").Collection("checkpoints"), nil)
	lease, err := store.Acquire(ctx, "bar.foo", "capture-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: "82AA"}})
	pos := checkpoint.Position{ResumeToken: tok, ClusterTime: primitive.Timestamp{T: uint32(time.Now().Add(-time.Hour).Unix()), I: 1}}
	if err := store.Save(ctx, lease, pos); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-4 * time.Hour).UTC().Format(time.RFC3339)

	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		stderr  string // in stderr
		stdout  string // in stdout
		written string // scope whose checkpoint the command creates or moves; "" for none
	}{
		{name: "reset: typo in the database", args: []string{"reset-checkpoint", "--db", "bra", "--collections", "fo", "--to", "now"},
			code: 2, stderr: "no database bra in the primary (a typo?"},
		{name: "reset: typo in a collection", args: []string{"reset-checkpoint", "--db", "bar", "--collections", "foo,fo", "--to", "now"},
			code: 2, stderr: "no collection bar.fo in the primary"},
		{name: "reset: future time", args: []string{"reset-checkpoint", "--db", "bar", "--collections", "foo", "--to", "2030-01-01T00:00:00Z"},
			code: 2, stderr: "is in the future"},
		{name: "reset: older than the retention", args: []string{"reset-checkpoint", "--db", "bar", "--collections", "foo", "--to", old},
			code: 2, stderr: "older than the change-stream retention (CHANGE_STREAM_RETENTION=3h0m0s)"},
		{name: "reset: no checkpoint yet", args: []string{"reset-checkpoint", "--db", "bar", "--collections", "x", "--to", "now"},
			code: 2, stderr: "bar.x has no checkpoint in docdbdr.checkpoints"},
		{name: "reset: no checkpoint yet, forced", args: []string{"reset-checkpoint", "--db", "bar", "--collections", "x", "--to", "now", "--force"},
			code: 0, stdout: "forced: bar.x has no checkpoint", written: "bar.x"},
		{name: "reset: typo, forced", args: []string{"reset-checkpoint", "--db", "bra", "--to", "now", "--force"},
			code: 0, stdout: "forced: database bra: no database bra", written: "bra"},
		{name: "status: a typo", args: []string{"status", "--db", "bar", "--collections", "fo"},
			code: 2, stderr: "no collection bar.fo in the primary (a typo?"},
		{name: "status: a database capture has a checkpoint for, not created yet", args: []string{"status", "--db", "bra", "--no-counts"},
			code: 1, stdout: `UNHEALTHY: change streams are not enabled for the scope: run db.adminCommand({modifyChangeStreams: 1, database: "bra"`},
		{name: "reset: older time within a longer retention", env: map[string]string{"CHANGE_STREAM_RETENTION": "5h"},
			args: []string{"reset-checkpoint", "--db", "bar", "--collections", "foo", "--to", old},
			code: 0, stdout: "are captured again", written: "bar.foo"},
		{name: "verify: no such database", args: []string{"verify", "--db", "nosuchdb"},
			code: 2, stderr: "no database nosuchdb in the primary"},
		{name: "verify: no such collection", args: []string{"verify", "--db", "bar", "--collections", "fo"},
			code: 2, stderr: "no collection bar.fo in the primary"},
		{name: "bootstrap: no such database", args: []string{"bootstrap", "--db", "nosuchdb", "--no-checkpoint"},
			code: 2, stderr: "no database nosuchdb in the primary"},
		{name: "bootstrap: a bad --retention", args: []string{"bootstrap", "--db", "bar", "--retention", "0s"},
			code: 2, stderr: `--retention "0s": want a positive duration`},
		{name: "bootstrap --json: elapsed in seconds", args: []string{"bootstrap", "--db", "bar", "--collections", "x", "--no-checkpoint", "--json"},
			code: 0, stdout: `"elapsed": 0.`},
		{name: "restore: no such database", args: []string{"restore", "--db", "nosuchdb"},
			code: 2, stderr: "no database nosuchdb in DR"},
		{name: "restore: no such collection", args: []string{"restore", "--db", "bar", "--collections", "foo,fo"},
			code: 2, stderr: "no collection bar.fo in DR"},
		{name: "restore: deprecated --coll", args: []string{"restore", "--db", "bar", "--coll", "fo"},
			code: 2, stderr: "no collection bar.fo in DR"},
		{name: "restore: the DR side of NAMESPACE_MAP", env: map[string]string{"NAMESPACE_MAP": "bar=bar_dr"},
			args: []string{"restore", "--db", "bar"}, code: 2, stderr: "no database bar_dr in DR"},
		{name: "restore: a dry run", args: []string{"restore", "--db", "bar", "--collections", "foo,x"},
			code: 0, stdout: "0 selected, 0 would restore"},
		{name: "NAMESPACE_MAP is checked as configuration", env: map[string]string{"NAMESPACE_MAP": "bar"},
			args: []string{"verify", "--db", "bar"}, code: 1, stderr: `NAMESPACE_MAP: "bar" is not key=value`},
		{name: "--db WATCH_DB keeps WATCH_COLLECTIONS", env: map[string]string{"WATCH_DB": "bar", "WATCH_COLLECTIONS": "fo"},
			args: []string{"verify", "--db", "bar"}, code: 2, stderr: "no collection bar.fo in the primary"},
		{name: "--db of another database warns that WATCH_COLLECTIONS is ignored", env: map[string]string{"WATCH_DB": "baz", "WATCH_COLLECTIONS": "fo"},
			args: []string{"verify", "--db", "nosuchdb"}, code: 2, stderr: "WATCH_COLLECTIONS ignored"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			before := states(ctx, t, store)
			var out, errOut bytes.Buffer
			code := run(ctx, tt.args, &out, &errOut)
			if code != tt.code || !strings.Contains(errOut.String(), tt.stderr) || !strings.Contains(out.String(), tt.stdout) {
				t.Fatalf("exit %d, want %d with stderr containing %q and stdout %q\nstderr:\n%s\nstdout:\n%s",
					code, tt.code, tt.stderr, tt.stdout, errOut.String(), out.String())
			}
			after := states(ctx, t, store)
			for id, fence := range after {
				if prev, ok := before[id]; (!ok || prev != fence) && id != tt.written {
					t.Errorf("checkpoint of %s written (fence %d → %d)", id, prev, fence)
				}
			}
			if tt.written != "" && after[tt.written] == before[tt.written] {
				t.Errorf("checkpoint of %s not written", tt.written)
			}
		})
	}
}

// TestResetCheckpointJSON checks --json: the previous and new positions and the skipped span.
func TestResetCheckpointJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := startStack(ctx, t)
	primary := connectTo(ctx, t, st.PrimaryURI)
	if _, err := primary.Database("bar").Collection("foo").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	store := checkpoint.New(primary.Database("docdbdr").Collection("checkpoints"), nil)
	lease, err := store.Acquire(ctx, "bar.foo", "capture-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	prevAt := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: "82AA"}})
	if err := store.Save(ctx, lease, checkpoint.Position{ResumeToken: tok, ClusterTime: primitive.Timestamp{T: uint32(prevAt.Unix()), I: 1}}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"reset-checkpoint", "--db", "bar", "--collections", "foo", "--to", "now", "--who", "tester", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	var res resetResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if res.Scope != "bar.foo" || res.Who != "tester" || res.Previous == nil || res.Previous.ResumeToken != `{"_data":"82AA"}` ||
		res.Previous.ClusterTime == nil || !res.Previous.ClusterTime.Equal(prevAt) || res.Now.StartAt == nil ||
		res.Skipped == nil || !res.Skipped.From.Equal(prevAt) || !res.Skipped.To.Equal(*res.Now.StartAt) {
		t.Errorf("result:\n%s", out.String())
	}
	state, err := store.Load(ctx, "bar.foo")
	if err != nil || state.ResetBy == nil || state.ResetBy.Who != "tester" || len(state.History) != 1 {
		t.Errorf("state after the reset: %+v, %v", state, err)
	}
}

// startStack starts the embedded stack and points the CLI's environment at it, with no scope.
func startStack(ctx context.Context, t *testing.T) *devstack.Stack {
	t.Helper()
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, kv := range st.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, k := range []string{"WATCH_DB", "WATCH_COLLECTIONS", "NAMESPACE_MAP", "CHANGE_STREAM_RETENTION", "STATE_DB", "STATE_COLLECTION", "LOG_LEVEL"} {
		t.Setenv(k, "")
	}
	t.Setenv("LOG_LEVEL", "warn")
	return st
}

func connectTo(ctx context.Context, t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := docdb.Connect(ctx, docdb.Settings{URI: uri, TLS: docdb.TLSDisabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// states is every scope's fence: a write to a checkpoint changes it.
func states(ctx context.Context, t *testing.T, store *checkpoint.Store) map[string]int64 {
	t.Helper()
	list, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, s := range list {
		out[s.Scope] = s.Fence
	}
	return out
}
