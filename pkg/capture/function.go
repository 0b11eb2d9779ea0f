package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// Env is what NewFunction builds a capture function from. Getenv and AWS are required; the rest
// have defaults.
type Env struct {
	// Getenv reads the function's environment variables (os.Getenv in Lambda; see
	// docs/configuration.md).
	Getenv func(string) string
	// AWS is the AWS SDK configuration: Secrets Manager, S3 claim checks and MSK IAM use it.
	AWS aws.Config
	// Logger receives the function's logs; nil means JSON lines on os.Stdout at LOG_LEVEL.
	// Metrics receives the EMF lines; nil means os.Stdout. Lambda sends stdout to CloudWatch
	// Logs, which turns EMF lines into metrics.
	Logger  *slog.Logger
	Metrics io.Writer
	// Wrap, when set, decorates the collaborators the function built (tests inject faults here).
	// It is called once, in NewFunction.
	Wrap func(Deps) Deps
}

// Function is the capture Lambda function: what one container keeps between invocations. The
// Lambda main, the local runner, the CLI and the tests all build it with NewFunction. Handle
// serves one invocation at a time, as Lambda does; Close may be called once, at shutdown.
type Function struct {
	cfg      config.Capture
	log      *slog.Logger
	opts     Options
	capturer *Capturer
	primary  *docdb.Lazy
	pub      *publisherSlot
}

// NewFunction reads the configuration (a bad one fails with every problem listed, each naming
// its variable) and prepares the clients. Nothing connects yet: the primary and the brokers are
// reached by the first invocation, so an outage of either is reported by an invocation, with its
// summary and metrics, and healed by a later one.
func NewFunction(ctx context.Context, env Env) (*Function, error) {
	if env.Getenv == nil {
		return nil, fmt.Errorf("capture: Env.Getenv is required")
	}
	cfg, err := config.LoadCapture(env.Getenv)
	if err != nil {
		return nil, err
	}
	log, emf := env.Logger, env.Metrics
	if log == nil {
		log = slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	if emf == nil {
		emf = os.Stdout
	}
	secrets := &docdb.SecretsManager{API: secretsmanager.NewFromConfig(env.AWS)}

	ks := KafkaSettings(cfg.Kafka)
	ks.Region, ks.Credentials = env.AWS.Region, env.AWS.Credentials
	f := &Function{
		cfg:     cfg,
		log:     log,
		opts:    OptionsFromConfig(cfg),
		primary: docdb.NewLazy(cfg.Primary, secrets),
		pub:     &publisherSlot{settings: ks, secrets: secrets, log: log},
	}
	deps := Deps{
		Streams:     lazyStreams{primary: f.primary, maxAwait: cfg.MaxAwait},
		Publisher:   f.pub,
		Checkpoints: lazyCheckpoints{primary: f.primary, db: cfg.StateDB, coll: cfg.StateCollection},
		Blobs:       archive.NewS3(archive.NewS3Client(env.AWS, cfg.Archive.S3Endpoint), cfg.Archive.Bucket),
		Logger:      log,
		Metrics:     emf,
	}
	if env.Wrap != nil {
		deps = env.Wrap(deps)
	}
	f.capturer = New(f.opts, deps)
	log.Info("capture configured", slog.String("primary", cfg.Primary.String()), slog.String("scope", f.opts.Scope.ID()),
		slog.String("kafka", cfg.Kafka.String()), slog.String("bucket", cfg.Archive.Bucket),
		slog.String("state", cfg.StateDB+"."+cfg.StateCollection))
	return f, nil
}

// Config is the configuration NewFunction read.
func (f *Function) Config() config.Capture { return f.cfg }

// Scope is what the function replicates.
func (f *Function) Scope() scope.Scope { return f.opts.Scope }

// Handle runs one invocation. The payload is an EventBridge scheduled event or a manual invoke's
// overrides (see ParseInvocation).
func (f *Function) Handle(ctx context.Context, payload json.RawMessage) (Summary, error) {
	overrides, err := ParseInvocation(payload)
	if err != nil {
		f.log.Error("capture summary", slog.String("error", err.Error()))
		return Summary{Scope: f.opts.Scope.ID(), StopReason: StopError, Error: err.Error()}, err
	}
	inv := Invocation{Owner: Owner(ctx), Overrides: overrides}
	if d, ok := ctx.Deadline(); ok {
		inv.Deadline = d
	}
	return f.capturer.Run(ctx, inv)
}

// Close releases the producer and the primary's connection (Lambda's SIGTERM at shutdown).
func (f *Function) Close() {
	f.pub.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.primary.Disconnect(ctx)
}

// Owner names an invocation as a lease holder: the Lambda request id, which a retry of the same
// event keeps (so a retry may take back its own lease at once), else host, process and time.
func Owner(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
}

// KafkaSettings maps the configured broker connection to the producer's settings. Region and
// Credentials (MSK IAM) are left for the caller, from its AWS configuration.
func KafkaSettings(k config.Kafka) kafka.Settings {
	return kafka.Settings{
		Brokers: k.Brokers, Topic: k.Topic, TLS: k.TLS, SASL: k.SASL,
		Username: k.Username, Password: k.Password, SecretARN: k.SecretARN,
		Compression: k.Compression, MaxMessageBytes: k.MaxMessageBytes,
	}
}

// OptionsFromConfig maps the capture configuration to Options.
func OptionsFromConfig(c config.Capture) Options {
	return Options{
		Scope:                 scope.Scope{DB: c.WatchDB, Collections: c.WatchCollections},
		MaxEvents:             c.MaxEvents,
		MaxBytes:              c.MaxBytes,
		CheckpointEvery:       c.CheckpointEvery,
		IdleTimeout:           c.IdleTimeout,
		ContinuousDrain:       c.ContinuousDrain,
		DeadlineMargin:        c.DeadlineMargin,
		StartAt:               c.StartAt,
		LeaseTTL:              c.LeaseTTL,
		ChangeStreamRetention: c.ChangeStreamRetention,
		MaxMessageBytes:       c.Kafka.MaxMessageBytes,
		ArchivePrefix:         c.Archive.Prefix,
	}
}

// lazyStreams opens change streams on the primary, connecting first if needed.
type lazyStreams struct {
	primary  *docdb.Lazy
	maxAwait time.Duration
}

func (l lazyStreams) Open(ctx context.Context, sc scope.Scope, start Start) (Stream, error) {
	client, err := l.primary.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the primary: %w", err)
	}
	return MongoStreams{Client: client, MaxAwait: l.maxAwait}.Open(ctx, sc, start)
}

