// Package devstack assembles the local stand-in for docdb-dr's AWS
// environment, in one process and on loopback only:
//
//   - two Mongo-wire servers (internal/devstack/mongoserver): the primary, which
//     behaves as Amazon DocumentDB by default, and the DR cluster;
//   - a Kafka cluster (franz-go's kfake) with the change-event topic, in
//     place of Amazon MSK;
//   - an S3 endpoint with the archive bucket: gofakes3 in process by
//     default, or a versitygw subprocess.
//
// Start brings everything up; Env gives the environment variables the capture
// and apply functions and the CLI read (docs/configuration.md); Close stops it.
// See docs/devstack.md.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/docdb-dr/docdb-dr/internal/devstack/certs"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// S3 servers Start can run.
const (
	S3GoFakeS3  = "gofakes3"  // in process (default)
	S3VersityGW = "versitygw" // subprocess: the versitygw binary, posix backend
)

// Local AWS credentials and region. They are dummies: the local S3 servers
// accept them, and the AWS SDK refuses to sign without some.
const (
	Region          = "us-east-1"
	AccessKeyID     = "devstack"
	SecretAccessKey = "devstack-secret"
)

// Options configures Start. The zero value is a usable in-memory stack.
type Options struct {
	// DataDir keeps Kafka's log, the S3 bucket and both Mongo servers
	// (data, indexes, oplog: resume tokens stay valid) on disk across
	// restarts ("" keeps everything in memory). The Mongo servers save
	// when the stack closes, so a killed process loses their changes since
	// the last start.
	DataDir string

	// Partitions of the topic when it is created (default 3). A topic
	// reloaded from DataDir keeps the partitions it has.
	Partitions int
	// Topic is the change-event topic (default "changevents").
	Topic string

	// WireVersion is the primary's and DR's maxWireVersion (default 7:
	// DocumentDB 4.0).
	WireVersion int
	// PrimaryIsMongoDB makes the primary behave as MongoDB instead of
	// DocumentDB (change streams on without modifyChangeStreams, history
	// lost as code 286 rather than 136).
	PrimaryIsMongoDB bool
	// OplogMaxEntries caps the primary's change history (0: server default).
	OplogMaxEntries int
	// DROplogMaxEntries caps the DR server's change history (0: server default). The benchmark,
	// which never reads it, caps it small: the history of its N upserts per run would otherwise
	// grow the heap of the process being measured (a real DR keeps its oplog on its own disk).
	DROplogMaxEntries int

	// TLS makes both Mongo servers require TLS with a throwaway CA, written
	// to a file that Env names in PRIMARY_TLS_CA_FILE and DR_TLS_CA_FILE.
	TLS bool
	// Username and Password, when both set, make both Mongo servers require
	// SCRAM authentication; the URIs carry them.
	Username, Password string

	// S3 is S3GoFakeS3 (default) or S3VersityGW.
	S3 string
	// LenientS3 turns off the embedded S3's strict mode (s3strict.go), which answers as S3
	// answers docdb-dr's roles: 403 AccessDenied, not 404, to a GET or HEAD of a missing key (the
	// apply role has no s3:ListBucket), and 503 SlowDown to a share S3SlowDownRate (0..1) of
	// object requests, chosen by a generator seeded with S3SlowDownSeed. Strict mode is on by
	// default; it applies to the gofakes3 server (versitygw is a real S3 implementation).
	LenientS3      bool
	S3SlowDownRate float64
	S3SlowDownSeed uint64
	// VersityGWBinary is the versitygw executable (default: "versitygw"
	// from PATH).
	VersityGWBinary string
	// Bucket is the archive bucket (default "docdbdr-archive"), Prefix its
	// key prefix (default "docdbdr/").
	Bucket, Prefix string

	// Logger receives the components' diagnostics (default: discarded).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Partitions <= 0 {
		o.Partitions = 3
	}
	if o.Topic == "" {
		o.Topic = "changevents"
	}
	if o.WireVersion == 0 {
		o.WireVersion = 7
	}
	if o.S3 == "" {
		o.S3 = S3GoFakeS3
	}
	if o.VersityGWBinary == "" {
		o.VersityGWBinary = "versitygw"
	}
	if o.Bucket == "" {
		o.Bucket = "docdbdr-archive"
	}
	if o.Prefix == "" {
		o.Prefix = "docdbdr/"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	return o
}

