package deploy

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// scriptedStream is a change stream that returns prepared raw events, then nothing.
type scriptedStream struct {
	events []bson.Raw
	cur    bson.Raw
}

func (s *scriptedStream) TryNext(context.Context) bool {
	if len(s.events) == 0 {
		return false
	}
	s.cur, s.events = s.events[0], s.events[1:]
	return true
}
func (s *scriptedStream) Current() bson.Raw { return s.cur }
func (s *scriptedStream) ResumeToken() bson.Raw {
	if s.cur == nil {
		return nil
	}
	return s.cur.Lookup("_id").Document()
}
func (s *scriptedStream) Err() error                  { return nil }
func (s *scriptedStream) Close(context.Context) error { return nil }

type scriptedOpener struct{ stream *scriptedStream }

func (o scriptedOpener) Open(context.Context, scope.Scope, capture.Start) (capture.Stream, error) {
	return o.stream, nil
}

// TestCaptureS3ActionsAreTheGrantedOnes derives the S3 actions capture performs, and on which
// key prefixes, by running it over an event too large for a Kafka message (a claim check) and
// one it cannot convert (a dead letter), through a recording S3 client in front of the strict
// local S3, and checks that CaptureRole grants exactly those.
func TestCaptureS3ActionsAreTheGrantedOnes(t *testing.T) {
	const prefix = "docdbdr/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	primary, err := mongo.Connect(ctx, options.Client().ApplyURI(st.PrimaryURI).SetRetryWrites(false))
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Disconnect(context.Background())

	ev := func(n int, full bson.D) bson.Raw {
		return must(bson.Marshal(bson.D{
			{Key: "_id", Value: bson.D{{Key: "_data", Value: strings.Repeat("0", 8) + string(rune('a'+n))}}},
			{Key: "operationType", Value: "insert"},
			{Key: "clusterTime", Value: primitive.Timestamp{T: uint32(1714564800 + n), I: 1}},
			{Key: "ns", Value: bson.D{{Key: "db", Value: "bar"}, {Key: "coll", Value: "foo"}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: int32(n)}}},
			{Key: "fullDocument", Value: append(bson.D{{Key: "_id", Value: int32(n)}}, full...)},
		}))
	}
	deep := bson.D{{Key: "leaf", Value: int32(1)}}
	for range 119 {
		deep = bson.D{{Key: "a", Value: deep}}
	}
	stream := &scriptedStream{events: []bson.Raw{
		ev(1, bson.D{{Key: "small", Value: 1}}),
		ev(2, bson.D{{Key: "big", Value: strings.Repeat("x", 10_000)}}), // claim-checked
		ev(3, deep), // cannot be converted: dead-lettered
	}}

	pub, err := kafka.NewPublisher(ctx, kafka.Settings{Brokers: st.KafkaBrokers, Topic: st.Topic})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(5 * time.Second)
	rec := &recordingS3{S3API: devstack.NewS3Client(st.S3Endpoint)}
	c := capture.New(capture.Options{
		Scope: scope.Scope{DB: "bar", Collections: []string{"foo"}}, MaxEvents: 10, MaxBytes: 1 << 20, IdleTimeout: 100 * time.Millisecond,
		InFlightMessages: capture.DefaultInFlightMessages, InFlightBytes: capture.DefaultInFlightBytes,
		DeadlineMargin: time.Second, LeaseTTL: 5 * time.Second, MaxMessageBytes: 4096, ArchivePrefix: prefix,
	}, capture.Deps{
		Streams:     scriptedOpener{stream},
		Publisher:   capture.KafkaPublisher{P: pub},
		Checkpoints: checkpoint.New(primary.Database("docdbdr").Collection("state"), nil),
		Blobs:       archive.NewS3(rec, st.Bucket),
		Logger:      slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	sum, err := c.Run(ctx, capture.Invocation{Owner: "req-1", Deadline: time.Now().Add(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if sum.ClaimChecks != 1 || sum.DeadLettered != 1 {
		t.Fatalf("claim checks %d, dead letters %d; want 1 and 1 (the test did not exercise both): %+v", sum.ClaimChecks, sum.DeadLettered, sum)
	}

	used := map[string][]string{}
	for _, s := range rec.seen {
		action, key, _ := strings.Cut(s, " ")
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			t.Fatalf("capture wrote outside the archive prefix: %s", s)
		}
		area, _, _ := strings.Cut(rest, "/")
		if area == "deadletter" {
			area = "deadletter/capture" // capture's own share of the dead-letter area
			if !strings.HasPrefix(rest, "deadletter/capture/") {
				t.Fatalf("capture wrote a dead letter outside deadletter/capture/: %s", s)
			}
		}
		res := "arn:aws:s3:::<ArchiveBucket>/" + prefix + area + "/*"
		if !slices.Contains(used[action], res) {
			used[action] = append(used[action], res)
			sort.Strings(used[action])
		}
	}
	want := map[string][]string{
		"s3:PutObject": {"arn:aws:s3:::<ArchiveBucket>/docdbdr/claimcheck/*", "arn:aws:s3:::<ArchiveBucket>/docdbdr/deadletter/capture/*"},
	}
	if !equalGrants(used, want) {
		t.Errorf("the code's S3 use changed: %v (want %v); update CaptureRole and this test together", used, want)
	}
	granted := actionsOn(t, render(t, required(nil)), "CaptureRole", "s3:")
	if !equalGrants(granted, used) {
		t.Errorf("CaptureRole grants %v, the capture code uses %v", granted, used)
	}
}
