package devstack

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
)

// TestStrictS3AnswersAsS3Does checks the strict mode against what S3 answers a role without
// s3:ListBucket: 403 for a missing key (GET and HEAD), the object for an existing one, and
// SlowDown at the configured rate; the lenient mode keeps gofakes3's 404.
func TestStrictS3AnswersAsS3Does(t *testing.T) {
	tests := []struct {
		name        string
		opts        Options
		wantMissing error // what Get of a missing key wraps
		headStatus  string
	}{
		{name: "strict (default)", opts: Options{}, wantMissing: archive.ErrAccessDenied, headStatus: "403"},
		{name: "lenient", opts: Options{LenientS3: true}, wantMissing: archive.ErrNotFound, headStatus: "404"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			st, err := Start(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			client := NewS3Client(st.S3Endpoint)
			store := archive.NewS3(client, st.Bucket)

			if err := store.Put(ctx, "k/present", []byte("x")); err != nil {
				t.Fatal(err)
			}
			if body, err := store.Get(ctx, "k/present"); err != nil || string(body) != "x" {
				t.Errorf("Get of an existing key = %q, %v", body, err)
			}
			_, err = store.Get(ctx, "k/absent")
			if !errors.Is(err, tc.wantMissing) {
				t.Errorf("Get of a missing key: %v, want it to wrap %v", err, tc.wantMissing)
			}
			_, err = client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.Bucket), Key: aws.String("k/absent")})
			if err == nil || !strings.Contains(err.Error(), "StatusCode: "+tc.headStatus) {
				t.Errorf("HEAD of a missing key: %v, want status %s", err, tc.headStatus)
			}
			keys, err := store.List(ctx, "k/")
			if err != nil || len(keys) != 1 {
				t.Errorf("List = %v, %v; want the one key (listing is served)", keys, err)
			}
		})
	}
}

func TestStrictS3SlowsDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Every object request refused: the error names SlowDown.
	st, err := Start(ctx, Options{S3SlowDownRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = NewS3Client(st.S3Endpoint).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.Bucket), Key: aws.String("k"), Body: strings.NewReader("x")},
		func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err == nil || !strings.Contains(err.Error(), "SlowDown") {
		t.Fatalf("PUT with every request slowed down: %v, want SlowDown", err)
	}

	// A share refused: the SDK's and the store's retries get every write through, and some
	// requests really were refused.
	st2, err := Start(ctx, Options{S3SlowDownRate: 0.3, S3SlowDownSeed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	var retried int
	client := NewS3Client(st2.S3Endpoint)
	store := archive.NewS3(client, st2.Bucket)
	for i := range 50 {
		key := "k/" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if err := store.Put(ctx, key, []byte("x")); err != nil {
			t.Fatalf("Put %s at a 30%% SlowDown rate: %v", key, err)
		}
		out, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st2.Bucket), Key: aws.String(key + "/raw"), Body: strings.NewReader("x")},
			func(o *s3.Options) { o.RetryMaxAttempts = 1 })
		if err != nil {
			if !strings.Contains(err.Error(), "SlowDown") {
				t.Fatalf("unexpected error: %v", err)
			}
			retried++
		} else if out == nil {
			t.Fatal("nil output")
		}
	}
	if retried == 0 || retried == 50 {
		t.Errorf("%d of 50 single-attempt PUTs slowed down at a 30%% rate", retried)
	}
}
