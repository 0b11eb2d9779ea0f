package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

// TestReplayDeadLettersCommand runs the command against the embedded stack: the dry run reports
// and publishes nothing, --apply publishes and marks, a second --apply publishes nothing.
func TestReplayDeadLettersCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, kv := range st.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	for _, k := range []string{"WATCH_DB", "WATCH_COLLECTIONS", "KAFKA_MAX_MESSAGE_BYTES", "LOG_LEVEL"} {
		t.Setenv(k, "")
	}

	token, _ := bson.Marshal(bson.D{{Key: "_data", Value: "0000abcd"}})
	raw, _ := bson.Marshal(bson.D{{Key: "_id", Value: bson.Raw(token)}, {Key: "operationType", Value: "insert"},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1714564800, I: 3}},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int32(7)}}},
		{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: int32(7)}, {Key: "x", Value: "replayed"}}}})
	ts := primitive.Timestamp{T: 1714564800, I: 3}
	body, _ := json.Marshal(capture.DeadLetter{Source: "capture", Scope: "bar.foo", Reason: "an old limit", Operation: "insert", DB: "bar", Coll: "foo",
		ClusterTime: capture.ClusterTime{T: ts.T, I: ts.I}, ResumeToken: json.RawMessage(`{"_data":"0000abcd"}`), Raw: raw})
	store := archive.NewS3(devstack.NewS3Client(st.S3Endpoint), st.Bucket)
	if err := store.Put(ctx, capture.DeadLetterKey(st.Prefix, "bar.foo", ts, token), body); err != nil {
		t.Fatal(err)
	}

	replay := func(args ...string) capture.ReplayReport {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, append([]string{"replay-deadletters", "--json"}, args...), &out, &errOut); code != 0 {
			t.Fatalf("replay-deadletters %v: exit %d\n%s", args, code, errOut.String())
		}
		var rep capture.ReplayReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("output %q: %v", out.String(), err)
		}
		return rep
	}
	status := func(rep capture.ReplayReport) string {
		if len(rep.DeadLetters) != 1 {
			return "no dead letter listed"
		}
		return rep.DeadLetters[0].Status
	}
	if rep := replay(); status(rep) != capture.ReplayWould || rep.Apply {
		t.Fatalf("dry run: %s", status(rep))
	}
	if n := len(replayedRecords(t, st.KafkaBrokers, st.Topic, 0)); n != 0 {
		t.Fatalf("the dry run published %d records", n)
	}
	if rep := replay("--apply"); status(rep) != capture.ReplayDone {
		t.Fatalf("--apply: %s", status(rep))
	}
	if rep := replay("--apply"); status(rep) != capture.ReplayEarlier {
		t.Fatalf("second --apply: %s", status(rep))
	}
	recs := replayedRecords(t, st.KafkaBrokers, st.Topic, 1)
	if len(recs) != 1 || !strings.Contains(string(recs[0].Value), "replayed") || string(recs[0].Key) != "bar|n:7" {
		t.Fatalf("%d records in Kafka, want the one replayed insert", len(recs))
	}
	var table bytes.Buffer
	if code := run(ctx, []string{"replay-deadletters"}, &table, io.Discard); code != 0 || !strings.Contains(table.String(), "already-replayed") {
		t.Errorf("table output (exit %d):\n%s", code, table.String())
	}
	if code := run(ctx, []string{"replay-deadletters", "--bogus"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("a bad flag: exit %d, want 2", code)
	}
}

func replayedRecords(t *testing.T, brokers []string, topic string, atLeast int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []*kgo.Record
	for ctx.Err() == nil && (len(out) < atLeast || atLeast == 0) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}
