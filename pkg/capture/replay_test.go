package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// TestReplayDeadLetters: capture dead-letters a document too deep to convert and one whose key is
// too large for KAFKA_MAX_MESSAGE_BYTES; after the fix (a larger limit), the dry run says what
// would be published and publishes nothing; --apply publishes what now converts (a collection
// event once per partition) and marks it, so that a second replay publishes nothing again; what
// still fails is reported and left.
func TestReplayDeadLetters(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	bigKey := strings.Repeat("k", 1100)
	hugeID, _ := bson.Marshal(bson.D{
		{Key: "_id", Value: token(3)}, {Key: "operationType", Value: "insert"},
		{Key: "clusterTime", Value: primitive.Timestamp{T: 1714564803, I: 1}},
		{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
		{Key: "documentKey", Value: bson.D{{Key: "_id", Value: bigKey}}},
		{Key: "fullDocument", Value: bson.D{{Key: "_id", Value: bigKey}, {Key: "pad", Value: strings.Repeat("p", 2000)}}},
	})
	deep := event(2, "insert", "bar", "foo", bson.E{Key: "fullDocument", Value: append(bson.D{{Key: "_id", Value: int32(2)}}, nested(120)...)})
	h := newHarness(event(1, "insert", "bar", "foo"), deep, hugeID, event(4, "insert", "bar", "foo"))
	h.opts.MaxMessageBytes = 1024
	if sum, err := h.run(); err != nil || sum.DeadLettered != 2 {
		t.Fatalf("capture: %+v, %v", sum, err)
	}
	// A drop dead-lettered by an earlier version of capture, written by hand.
	drop := event(5, "drop", "bar", "foo")
	dl, _ := json.Marshal(DeadLetter{Source: "capture", Scope: "bar.foo", Reason: "an old bug", Operation: "drop", DB: "bar", Coll: "foo",
		ClusterTime: ClusterTime{T: 1714564805, I: 1}, ResumeToken: json.RawMessage(`{"_data":"00000005"}`), Raw: drop})
	h.blob.objects[DeadLetterKey("docdbdr/", "bar.foo", primitive.Timestamp{T: 1714564805, I: 1}, token(5))] = dl

	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "changevents"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := kafka.NewPublisher(ctx, kafka.Settings{Brokers: kc.ListenAddrs(), Topic: "changevents"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(5 * time.Second)
	opts := ReplayOptions{Store: h.blob, Prefix: "docdbdr/", Scope: "bar.foo", MaxMessageBytes: 1_000_000, Publisher: pub}

	statuses := func(rep ReplayReport) string {
		var s []string
		for _, it := range rep.DeadLetters {
			s = append(s, it.Operation+":"+it.Status)
		}
		return strings.Join(s, " ")
	}
	dry, err := Replay(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(dry); got != "insert:still-fails insert:would-replay drop:would-replay" || dry.WouldReplay != 2 || dry.StillFails != 1 {
		t.Fatalf("dry run: %s (%d would replay, %d still fail)", got, dry.WouldReplay, dry.StillFails)
	}
	if !strings.Contains(dry.DeadLetters[0].Error, "nested deeper than 100") || dry.DeadLetters[2].Messages != 3 {
		t.Errorf("dry run items %+v", dry.DeadLetters)
	}
	if n := countTopic(t, kc.ListenAddrs(), 0); n != 0 {
		t.Fatalf("the dry run published %d records", n)
	}

	opts.Apply = true
	rep, err := Replay(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(rep); got != "insert:still-fails insert:replayed drop:replayed" || rep.Replayed != 2 {
		t.Fatalf("replay: %s", got)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "replayed 2, 1 still fail") {
		t.Errorf("table:\n%s", table.String())
	}
	recs := readTopic(t, kc.ListenAddrs(), 4)
	drops := map[int32]string{}
	for _, r := range recs {
		ev, err := changeevent.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Operation {
		case changeevent.Insert:
			if id, _ := ev.ID(); id.StringValue() != bigKey || ev.FullDocument == nil || !bytes.Equal(ev.ResumeToken, token(3)) {
				t.Errorf("replayed insert: _id of %d bytes, document %v", len(id.StringValue()), ev.FullDocument != nil)
			}
		case changeevent.Drop:
			for _, hd := range r.Headers {
				if hd.Key == changeevent.HeaderBarrier {
					drops[r.Partition] = string(hd.Value)
				}
			}
		}
	}
	if len(recs) != 4 || len(drops) != 3 || drops[0] != "3" || drops[2] != "3" {
		t.Errorf("%d records; drop copies by partition %v: want the insert and the drop in each of 3 partitions", len(recs), drops)
	}

	again, err := Replay(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(again); got != "insert:still-fails insert:already-replayed drop:already-replayed" {
		t.Errorf("second replay: %s", got)
	}
	if n := countTopic(t, kc.ListenAddrs(), 4); n != 4 {
		t.Errorf("%d records after the second replay, want still 4", n)
	}
}

func readTopic(t *testing.T, addrs []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("changevents"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out []*kgo.Record
	for ctx.Err() == nil && len(out) < n {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	extra, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	cl.PollFetches(extra).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	return out
}

func countTopic(t *testing.T, addrs []string, atLeast int) int {
	return len(readTopic(t, addrs, atLeast))
}
