// Command capture is the capture Lambda function, run by an EventBridge schedule (or invoked by
// hand with overrides such as {"maxEvents": 10}). It only wires things together: configuration
// from the environment (a bad configuration fails the cold start with every problem listed), the
// primary's client, the S3 claim-check store and the Kafka publisher built once per container,
// and pkg/capture's Capturer for every invocation.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	f, err := setup(context.Background(), os.Getenv, os.Stdout)
	if err != nil {
		log.Error("capture cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
	lambda.Start(f.handle)
}

// function is what one Lambda container keeps between invocations.
type function struct {
	cfg     config.Capture
	log     *slog.Logger
	out     io.Writer // EMF metric lines (stdout in Lambda)
	secrets *docdb.SecretsManager
	deps    capture.Deps
	opts    capture.Options

	mu  sync.Mutex
	pub *kafka.Publisher // connected on first use; rebuilt after a delivery failure
}

// setup reads the configuration and builds the clients, once per container. Kafka is connected
// on the first invocation instead, so that a broker outage is reported by an invocation (with its
// summary and metrics) and healed by the next one, rather than failing every cold start.
func setup(ctx context.Context, getenv func(string) string, out io.Writer) (*function, error) {
	cfg, err := config.LoadCapture(getenv)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: cfg.LogLevel}))

	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	secrets := &docdb.SecretsManager{API: secretsmanager.NewFromConfig(awsCfg)}
	cfg.Kafka.Region = awsCfg.Region
	cfg.Kafka.Credentials = awsCfg.Credentials

	client, err := docdb.Connect(ctx, cfg.Primary, secrets)
	if err != nil {
		return nil, fmt.Errorf("connect to the primary: %w", err)
	}
	s3Client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Archive.S3Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Archive.S3Endpoint)
			o.UsePathStyle = true
		}
	})
	scope := capture.Scope{DB: cfg.WatchDB, Collections: cfg.WatchCollections}
	log.Info("capture configured", slog.String("primary", cfg.Primary.String()), slog.String("scope", scope.ID()),
		slog.String("kafka", cfg.Kafka.String()), slog.String("bucket", cfg.Archive.Bucket),
		slog.String("state", cfg.StateDB+"."+cfg.StateCollection))

	f := &function{cfg: cfg, log: log, out: out, secrets: secrets}
	f.opts = capture.OptionsFromConfig(cfg)
	f.deps = capture.Deps{
		Streams:     capture.MongoStreams{Client: client, MaxAwait: cfg.MaxAwait},
		Checkpoints: checkpoint.New(client.Database(cfg.StateDB).Collection(cfg.StateCollection), nil),
		Blobs:       archive.NewS3(s3Client, cfg.Archive.Bucket),
		Logger:      log,
		Metrics:     out,
	}
	return f, nil
}

// handle runs one invocation. The payload is an EventBridge scheduled event or a manual invoke's
// overrides.
func (f *function) handle(ctx context.Context, payload json.RawMessage) (capture.Summary, error) {
	overrides, err := capture.ParseInvocation(payload)
	if err != nil {
		return capture.Summary{StopReason: capture.StopError, Error: err.Error()}, err
	}
	pub, err := f.publisher(ctx)
	if err != nil {
		f.log.Error("capture summary", slog.String("error", err.Error()))
		return capture.Summary{Scope: f.opts.Scope.ID(), StopReason: capture.StopError, Error: err.Error()}, err
	}
	deps := f.deps
	deps.Publisher = capture.KafkaPublisher{P: pub}
	inv := capture.Invocation{Owner: owner(ctx), Overrides: overrides}
	if d, ok := ctx.Deadline(); ok {
		inv.Deadline = d
	}
	sum, err := capture.New(f.opts, deps).Run(ctx, inv)
	if errors.Is(err, kafka.ErrNotAcknowledged) {
		f.dropPublisher(pub)
	}
	return sum, err
}

// publisher returns the container's publisher, connecting it if needed.
func (f *function) publisher(ctx context.Context) (*kafka.Publisher, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pub != nil {
		return f.pub, nil
	}
	s, err := kafka.ResolveCredentials(ctx, f.cfg.Kafka, f.secrets)
	if err != nil {
		return nil, err
	}
	pub, err := kafka.NewPublisher(ctx, s)
	if err != nil {
		return nil, err
	}
	f.pub = pub
	return pub, nil
}

// dropPublisher discards a publisher whose producer failed to deliver: after exhausting its
// retries an idempotent producer's sequence state is suspect, and a fresh one is cheap.
func (f *function) dropPublisher(pub *kafka.Publisher) {
	f.mu.Lock()
	if f.pub == pub {
		f.pub = nil
	}
	f.mu.Unlock()
	go func() { _ = pub.Close(10 * time.Second) }()
}

// owner names this invocation as a lease holder: the Lambda request id, which a retry of the
// same event keeps (so a retry may take back its own lease at once), else host and process.
func owner(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
}
