package reliability

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

// Names used by every test: the watched scope is bar.foo; bar.other is written too but is not
// watched, so none of its changes may reach Kafka or DR.
const (
	watchDB    = "bar"
	watchColl  = "foo"
	otherColl  = "other"
	topic      = "changevents"
	bucket     = "docdbdr-archive"
	prefix     = "docdbdr/"
	stateDB    = "docdbdr"
	stateColl  = "checkpoints"
	partitions = 3
)

// stack is the embedded local stack of one test. It is assembled here from the same parts as
// internal/devstack (which does not hand out its servers) so that the tests can reach the fault
// hooks: the Mongo servers' DropConnections and SetUnavailable, a proxy in front of Kafka, and
// an S3 endpoint that can be cut off.
type stack struct {
	primarySrv, drSrv *mongoserver.Server
	primary, dr       *mongo.Client
	primaryURI, drURI string // what the functions connect to (PRIMARY_URI, DR_URI)
	s3URL             string // S3_ENDPOINT

	kafka   *kfake.Cluster
	kproxy  *faultProxy // every Kafka connection goes through it
	brokers []string    // the proxy's address, as kfake advertises it

	s3ep    *s3Endpoint // the archive bucket's endpoint
	s3c     *s3.Client
	archive *archive.S3
}

func startStack(t testing.TB, ctx context.Context) *stack {
	t.Helper()
	st := &stack{}

	// The primary behaves as DocumentDB 4.0 (change streams refused until enabled); DR is a
	// plain replica set.
	st.primarySrv = startMongo(t, mongoserver.Options{DocumentDB: true})
	st.drSrv = startMongo(t, mongoserver.Options{})
	st.primaryURI, st.drURI = st.primarySrv.URI(), st.drSrv.URI()
	st.primary = connect(t, ctx, st.primaryURI)
	st.dr = connect(t, ctx, st.drURI)

	// kfake serves on a hidden port and advertises the proxy's, so that every client's
	// connections (after the bootstrap one too) pass through the proxy.
	var proxy *faultProxy
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, topic),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			proxy = startProxy(t, ln.Addr().String())
			return proxiedListener{Listener: ln, advertised: proxy.ln.Addr()}, nil
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	st.kafka, st.kproxy = cluster, proxy
	st.brokers = cluster.ListenAddrs()
	t.Cleanup(func() { proxy.Close(); cluster.Close() })

	st.s3ep = startS3(t)
	st.s3URL = st.s3ep.URL
	st.s3c = devstack.NewS3Client(st.s3URL)
	if _, err := st.s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	st.archive = archive.NewS3(st.s3c, bucket)

	enableStreams(t, ctx, st.primary)
	return st
}

// enableStreams runs DocumentDB's modifyChangeStreams on the watched collection (the operator's
// first step) and on the unwatched one, so that its changes do reach the server-side stream
// machinery and capture has to leave them out.
func enableStreams(t testing.TB, ctx context.Context, primary *mongo.Client) {
	t.Helper()
	for _, coll := range []string{watchColl, otherColl} {
		cmd := bson.D{{Key: "modifyChangeStreams", Value: 1}, {Key: "database", Value: watchDB},
			{Key: "collection", Value: coll}, {Key: "enable", Value: true}}
		if err := primary.Database("admin").RunCommand(ctx, cmd).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func startMongo(t testing.TB, opts mongoserver.Options) *mongoserver.Server {
	t.Helper()
	srv := mongoserver.New(opts)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// connect builds a client the way both functions do (pkg/docdb), with TLS off: the servers are
// on loopback, which is the only place pkg/docdb allows plain TCP without ALLOW_INSECURE.
func connect(t testing.TB, ctx context.Context, uri string) *mongo.Client {
	t.Helper()
	c, err := docdb.Connect(ctx, docdb.Settings{URI: uri, TLS: docdb.TLSDisabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// s3Endpoint is gofakes3 on loopback behind a switch: while down, every request's connection is
// closed without an answer, as when the endpoint is unreachable.
type s3Endpoint struct {
	URL      string
	down     atomic.Bool
	refused  atomic.Int64 // requests cut while down
	requests atomic.Int64
}

func startS3(t testing.TB) *s3Endpoint {
	t.Helper()
	e := &s3Endpoint{}
	fake := gofakes3.New(s3mem.New(), gofakes3.WithAutoBucket(false), gofakes3.WithLogger(gofakes3.GlobalLog(gofakes3.LogErr)))
	inner := devstack.StrictS3(fake.Server(), 0, 0) // as S3 answers apply's role: 403 for a missing key
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		if e.down.Load() {
			e.refused.Add(1)
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					_ = c.Close()
					return
				}
			}
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.URL = "http://" + ln.Addr().String()
	return e
}

// syncBuffer collects log and metric lines from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jsonLogger writes JSON lines to w at debug level, so that the security scan sees everything.
func jsonLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
