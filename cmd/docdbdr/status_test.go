package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// TestStatus sets up a scope whose checkpoint is one event behind, with a lease, a reset in its
// history, documents on both sides, archive lines and a dead letter, moves status's clock 90 s
// past the unread event, and checks every figure, the health verdict and the exit status.
func TestStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := startStack(ctx, t)
	primary := connectTo(ctx, t, st.PrimaryURI)
	dr := connectTo(ctx, t, st.DRURI)
	sc := scope.Scope{DB: "bar", Collections: []string{"foo"}}
	coll := primary.Database("bar").Collection("foo")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	if err := docdb.EnableChangeStreams(ctx, primary, sc); err != nil {
		t.Fatal(err)
	}
	// Two events: the checkpoint is after the first, so the second is the oldest unread change.
	cs, err := coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetMaxAwaitTime(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	var tokens []bson.Raw
	var times []primitive.Timestamp
	for i := 1; i <= 2; i++ {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
		if !cs.Next(ctx) {
			t.Fatalf("no change event %d: %v", i, cs.Err())
		}
		sec, inc, _ := cs.Current.Lookup("clusterTime").TimestampOK()
		tokens = append(tokens, bytes.Clone(cs.ResumeToken()))
		times = append(times, primitive.Timestamp{T: sec, I: inc})
	}
	if _, err := dr.Database("bar").Collection("foo").InsertOne(ctx, bson.D{{Key: "_id", Value: 0}}); err != nil {
		t.Fatal(err)
	}

	store := checkpoint.New(primary.Database("docdbdr").Collection("checkpoints"), nil)
	if err := store.Reset(ctx, sc.ID(), checkpoint.ResetTo{StartAt: time.Now().Add(-time.Hour)}, "op-1"); err != nil {
		t.Fatal(err)
	}
	lease, err := store.Acquire(ctx, sc.ID(), "capture-1", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(ctx, lease, checkpoint.Position{ResumeToken: tokens[0], ClusterTime: times[0]}); err != nil {
		t.Fatal(err)
	}

	// Archive: two deletes now, one three days ago (outside the window); one capture dead letter.
	s3 := archive.NewS3(devstack.NewS3Client(st.S3Endpoint), st.Bucket)
	layout := archive.Layout{Prefix: st.Prefix}
	putDeletes(ctx, t, s3, layout, time.Now(), 2)
	putDeletes(ctx, t, s3, layout, time.Now().Add(-72*time.Hour), 1)
	if err := s3.Put(ctx, capture.DeadLetterKey(st.Prefix, sc.ID(), primitive.Timestamp{T: uint32(time.Now().Unix())}, tokens[1]), []byte("{}")); err != nil {
		t.Fatal(err)
	}

	saved, err := store.Load(ctx, sc.ID()) // Save extended the lease
	if err != nil || saved.Lease == nil {
		t.Fatalf("state %+v, %v", saved, err)
	}
	realNow := time.Now()
	statusNow = func() time.Time { return realNow.Add(90 * time.Second) }
	t.Cleanup(func() { statusNow = time.Now })
	status := func(args ...string) (statusReport, int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(ctx, append([]string{"status", "--db", "bar", "--collections", "foo", "--json"}, args...), &out, &errOut)
		var rep statusReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("status %v: exit %d, output not JSON (%v):\n%s\n%s", args, code, err, out.String(), errOut.String())
		}
		return rep, code, errOut.String()
	}

	t.Setenv("CHANGE_STREAM_RETENTION", "3m")
	rep, code, stderr := status("--max-lag", "1m")
	if len(rep.Scopes) != 1 {
		t.Fatalf("%d scopes", len(rep.Scopes))
	}
	s := rep.Scopes[0]
	unread := changeevent.Time(times[1])
	wantLag := rep.At.Sub(unread)
	if wantLag < 90*time.Second || wantLag > 95*time.Second {
		t.Fatalf("test setup: the unread event is %s before status's clock", wantLag)
	}
	switch {
	case s.Scope != "bar.foo" || !s.Checkpoint:
		t.Errorf("scope %q, checkpoint %v", s.Scope, s.Checkpoint)
	case s.ClusterTime == nil || s.ClusterTime.T != times[0].T || s.ClusterTime.I != times[0].I:
		t.Errorf("cluster time %+v, want %v", s.ClusterTime, times[0])
	case s.ResumeToken != extJSON(tokens[0]):
		t.Errorf("resume token %s, want %s", s.ResumeToken, extJSON(tokens[0]))
	case s.OldestUnread == nil || !s.OldestUnread.Equal(unread):
		t.Errorf("oldest unread %v, want %v", s.OldestUnread, unread)
	case s.Lag == nil || time.Duration(*s.Lag) != wantLag:
		t.Errorf("lag %v, want %v", s.Lag, wantLag)
	case s.RetentionShare == nil || *s.RetentionShare != wantLag.Seconds()/180:
		t.Errorf("retention share %v, want %v", s.RetentionShare, wantLag.Seconds()/180)
	case s.CheckpointAge == nil || time.Duration(*s.CheckpointAge) != rep.At.Sub(changeevent.Time(times[0])):
		t.Errorf("checkpoint age %v", s.CheckpointAge)
	case s.Lease == nil || s.Lease.Owner != "capture-1" || s.Lease.Expired || !s.Lease.ExpiresAt.Equal(saved.Lease.ExpiresAt) ||
		time.Duration(s.Lease.ExpiresIn) != saved.Lease.ExpiresAt.Sub(rep.At):
		t.Errorf("lease %+v, want capture-1 until %s", s.Lease, saved.Lease.ExpiresAt)
	case len(s.Resets) != 1 || s.Resets[0].Who != "op-1":
		t.Errorf("resets %+v", s.Resets)
	case len(s.Namespaces) != 1 || s.Namespaces[0].InPrim != 3 || s.Namespaces[0].InDR != 1:
		t.Errorf("counts %+v, want bar.foo 3 in the primary, 1 in DR", s.Namespaces)
	case s.ArchiveLines24h == nil || *s.ArchiveLines24h != 2:
		t.Errorf("archive lines %v, want 2", s.ArchiveLines24h)
	case s.CaptureDeadLetters24h == nil || *s.CaptureDeadLetters24h != 1:
		t.Errorf("capture dead letters %v, want 1", s.CaptureDeadLetters24h)
	}
	if code != 1 || len(s.Problems) != 2 || !strings.Contains(stderr, "lag 1m3") && !strings.Contains(stderr, "lag 1m") ||
		!strings.Contains(stderr, "exceeds --max-lag 1m0s") || !strings.Contains(stderr, "of the change-stream retention, more than --max-retention-share 50%") {
		t.Errorf("exit %d, problems %q, stderr:\n%s", code, s.Problems, stderr)
	}

	// The same lag within generous limits is healthy.
	t.Setenv("CHANGE_STREAM_RETENTION", "1h")
	if rep, code, stderr := status(); code != 0 || len(rep.Scopes[0].Problems) != 0 {
		t.Errorf("within limits: exit %d, problems %q\n%s", code, rep.Scopes[0].Problems, stderr)
	}

	// Caught up: the checkpoint after the last event leaves nothing unread.
	if err := store.Save(ctx, lease, checkpoint.Position{ResumeToken: tokens[1], ClusterTime: times[1]}); err != nil {
		t.Fatal(err)
	}
	if rep, code, _ := status(); code != 0 || rep.Scopes[0].Lag == nil || *rep.Scopes[0].Lag != 0 || rep.Scopes[0].OldestUnread != nil {
		t.Errorf("caught up: exit %d, lag %v, oldest unread %v", code, rep.Scopes[0].Lag, rep.Scopes[0].OldestUnread)
	}

	// The table, and every scope of the state collection when no scope is given.
	var table, errOut bytes.Buffer
	if code := run(ctx, []string{"status"}, &table, &errOut); code != 0 {
		t.Fatalf("status of every scope: exit %d\n%s", code, errOut.String())
	}
	for _, want := range []string{"scope bar.foo", "lag", "0 (capture has read every change)", "held by capture-1", "by op-1", "bar.foo", "2 line(s) in the last 24h", "healthy"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	// A scope capture never ran for is unhealthy.
	if _, err := primary.Database("bar").Collection("x").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run(ctx, []string{"status", "--db", "bar", "--collections", "x"}, &out, &errOut); code != 1 || !strings.Contains(out.String(), "UNHEALTHY: no checkpoint") {
		t.Errorf("no checkpoint: exit %d\n%s", code, out.String())
	}

	// A state document of the whole database overlaps bar.foo (not bar.x, which has none).
	if err := store.Reset(ctx, "bar", checkpoint.ResetTo{StartAt: time.Now()}, "op-2"); err != nil {
		t.Fatal(err)
	}
	if rep, _, _ := status(); len(rep.Scopes[0].Overlaps) != 1 || rep.Scopes[0].Overlaps[0] != "bar" {
		t.Errorf("overlaps %q, want [bar]", rep.Scopes[0].Overlaps)
	}
	out.Reset()
	if run(ctx, []string{"status", "--db", "bar", "--collections", "foo"}, &out, &errOut); !strings.Contains(out.String(), "share namespaces with this one: bar") {
		t.Errorf("table:\n%s", out.String())
	}

	// A promoted DR (the fence docdbdr promote writes): this stack is unhealthy, whatever its lag.
	promotedAt := time.Date(2026, 12, 1, 10, 42, 0, 0, time.UTC)
	if _, err := dr.Database("docdbdr").Collection(apply.FenceCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: apply.FenceID},
		{Key: "promotedAt", Value: promotedAt}, {Key: "topic", Value: "changeevents"},
		{Key: "ends", Value: bson.A{bson.D{{Key: "partition", Value: int64(0)}, {Key: "end", Value: int64(7)}}}}}); err != nil {
		t.Fatal(err)
	}
	rep, code, stderr = status()
	if code != 1 || rep.DRPromotedAt == nil || !rep.DRPromotedAt.Equal(promotedAt) || !strings.Contains(stderr, "DR was promoted at 2026-12-01T10:42:00Z") {
		t.Errorf("promoted DR: exit %d, drPromotedAt %v, stderr:\n%s", code, rep.DRPromotedAt, stderr)
	}
	out.Reset()
	if run(ctx, []string{"status", "--db", "bar", "--collections", "foo"}, &out, &errOut); !strings.Contains(out.String(), "DR PROMOTED at 2026-12-01T10:42:00Z") {
		t.Errorf("promoted DR, table:\n%s", out.String())
	}
}

// putDeletes archives n deletes of bar.foo at the given time, in one object.
func putDeletes(ctx context.Context, t *testing.T, s3 *archive.S3, layout archive.Layout, at time.Time, n int) {
	t.Helper()
	var lines [][]byte
	ts := primitive.Timestamp{T: uint32(at.Unix()), I: 1}
	for i := range n {
		key, _ := bson.Marshal(bson.D{{Key: "_id", Value: i}})
		tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: at.String() + string(rune('a'+i))}})
		ev := &changeevent.Event{Version: 1, Operation: changeevent.Delete, NS: changeevent.Namespace{DB: "bar", Coll: "foo"},
			DocumentKey: key, ClusterTime: ts, ResumeToken: tok}
		rec, err := archive.NewRecord(ev, archive.Kafka{Topic: "changevents", Offset: int64(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		line, err := rec.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	body, err := archive.EncodeObject(lines)
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.Put(ctx, layout.ArchiveObject(changeevent.Namespace{DB: "bar", Coll: "foo"}, ts, "0", "test"), body); err != nil {
		t.Fatal(err)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -12345: "-12,345"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1023: "1023 bytes", 1024: "1.0 KiB (1,024 bytes)", 74288890: "70.8 MiB (74,288,890 bytes)"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