// Stack is a running local stack. Its fields are the endpoints.
type Stack struct {
	PrimaryURI string // mongodb:// URI of the primary
	DRURI      string // mongodb:// URI of the DR cluster
	CAFile     string // CA of the Mongo servers' certificates ("" without TLS)

	KafkaBrokers []string // bootstrap brokers, host:port
	Topic        string

	S3Endpoint string // http://127.0.0.1:port, path-style
	Bucket     string
	Prefix     string

	closers []func() error      // in start order; Close runs them in reverse
	primary *mongoserver.Server // nil once StopPrimary stopped it
}

// Start starts the stack and returns when every endpoint accepts
// connections. On error, whatever had started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	opts = opts.withDefaults()
	st := &Stack{Topic: opts.Topic, Bucket: opts.Bucket, Prefix: opts.Prefix}
	defer func() {
		if err != nil {
			err = errors.Join(err, st.Close())
		}
	}()
	if (opts.Username == "") != (opts.Password == "") {
		return nil, errors.New("devstack: set both Username and Password, or neither")
	}
	if opts.DataDir != "" {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("devstack: data dir: %w", err)
		}
	}

	var bundle *certs.Bundle
	if opts.TLS {
		if bundle, err = st.writeCA(opts.DataDir); err != nil {
			return nil, err
		}
	}
	if err := st.startMongo(opts, bundle); err != nil {
		return nil, err
	}
	if err := st.startKafka(opts); err != nil {
		return nil, err
	}
	if err := st.startS3(ctx, opts); err != nil {
		return nil, err
	}
	opts.Logger.Info("devstack started",
		"kafka", strings.Join(st.KafkaBrokers, ","), "topic", st.Topic,
		"s3", st.S3Endpoint, "s3_server", opts.S3, "bucket", st.Bucket,
		"tls", opts.TLS, "auth", opts.Username != "", "data_dir", opts.DataDir)
	return st, nil
}

// writeCA creates the throwaway CA and writes it where clients can read it:
// into the data directory, or a temporary one removed by Close.
func (st *Stack) writeCA(dataDir string) (*certs.Bundle, error) {
	bundle, err := certs.New("127.0.0.1", "localhost")
	if err != nil {
		return nil, fmt.Errorf("devstack: certificates: %w", err)
	}
	dir := dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "docdbdr-devstack-ca-"); err != nil {
			return nil, fmt.Errorf("devstack: CA dir: %w", err)
		}
		st.onClose(func() error { return os.RemoveAll(dir) })
	}
	st.CAFile = filepath.Join(dir, "devstack-ca.pem")
	if err := bundle.WriteCAFile(st.CAFile); err != nil {
		return nil, fmt.Errorf("devstack: write CA: %w", err)
	}
	return bundle, nil
}

// onClose registers a stop function for Close.
func (st *Stack) onClose(f func() error) { st.closers = append(st.closers, f) }

// Close stops every component, last started first, and reports every
// failure. It is safe to call more than once.
func (st *Stack) Close() error {
	var errs []error
	for i := len(st.closers) - 1; i >= 0; i-- {
		errs = append(errs, st.closers[i]())
	}
	st.closers = nil
	return errors.Join(errs...)
}

// Env is the stack as environment variables, "NAME=value", with the names
// of docs/configuration.md plus the AWS SDK's region and dummy credentials.
// The URIs carry the Mongo credentials when auth is on: print them to a
// terminal or an env file, never to a log.
func (st *Stack) Env() []string {
	tls := "disabled"
	if st.CAFile != "" {
		tls = "required"
	}
	env := []string{
		"PRIMARY_URI=" + st.PrimaryURI,
		"PRIMARY_TLS=" + tls,
		"DR_URI=" + st.DRURI,
		"DR_TLS=" + tls,
	}
	if st.CAFile != "" {
		env = append(env, "PRIMARY_TLS_CA_FILE="+st.CAFile, "DR_TLS_CA_FILE="+st.CAFile)
	}
	return append(env,
		"KAFKA_BROKERS="+strings.Join(st.KafkaBrokers, ","),
		"KAFKA_TOPIC="+st.Topic,
		"KAFKA_TLS="+strconv.FormatBool(false),
		"ARCHIVE_BUCKET="+st.Bucket,
		"ARCHIVE_PREFIX="+st.Prefix,
		"S3_ENDPOINT="+st.S3Endpoint,
		"AWS_REGION="+Region,
		"AWS_ACCESS_KEY_ID="+AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+SecretAccessKey,
	)
}
