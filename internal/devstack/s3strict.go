package devstack

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
)

// strictS3 makes the embedded S3 answer as the real one answers the roles docdb-dr runs under,
// where the difference changes what the code does:
//
//   - A GET or HEAD of a key that does not exist answers 403 AccessDenied, not 404 NoSuchKey:
//     S3 gives 404 only to a caller allowed s3:ListBucket on the bucket, and apply's role is not
//     (template.yaml; deploy/apply_s3_test.go checks it). Listing itself is served, for the
//     operator's tools and the tests, which run with list permission on AWS too.
//   - A share of object requests (SlowDownRate, 0..1) answers 503 SlowDown, as S3 does when a
//     prefix is being scaled; the SDK retries them, and a request that still fails fails its batch.
//
// It is on unless Options.LenientS3 is set; the gofakes3 server alone is kinder than S3.
type strictS3 struct {
	next         http.Handler
	slowDownRate float64

	mu  sync.Mutex
	rng *rand.Rand
}

// StrictS3 wraps an S3 server's handler in the strict mode: see strictS3. The reliability suite
// puts it in front of its own gofakes3.
func StrictS3(next http.Handler, slowDownRate float64, seed uint64) http.Handler {
	return newStrictS3(next, slowDownRate, seed)
}

func newStrictS3(next http.Handler, slowDownRate float64, seed uint64) *strictS3 {
	return &strictS3{next: next, slowDownRate: slowDownRate, rng: rand.New(rand.NewPCG(seed, 0x53))}
}

func (s *strictS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	object := isObjectRequest(r)
	if object && s.slowDown() {
		writeS3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return
	}
	if object && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.next.ServeHTTP(&denyMissing{ResponseWriter: w, head: r.Method == http.MethodHead}, r)
		return
	}
	s.next.ServeHTTP(w, r)
}

func (s *strictS3) slowDown() bool {
	if s.slowDownRate <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < s.slowDownRate
}

// isObjectRequest reports whether r addresses an object (path-style /bucket/key), not a bucket.
func isObjectRequest(r *http.Request) bool {
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, ok := strings.Cut(path, "/")
	return ok && bucket != "" && key != ""
}

// denyMissing turns the 404 of a missing object into the 403 a caller without s3:ListBucket
// gets; any other answer passes unchanged.
type denyMissing struct {
	http.ResponseWriter
	head   bool
	denied bool
}

func (d *denyMissing) WriteHeader(code int) {
	if code == http.StatusNotFound {
		d.denied = true
		if d.head {
			d.ResponseWriter.WriteHeader(http.StatusForbidden) // HEAD answers carry no body
			return
		}
		writeS3Error(d.ResponseWriter, http.StatusForbidden, "AccessDenied", "Access Denied")
		return
	}
	d.ResponseWriter.WriteHeader(code)
}

func (d *denyMissing) Write(b []byte) (int, error) {
	if d.denied {
		return len(b), nil // the 404's own body is replaced
	}
	return d.ResponseWriter.Write(b)
}

// writeS3Error writes an S3 error document.
func writeS3Error(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<Error><Code>` + code + `</Code><Message>` + message + `</Message><RequestId>devstack</RequestId></Error>`))
}
