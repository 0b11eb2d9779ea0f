package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// recordingS3 records every S3 request apply makes, as "<IAM action> <key>".
type recordingS3 struct {
	archive.S3API
	mu   sync.Mutex
	seen []string
}

func (r *recordingS3) note(action, key string) {
	r.mu.Lock()
	r.seen = append(r.seen, action+" "+key)
	r.mu.Unlock()
}

func (r *recordingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	r.note("s3:PutObject", aws.ToString(in.Key))
	return r.S3API.PutObject(ctx, in, o...)
}

func (r *recordingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	r.note("s3:GetObject", aws.ToString(in.Key))
	return r.S3API.GetObject(ctx, in, o...)
}

func (r *recordingS3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, o ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	r.note("s3:ListBucket", aws.ToString(in.Prefix))
	return r.S3API.ListObjectsV2(ctx, in, o...)
}

// TestApplyS3ActionsAreTheGrantedOnes derives the S3 actions the apply code performs, and on
// which key prefixes, by running the handler over every kind of record (insert, update,
// delete, drop, a claim-checked event, a poison record, and the recovery of a crashed batch's
// pending lines), with the version history off and on, and checks that ApplyRole grants exactly
// those: nothing the code needs is missing (on AWS, the batch would fail for ever), nothing it
// does not use is granted.
func TestApplyS3ActionsAreTheGrantedOnes(t *testing.T) {
	for _, history := range []string{"off", "on"} {
		t.Run("history="+history, func(t *testing.T) {
			used := applyS3Use(t, history == "on")
			want := map[string][]string{
				"s3:PutObject": {"arn:aws:s3:::<ArchiveBucket>/docdbdr/deadletter/*", "arn:aws:s3:::<ArchiveBucket>/docdbdr/deletes/*"},
				"s3:GetObject": {"arn:aws:s3:::<ArchiveBucket>/docdbdr/claimcheck/*"},
			}
			if history == "on" {
				want["s3:PutObject"] = append(want["s3:PutObject"], "arn:aws:s3:::<ArchiveBucket>/docdbdr/history/*")
			}
			if !equalGrants(used, want) {
				t.Errorf("the code's S3 use changed: %v (want %v); update ApplyRole and this test together", used, want)
			}
			granted := actionsOn(t, render(t, required(map[string]any{"ArchiveHistory": history})), "ApplyRole", "s3:")
			if !equalGrants(granted, used) {
				t.Errorf("ApplyRole grants %v, the apply code uses %v", granted, used)
			}
		})
	}
}

// applyS3Use runs the apply handler over every kind of record and returns the S3 actions it
// performed, by IAM action, on which resources.
func applyS3Use(t *testing.T, history bool) map[string][]string {
	const prefix = "docdbdr/"
	ctx := context.Background()
	backend := s3mem.New()
	if err := backend.CreateBucket("archive"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(devstack.StrictS3(gofakes3.New(backend).Server(), 0, 0)) // as S3 answers apply's role
	defer srv.Close()
	rec := &recordingS3{S3API: s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})}
	store := archive.NewS3(rec, "archive")

	ns := changeevent.Namespace{DB: "bar", Coll: "foo"}
	ts := primitive.Timestamp{T: 1714564800, I: 1}
	n := 0
	ev := func(op changeevent.OperationType, id any, full bson.D) changeevent.Event {
		n++
		e := changeevent.Event{Version: 1, Operation: op, NS: ns, ClusterTime: ts,
			ResumeToken: must(bson.Marshal(bson.D{{Key: "_data", Value: fmt.Sprint(n)}}))}
		if id != nil {
			e.DocumentKey = must(bson.Marshal(bson.D{{Key: "_id", Value: id}}))
		}
		if full != nil {
			e.FullDocument = must(bson.Marshal(append(bson.D{{Key: "_id", Value: id}}, full...)))
		}
		return e
	}
	records := func(offset int64, evs ...changeevent.Event) events.KafkaEvent {
		var recs []events.KafkaRecord
		for i, e := range evs {
			v := must(changeevent.Marshal(&e))
			k := must(changeevent.Key(&e))
			recs = append(recs, events.KafkaRecord{Topic: "changevents", Partition: 0, Offset: offset + int64(i),
				Timestamp: events.MilliSecondsEpochTime{Time: time.Unix(1714564800, 0)},
				Key:       base64.StdEncoding.EncodeToString(k), Value: base64.StdEncoding.EncodeToString(v)})
		}
		return events.KafkaEvent{Records: map[string][]events.KafkaRecord{"changevents-0": recs}}
	}

	// A claim check as capture writes it (not through the recorder: capture's role is not tested here).
	big := ev(changeevent.Insert, int32(3), bson.D{{Key: "big", Value: strings.Repeat("x", 100)}})
	body := must(changeevent.Marshal(&big))
	sum := sha256.Sum256(body)
	ccKey := prefix + "claimcheck/db=bar/coll=foo/x.bson"
	if err := archive.NewS3(rec.S3API, "archive").Put(ctx, ccKey, body); err != nil {
		t.Fatal(err)
	}
	stub := big
	stub.FullDocument = nil
	stub.ClaimCheck = &changeevent.ClaimCheck{Bucket: "archive", Key: ccKey, Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:])}

	h, err := apply.New(apply.NewMongoWriter(mongotest.Client(t)), store,
		apply.Options{ArchivePrefix: prefix, ClaimCheckBucket: "archive", History: history, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	batch := records(0,
		ev(changeevent.Insert, int32(1), bson.D{{Key: "v", Value: 1}}),
		ev(changeevent.Update, int32(1), nil),
		ev(changeevent.Delete, int32(1), nil),
		stub,
		ev(changeevent.Drop, nil, nil),
	)
	batch.Records["changevents-0"][1].Value = base64.StdEncoding.EncodeToString(must(changeevent.Marshal(&changeevent.Event{
		Version: 1, Operation: changeevent.Update, NS: ns, ClusterTime: ts, DocumentKey: must(bson.Marshal(bson.D{{Key: "_id", Value: int32(1)}})),
		ResumeToken:       must(bson.Marshal(bson.D{{Key: "_data", Value: "u"}})),
		UpdateDescription: &changeevent.UpdateDescription{UpdatedFields: must(bson.Marshal(bson.D{{Key: "v", Value: 2}}))}})))
	batch.Records["changevents-0"] = append(batch.Records["changevents-0"], events.KafkaRecord{Topic: "changevents", Offset: 5, Value: "!!"})
	if _, err := h.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// A redelivery, and a batch that recovers pending lines, use no other action.
	if _, err := h.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(ctx, records(6, ev(changeevent.Delete, int32(3), nil))); err != nil {
		t.Fatal(err)
	}

	used := map[string][]string{}
	for _, s := range rec.seen {
		action, key, _ := strings.Cut(s, " ")
		area, _, ok := strings.Cut(strings.TrimPrefix(key, prefix), "/")
		if !ok || !strings.HasPrefix(key, prefix) {
			t.Fatalf("apply wrote outside the archive prefix: %s", s)
		}
		res := "arn:aws:s3:::<ArchiveBucket>/" + prefix + area + "/*"
		if !slices.Contains(used[action], res) {
			used[action] = append(used[action], res)
			sort.Strings(used[action])
		}
	}
	return used
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
