package archive

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

func TestLayout(t *testing.T) {
	day := time.Date(2022, 7, 19, 23, 59, 0, 0, time.FixedZone("x", -3600)) // 2022-07-20 in UTC
	l := Layout{Prefix: "docdbdr/"}
	tests := []struct{ got, want string }{
		{l.DeleteObject("bar", "foo", day, "changevents", 3, 42), "docdbdr/deletes/db=bar/coll=foo/dt=2022-07-20/changevents-3-42.json.gz"},
		{l.DeleteObject("bar", "", day, "changevents", 0, 1), "docdbdr/deletes/db=bar/coll=_/dt=2022-07-20/changevents-0-1.json.gz"},
		{l.DeleteObject("bar", "a/b c", day, "t", 0, 1), "docdbdr/deletes/db=bar/coll=a%2Fb%20c/dt=2022-07-20/t-0-1.json.gz"},
		{l.DeadLetter(day, "changevents", 1, 7), "docdbdr/deadletter/dt=2022-07-20/changevents-1-7.json"},
		{l.DeletesPrefix("bar", "foo"), "docdbdr/deletes/db=bar/coll=foo/"},
		{Layout{}.DeletesPrefix("bar", ""), "deletes/db=bar/"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %s, want %s", tt.got, tt.want)
		}
	}
}

func TestRecordRoundTripKeepsBSONTypes(t *testing.T) {
	dec, _ := primitive.ParseDecimal128("1.50")
	before, _ := bson.Marshal(bson.D{{Key: "_id", Value: int64(7)}, {Key: "d", Value: dec}, {Key: "s", Value: "<&> 数据"}})
	tests := []struct {
		name   string
		ev     changeevent.Event
		before bson.Raw
	}{
		{"delete with before-image", changeevent.Event{Operation: changeevent.Delete, NS: changeevent.Namespace{DB: "bar", Coll: "foo"},
			DocumentKey: mustMarshal(t, bson.D{{Key: "_id", Value: int64(7)}})}, before},
		{"delete of a document DR did not have", changeevent.Event{Operation: changeevent.Delete, NS: changeevent.Namespace{DB: "bar", Coll: "foo"},
			DocumentKey: mustMarshal(t, bson.D{{Key: "_id", Value: primitive.NewObjectID()}})}, nil},
		{"rename", changeevent.Event{Operation: changeevent.Rename, NS: changeevent.Namespace{DB: "bar", Coll: "foo"},
			To: &changeevent.Namespace{DB: "bar", Coll: "foo2"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ev.ClusterTime = primitive.Timestamp{T: 1658233222, I: 3}
			tt.ev.ResumeToken = mustMarshal(t, bson.D{{Key: "_data", Value: "82AB"}})
			rec, err := NewRecord(&tt.ev, Kafka{Topic: "changevents", Partition: 2, Offset: 9}, tt.before)
			if err != nil {
				t.Fatal(err)
			}
			line, err := rec.MarshalLine()
			if err != nil {
				t.Fatal(err)
			}
			body, err := EncodeObject([][]byte{line, line})
			if err != nil {
				t.Fatal(err)
			}
			again, _ := EncodeObject([][]byte{line, line})
			if !bytes.Equal(body, again) {
				t.Error("the same lines encode to different objects")
			}
			lines, err := DecodeObject(body)
			if err != nil || len(lines) != 2 || !bytes.Equal(lines[0], line) {
				t.Fatalf("decoded %q, %v", lines, err)
			}
			got, err := ParseLine(lines[0])
			if err != nil {
				t.Fatal(err)
			}
			if at, err := LineKafka(lines[0]); err != nil || at != (Kafka{Topic: "changevents", Partition: 2, Offset: 9}) {
				t.Errorf("LineKafka = %+v, %v", at, err)
			}
			if got.TimestampReadable != "2022-07-19 12:20:22" || got.Timestamp != 1658233222 || got.Kafka.Offset != 9 {
				t.Errorf("record %+v", got)
			}
			if ts, err := got.ClusterTimestamp(); err != nil || ts != tt.ev.ClusterTime {
				t.Errorf("clusterTime %v, %v", ts, err)
			}
			b, err := got.BeforeDocument()
			if err != nil || !bytes.Equal(b, tt.before) {
				t.Errorf("before-image changed: %v, %v", b, err)
			}
			if tt.ev.Operation == changeevent.Delete {
				id, err := got.IDValue()
				want, _ := tt.ev.ID()
				if err != nil || !id.Equal(want) {
					t.Errorf("_id %v, want %v (%v)", id, want, err)
				}
			} else if string(got.ID) != "null" || got.To == nil || got.To.Coll != "foo2" {
				t.Errorf("collection event record %+v", got)
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newFakeS3 serves gofakes3 over HTTP and returns a client with path-style addressing.
func newFakeS3(t *testing.T, bucket string) *s3.Client {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
}

func TestS3(t *testing.T) {
	ctx := context.Background()
	store := NewS3(newFakeS3(t, "archive"), "archive")
	body := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000)
	for _, k := range []string{"p/deletes/a.json.gz", "p/deletes/b.json.gz", "p/deadletter/c.json"} {
		if err := store.Put(ctx, k, body); err != nil {
			t.Fatal(err)
		}
	}
	got, err := store.Get(ctx, "p/deletes/a.json.gz")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("get: %d bytes, %v", len(got), err)
	}
	if _, err := store.Get(ctx, "p/none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing object: %v, want ErrNotFound", err)
	}
	keys, err := store.List(ctx, "p/deletes/")
	if err != nil || len(keys) != 2 || keys[0] != "p/deletes/a.json.gz" {
		t.Errorf("list: %v, %v", keys, err)
	}
	if err := NewS3(newFakeS3(t, "archive"), "nobucket").Put(ctx, "k", body); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("put to a missing bucket: %v", err)
	}
}

func TestS3Unreachable(t *testing.T) {
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:1"), UsePathStyle: true,
		Credentials:      credentials.NewStaticCredentialsProvider("test", "test", ""),
		RetryMaxAttempts: 1,
	})
	store := NewS3(client, "archive")
	if err := store.Put(context.Background(), "k", []byte("x")); err == nil {
		t.Error("put to an unreachable endpoint succeeded")
	}
	if _, err := store.Get(context.Background(), "k"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("get from an unreachable endpoint: %v", err)
	}
}