// lazyCheckpoints is the state collection on the primary, connecting first if needed.
type lazyCheckpoints struct {
	primary  *docdb.Lazy
	db, coll string
}

func (l lazyCheckpoints) store(ctx context.Context) (*checkpoint.Store, error) {
	client, err := l.primary.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the primary: %w", err)
	}
	return checkpoint.New(client.Database(l.db).Collection(l.coll), nil), nil
}

func (l lazyCheckpoints) Load(ctx context.Context, scope string) (checkpoint.State, error) {
	s, err := l.store(ctx)
	if err != nil {
		return checkpoint.State{}, err
	}
	return s.Load(ctx, scope)
}

func (l lazyCheckpoints) Acquire(ctx context.Context, scope, owner string, ttl time.Duration) (checkpoint.Lease, error) {
	s, err := l.store(ctx)
	if err != nil {
		return checkpoint.Lease{}, err
	}
	return s.Acquire(ctx, scope, owner, ttl)
}

func (l lazyCheckpoints) Renew(ctx context.Context, lease checkpoint.Lease) (checkpoint.Lease, error) {
	s, err := l.store(ctx)
	if err != nil {
		return lease, err
	}
	return s.Renew(ctx, lease)
}

func (l lazyCheckpoints) Save(ctx context.Context, lease checkpoint.Lease, pos checkpoint.Position) error {
	s, err := l.store(ctx)
	if err != nil {
		return err
	}
	return s.Save(ctx, lease, pos)
}

func (l lazyCheckpoints) Release(ctx context.Context, lease checkpoint.Lease) error {
	s, err := l.store(ctx)
	if err != nil {
		return err
	}
	return s.Release(ctx, lease)
}

// publisherSlot is the container's Kafka publisher: connected by the first invocation that
// needs it, and aborted and discarded when a batch ends without every message acknowledged (a
// failed or timed-out flush, a lost lease): that producer may still hold, and retry, the batch's
// messages, which must never reach Kafka after the run; an idempotent producer's sequence state
// is suspect after exhausted retries; and a fresh one is cheap. The next invocation connects a
// new one. Begin and the batches' End are called by one invocation at a time.
type publisherSlot struct {
	settings kafka.Settings
	secrets  kafka.SecretGetter
	log      *slog.Logger

	mu  sync.Mutex
	pub *kafka.Publisher
}

// Begin starts a batch on the current publisher, connecting one first if needed.
func (s *publisherSlot) Begin(ctx context.Context, window int) (Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub == nil {
		ks, err := kafka.ResolveCredentials(ctx, s.settings, s.secrets)
		if err != nil {
			return nil, err
		}
		if s.pub, err = kafka.NewPublisher(ctx, ks); err != nil {
			return nil, err
		}
	}
	pub := s.pub
	return abortingBatch{Batch: pub.Begin(window), pub: pub, aborted: func(why, err error) { s.discard(pub, why, err) }}, nil
}

// discard forgets pub, which its batch's End has just aborted.
func (s *publisherSlot) discard(pub *kafka.Publisher, why, abortErr error) {
	s.mu.Lock()
	if s.pub == pub {
		s.pub = nil
	}
	s.mu.Unlock()
	attrs := []any{slog.String("reason", why.Error())}
	if abortErr != nil {
		// The abort could not wait for every request already sent: a broker may still append
		// those after the run (docs/capture.md, Kafka).
		s.log.Warn("aborted the kafka producer before every request sent was answered", append(attrs, slog.String("error", abortErr.Error()))...)
		return
	}
	s.log.Warn("aborted and discarded the kafka producer", attrs...)
}

func (s *publisherSlot) close() {
	s.mu.Lock()
	pub := s.pub
	s.pub = nil
	s.mu.Unlock()
	if pub != nil {
		_ = pub.Close(10 * time.Second)
	}
}
