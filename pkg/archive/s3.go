package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// ErrNotFound is returned (wrapped) by Get when the object does not exist.
var ErrNotFound = errors.New("object not found")

// ErrAccessDenied is returned (wrapped) by Get when S3 answers 403 AccessDenied. To a caller
// without s3:ListBucket on the bucket (apply's role) that is also how S3 answers a GET of a key
// that does not exist, so the two cannot be told apart.
var ErrAccessDenied = errors.New("access denied (S3 answers so for a missing key to a role without s3:ListBucket)")

// S3API is the part of the S3 client the store uses.
type S3API interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// S3 stores archive objects in one bucket. Keys are full object keys (see Layout). It is safe
// for concurrent use (the SDK client is).
type S3 struct {
	client S3API
	bucket string
	// retry is how often a conditional write that S3 answers 409 (a concurrent conditional
	// write of the same key) or 503 (SlowDown) is attempted again, after the SDK's own retries,
	// and backoff the first pause (doubled each time).
	retry   int
	backoff time.Duration
}

// NewS3 returns a store over bucket.
func NewS3(client S3API, bucket string) *S3 {
	return &S3{client: client, bucket: bucket, retry: 6, backoff: 100 * time.Millisecond}
}

// Bucket returns the bucket the store writes to.
func (s *S3) Bucket() string { return s.bucket }

// Put creates the object at key with body unless an object is already there: the write is
// conditional (If-None-Match: *), so an object is never overwritten. It returns nil when it
// wrote the object and when S3 answered 412 Precondition Failed (one is there already): every key
// of this layout names write-once content (an archive object recorded in apply's ledger, a dead
// letter of one Kafka record, a claim check named by its SHA-256), so an existing object is the
// one this write would have made. 409 ConditionalRequestConflict (another conditional write of
// the key in flight) and 503 SlowDown are retried with exponential backoff; Put needs only
// s3:PutObject, never a GET, HEAD or list.
func (s *S3) Put(ctx context.Context, key string, body []byte) error {
	pause := s.backoff
	for attempt := 0; ; attempt++ {
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:        aws.String(s.bucket),
			Key:           aws.String(key),
			Body:          bytes.NewReader(body),
			ContentLength: aws.Int64(int64(len(body))),
			ContentType:   aws.String(contentType(key)),
			IfNoneMatch:   aws.String("*"),
		})
		switch status := httpStatus(err); {
		case err == nil, status == http.StatusPreconditionFailed:
			return nil
		case (status == http.StatusConflict || status == http.StatusServiceUnavailable) && attempt < s.retry:
			select {
			case <-ctx.Done():
				return fmt.Errorf("put s3://%s/%s: %w (after %v)", s.bucket, key, ctx.Err(), err)
			case <-time.After(pause):
			}
			pause *= 2
		default:
			return fmt.Errorf("put s3://%s/%s: %w", s.bucket, key, err)
		}
	}
}

// httpStatus is the HTTP status of an S3 error response, or 0.
func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "PreconditionFailed":
			return http.StatusPreconditionFailed
		case "ConditionalRequestConflict":
			return http.StatusConflict
		case "SlowDown":
			return http.StatusServiceUnavailable
		case "AccessDenied":
			return http.StatusForbidden
		}
	}
	return 0
}

// Get reads the object at key. A missing object gives an error wrapping ErrNotFound.
func (s *S3) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, ErrNotFound)
		}
		if httpStatus(err) == http.StatusForbidden {
			return nil, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, ErrAccessDenied)
		}
		return nil, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s: %w", s.bucket, key, err)
	}
	return body, nil
}

// List returns the keys under prefix, in key order.
func (s *S3) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", s.bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	var nf *types.NotFound
	if errors.As(err, &nf) {
		return true
	}
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode() == "NoSuchKey" || apiErr.ErrorCode() == "NotFound")
}

func contentType(key string) string {
	switch {
	case strings.HasSuffix(key, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(key, ".json"):
		return "application/json"
	default:
		return "application/octet-stream"
	}
}

// NewS3Client returns an S3 client from the AWS configuration. A non-empty endpoint (S3_ENDPOINT:
// the local stack, MinIO) replaces AWS's, with path-style addressing. Every component that talks
// to the archive bucket builds its client here.
func NewS3Client(awsCfg aws.Config, endpoint string) *s3.Client {
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
		}
	})
}
