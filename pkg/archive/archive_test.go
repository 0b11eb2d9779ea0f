package archive

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

func TestLayout(t *testing.T) {
	day := time.Date(2022, 7, 19, 23, 59, 0, 0, time.FixedZone("x", -3600)) // 2022-07-20 in UTC
	l := Layout{Prefix: "docdbdr/"}
	ts := primitive.Timestamp{T: uint32(day.Unix()), I: 7}
	id := "514a455995a88364b5ec969e4b1d61d5"
	tests := []struct{ got, want string }{
		{l.ArchiveObject(changeevent.Namespace{DB: "bar", Coll: "foo"}, ts, id, "c1a1m000"), "docdbdr/deletes/db=bar/coll=foo/dt=2022-07-20/1658278740-7-514a455995a88364-c1a1m000.json.gz"},
		{l.ArchiveObject(changeevent.Namespace{DB: "bar"}, ts, id, "x"), "docdbdr/deletes/db=bar/coll=_/dt=2022-07-20/1658278740-7-514a455995a88364-x.json.gz"},
		{l.ArchiveObject(changeevent.Namespace{DB: "bar", Coll: "a/b c"}, ts, id, "x"), "docdbdr/deletes/db=bar/coll=a%2Fb%20c/dt=2022-07-20/1658278740-7-514a455995a88364-x.json.gz"},
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
			if got.EventID != tt.ev.EventID() || got.Kafka != (Kafka{Topic: "changevents", Partition: 2, Offset: 9}) {
				t.Errorf("eventId %q kafka %+v", got.EventID, got.Kafka)
			}
			if got.BeforeExact != (tt.before != nil || tt.ev.Operation != changeevent.Delete) {
				t.Errorf("beforeExact %t", got.BeforeExact)
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

// TestLineFormat pins one delete line byte for byte: fields in the documented order.
func TestLineFormat(t *testing.T) {
	ev := changeevent.Event{Operation: changeevent.Delete, NS: changeevent.Namespace{DB: "bar", Coll: "foo"},
		DocumentKey: mustMarshal(t, bson.D{{Key: "_id", Value: int32(1)}}), ClusterTime: primitive.Timestamp{T: 1658262022, I: 1},
		ResumeToken: mustMarshal(t, bson.D{{Key: "_data", Value: "8262D70F2E000000012B"}})}
	rec, err := NewRecord(&ev, Kafka{Topic: "changevents", Partition: 0, Offset: 100}, mustMarshal(t, bson.D{{Key: "_id", Value: int32(1)}, {Key: "x", Value: int32(2)}}))
	if err != nil {
		t.Fatal(err)
	}
	rec.BeforeExact, rec.BeforeNote = false, "healed from updateLookup"
	line, err := rec.MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"eventId":"514a455995a88364b5ec969e4b1d61d5","_id":{"$numberInt":"1"},"operation":"delete","timestamp":1658262022,` +
		`"timestampReadable":"2022-07-19 20:20:22","db":"bar","coll":"foo","clusterTime":{"$timestamp":{"t":1658262022,"i":1}},` +
		`"resumeToken":{"_data":"8262D70F2E000000012B"},"kafka":{"topic":"changevents","partition":0,"offset":100},` +
		`"before":{"_id":{"$numberInt":"1"},"x":{"$numberInt":"2"}},"beforeExact":false,"beforeNote":"healed from updateLookup"}`
	if string(line) != want {
		t.Errorf("line\n got %s\nwant %s", line, want)
	}
	drop := changeevent.Event{Operation: changeevent.DropDatabase, NS: changeevent.Namespace{DB: "bar"}, ClusterTime: ev.ClusterTime, ResumeToken: ev.ResumeToken}
	rec, _ = NewRecord(&drop, Kafka{Topic: "changevents", Partition: 3, Offset: 7}, nil)
	rec.PreservedAs = &Preserved{DB: "bar", Suffix: ".dropped.1658262022-1"}
	line, _ = rec.MarshalLine()
	want = `{"eventId":"514a455995a88364b5ec969e4b1d61d5","_id":null,"operation":"dropDatabase","timestamp":1658262022,` +
		`"timestampReadable":"2022-07-19 20:20:22","db":"bar","clusterTime":{"$timestamp":{"t":1658262022,"i":1}},` +
		`"resumeToken":{"_data":"8262D70F2E000000012B"},"kafka":{"topic":"changevents","partition":3,"offset":7},` +
		`"before":null,"beforeExact":true,"preservedAs":{"db":"bar","suffix":".dropped.1658262022-1"}}`
	if string(line) != want {
		t.Errorf("line\n got %s\nwant %s", line, want)
	}
}

// TestS3PutIsConditional: a second Put of a key leaves the first object as it was and succeeds
// (412 from S3 means the write-once object is there); the request carries If-None-Match: *.
func TestS3PutIsConditional(t *testing.T) {
	ctx := context.Background()
	rec := &recordingS3{}
	rec.S3API = newFakeS3(t, "archive")
	store := NewS3(rec, "archive")
	if err := store.Put(ctx, "k", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "k", []byte("second")); err != nil {
		t.Fatalf("second put: %v, want nil (the object exists)", err)
	}
	if got, _ := store.Get(ctx, "k"); string(got) != "first" {
		t.Errorf("object = %q: overwritten", got)
	}
	for i, in := range rec.puts {
		if aws.ToString(in.IfNoneMatch) != "*" {
			t.Errorf("put %d: If-None-Match = %q", i, aws.ToString(in.IfNoneMatch))
		}
	}
}

type recordingS3 struct {
	S3API
	mu   sync.Mutex
	puts []*s3.PutObjectInput
	// fail answers the first len(fail) puts with these HTTP statuses.
	fail []int
}

func (r *recordingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	r.mu.Lock()
	r.puts = append(r.puts, in)
	n := len(r.puts)
	r.mu.Unlock()
	if n <= len(r.fail) {
		return nil, &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: r.fail[n-1]}},
			Err:      errors.New(http.StatusText(r.fail[n-1])),
		}}
	}
	if r.S3API == nil {
		return &s3.PutObjectOutput{}, nil
	}
	return r.S3API.PutObject(ctx, in, opts...)
}

func TestS3PutRetries(t *testing.T) {
	tests := []struct {
		name    string
		fail    []int
		wantErr bool
		puts    int
	}{
		{"409 conflict then success", []int{409, 409}, false, 3},
		{"503 slow down then success", []int{503}, false, 2},
		{"412 is success at once", []int{412}, false, 1},
		{"403 is an error at once", []int{403}, true, 1},
		{"500 is an error at once (the SDK retries it)", []int{500}, true, 1},
		{"409 for ever gives up", []int{409, 409, 409, 409, 409, 409, 409, 409}, true, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingS3{fail: tt.fail}
			store := NewS3(rec, "archive")
			store.backoff = time.Millisecond
			err := store.Put(context.Background(), "k", []byte("x"))
			if (err != nil) != tt.wantErr || len(rec.puts) != tt.puts {
				t.Errorf("err = %v after %d puts; want error %t after %d", err, len(rec.puts), tt.wantErr, tt.puts)
			}
		})
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
