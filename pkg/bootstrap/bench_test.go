package bootstrap

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// TestThroughputRatio compares bootstrap with a raw bulk copy of the same data (one cursor,
// InsertMany of 1000 raw documents, no state, no ranges) on the embedded server. It only runs
// when DOCDBDR_BENCH_DOCS is set (the document count); DOCDBDR_BENCH_VARIANTS lists the
// bootstrap shapes to time as <workers>x<ranges> (default 1x1,1x4,2x8,4x16):
//
//	DOCDBDR_BENCH_DOCS=100000 go test -run ThroughputRatio -v ./pkg/bootstrap/
//
// The embedded server answers an _id range query by scanning the collection from its start (or
// the cursor's position) to its end, so on it every extra range costs a full scan; a real
// cluster seeks the _id index. Compare 1x1 with the raw copy for the cost of bootstrap itself.
func TestThroughputRatio(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("DOCDBDR_BENCH_DOCS"))
	if n <= 0 {
		t.Skip("set DOCDBDR_BENCH_DOCS to run")
	}
	ctx := context.Background()
	primary := newCluster(t)
	src := primary.Database("bar").Collection("foo")
	seed(t, src, n, func(i int) any { return int64(i) })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	raw := func() time.Duration {
		dr, stop := startCluster(t)
		defer stop()
		dst := dr.Database("bar").Collection("foo")
		began := time.Now()
		cur, err := src.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		defer cur.Close(ctx)
		batch := make([]any, 0, 1000)
		flush := func() {
			if len(batch) == 0 {
				return
			}
			if _, err := dst.InsertMany(ctx, batch, options.InsertMany().SetOrdered(false)); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
		for cur.Next(ctx) {
			batch = append(batch, bson.Raw(append([]byte(nil), cur.Current...)))
			if len(batch) == cap(batch) {
				flush()
			}
		}
		flush()
		d := time.Since(began)
		checkCount(t, dst, n)
		return d
	}
	boot := func(workers, ranges int) time.Duration {
		dr, stop := startCluster(t)
		defer stop()
		began := time.Now()
		res, err := Run(ctx, Options{Primary: primary, DR: dr, Scope: scope.Scope{DB: "bar", Collections: []string{"foo"}},
			Workers: workers, Ranges: ranges, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(began)
		checkCount(t, dr.Database("bar").Collection("foo"), n)
		if res.Docs != int64(n) {
			t.Fatalf("bootstrap copied %d of %d", res.Docs, n)
		}
		return d
	}

	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	// The machine may be shared: each shape runs in several interleaved rounds and the best time
	// counts.
	rounds, _ := strconv.Atoi(cmp.Or(os.Getenv("DOCDBDR_BENCH_ROUNDS"), "3"))
	variants := strings.Split(cmp.Or(os.Getenv("DOCDBDR_BENCH_VARIANTS"), "1x1,1x4,2x8,4x16"), ",") // workers x ranges
	best := map[string]time.Duration{}
	keep := func(label string, d time.Duration) {
		if b, ok := best[label]; !ok || d < b {
			best[label] = d
		}
	}
	for range max(rounds, 1) {
		keep("raw", raw())
		for _, v := range variants {
			var workers, ranges int
			if _, err := fmt.Sscanf(v, "%dx%d", &workers, &ranges); err != nil {
				t.Fatalf("DOCDBDR_BENCH_VARIANTS: %q is not <workers>x<ranges>", v)
			}
			keep(v, boot(workers, ranges))
		}
	}
	r := best["raw"]
	t.Logf("%d docs (~265 B each), best of %d rounds; raw bulk copy: %v, %.0f docs/s", n, rounds, r.Round(time.Millisecond), rate(r))
	for _, v := range variants {
		b := best[v]
		t.Logf("bootstrap %s (workers x ranges): %v, %.0f docs/s, ratio to raw %.2f", v, b.Round(time.Millisecond), rate(b), rate(b)/rate(r))
	}
}

// startCluster is newCluster with an explicit stop, so that each timed copy starts without the
// memory of the previous one.
func startCluster(t *testing.T) (*mongo.Client, func()) {
	srv := mongoserver.New(mongoserver.Options{})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	return c, func() {
		_ = c.Disconnect(context.Background())
		_ = srv.Close()
		runtime.GC()
	}
}

func checkCount(t *testing.T, c *mongo.Collection, n int) {
	t.Helper()
	got, err := c.EstimatedDocumentCount(context.Background())
	if err != nil || got != int64(n) {
		t.Fatalf("DR has %d documents (%v), want %d", got, err, n)
	}
}
