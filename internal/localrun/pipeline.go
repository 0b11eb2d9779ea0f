// Package localrun runs docdb-dr's two functions on one machine, the way AWS runs them:
//
//   - capture is invoked on a schedule (EventBridge in AWS), one invocation at a time (the
//     function has reserved concurrency 1), each invocation with a fresh request id and a
//     deadline like a Lambda timeout;
//   - apply is invoked by internal/esm, the local stand-in for the MSK event source mapping,
//     with batches of Kafka records, and retried with the same batch until it succeeds.
//
// Both functions are built by the same constructors as functions/capture and functions/apply
// (capture.NewFunction, apply.NewFunction), from the same environment variables (pkg/config),
// through a getenv that layers the caller's overrides over the local stack's Env() (see Getenv).
// When the variables point at real clusters, brokers and buckets, the same runner runs against
// them.
//
// Typical use (the demo, the end-to-end suite and the benchmark do this):
//
//	p, err := localrun.New(ctx, localrun.Options{Getenv: localrun.Getenv(overrides, stack.Env(), nil)})
//	defer p.Close()
//	p.Start(ctx)        // the capture schedule and the event source mapping
//	... write to the primary ...
//	err = p.Sync(ctx)   // everything written so far is in DR (or in the archive)
//
// Tests inject faults through Hooks, which may wrap capture's collaborators (for instance a
// Checkpoints whose Save fails: a crash after Kafka acknowledged but before the checkpoint moved),
// apply's DR writer or its archive. faults.go has ready-made failing decorators.
package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/esm"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// Defaults of Options.
const (
	DefaultCaptureInterval = 500 * time.Millisecond
	DefaultCaptureTimeout  = 60 * time.Second // the template's CaptureTimeout
	DefaultApplyTimeout    = 5 * time.Minute  // the template's ApplyTimeout
	DefaultGroupID         = "docdbdr-apply-local"
)

// Options configure a Pipeline. Only Getenv is required.
type Options struct {
	// Getenv reads the functions' environment variables (see Getenv and docs/configuration.md).
	Getenv func(string) string

	// CaptureInterval is the capture schedule: an invocation starts every interval, or as soon
	// as the previous one ends when it ran longer (a throttled scheduled invocation waits its
	// turn). Default 500ms.
	CaptureInterval time.Duration
	// CaptureTimeout is one invocation's Lambda timeout: its deadline is start + timeout.
	// Default 60s.
	CaptureTimeout time.Duration
	// ManualCapture turns the schedule off: capture runs only through CaptureOnce and Sync.
	ManualCapture bool

	// The event source mapping (internal/esm defaults when zero).
	BatchSize       int
	BatchingWindow  time.Duration
	GroupID         string        // consumer group; default DefaultGroupID
	ApplyTimeout    time.Duration // one apply invocation's timeout; default 5m
	RetryBackoff    time.Duration // first wait before a failed batch is retried
	MaxRetryBackoff time.Duration

	// Logger receives both functions' logs; default JSON on stderr at LOG_LEVEL.
	Logger *slog.Logger
	// Metrics receives both functions' EMF lines; default discarded.
	Metrics io.Writer

	Hooks Hooks
	// OnCapture and OnApply, when set, are called after every invocation (from the goroutine
	// that ran it). They must not block for long.
	OnCapture func(CaptureResult)
	OnApply   func(ApplyResult)
}

// Hooks let tests wrap the functions' collaborators, typically with the failing decorators of
// faults.go. Each is called once, in New.
type Hooks struct {
	CaptureDeps func(capture.Deps) capture.Deps
	DR          func(apply.DR) apply.DR
	Archive     func(apply.Archive) apply.Archive
}

// CaptureResult is one capture invocation.
type CaptureResult struct {
	Owner   string
	Started time.Time
	Ended   time.Time
	Summary capture.Summary
	Err     error
}

// ApplyResult is one apply invocation (one delivery of a batch; a retried batch is delivered
// again).
type ApplyResult struct {
	Records int
	Started time.Time
	Ended   time.Time
	Summary apply.Summary
	Err     error
}

// Pipeline is the capture and apply functions wired to their clusters, brokers and bucket.
type Pipeline struct {
	opts     Options
	log      *slog.Logger
	capCfg   config.Capture
	applyCfg config.Apply

	capture *capture.Function
	apply   *apply.Function
	esm     *esm.EventSource

	// Clients of the test workload and of the checks, separate from the functions' own.
	primary, dr *mongo.Client
	checkpoints *checkpoint.Store
	archive     *archive.S3

	ownerPrefix string
	invocations atomic.Int64
	captureMu   sync.Mutex // one capture invocation at a time

	mu       sync.Mutex
	lastOK   CaptureResult // the latest successful invocation that saved a checkpoint
	notify   chan struct{} // closed and replaced after every capture invocation
	esmErr   error
	cancel   context.CancelFunc
	running  sync.WaitGroup
	closeErr error
	closed   bool
}

// New reads the configuration, builds both functions with their constructors, and connects the
// workload's own clients to the primary and DR. Nothing runs until Start (or CaptureOnce).
// Configuration problems are reported all at once, each naming its variable.
func New(ctx context.Context, opts Options) (_ *Pipeline, err error) {
	if opts.Getenv == nil {
		return nil, errors.New("localrun: Options.Getenv is required")
	}
	opts = opts.withDefaults()
	capCfg, cerr := config.LoadCapture(opts.Getenv)
	applyCfg, aerr := config.LoadApply(opts.Getenv)
	if err := errors.Join(cerr, aerr); err != nil {
		return nil, fmt.Errorf("localrun configuration: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: capCfg.LogLevel}))
	}
	host, _ := os.Hostname()
	p := &Pipeline{
		opts: opts, log: log, capCfg: capCfg, applyCfg: applyCfg,
		ownerPrefix: fmt.Sprintf("local-%s-%d", host, os.Getpid()),
		notify:      make(chan struct{}),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()

	awsCfg, err := config.LoadAWS(ctx, opts.Getenv)
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	p.capture, err = capture.NewFunction(ctx, capture.Env{
		Getenv: opts.Getenv, AWS: awsCfg, Logger: log.With("function", "capture"), Metrics: opts.Metrics, Wrap: opts.Hooks.CaptureDeps,
	})
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	p.apply, err = apply.NewFunction(ctx, apply.Env{
		Getenv: opts.Getenv, AWS: awsCfg, Logger: log.With("function", "apply"), Metrics: opts.Metrics,
		WrapDR: opts.Hooks.DR, WrapArchive: opts.Hooks.Archive,
	})
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}

	secrets := &docdb.SecretsManager{API: secretsmanager.NewFromConfig(awsCfg)}
	if p.primary, err = docdb.Connect(ctx, capCfg.Primary, secrets); err != nil {
		return nil, fmt.Errorf("localrun: connect to the primary: %w", err)
	}
	if p.dr, err = docdb.Connect(ctx, applyCfg.DR, secrets); err != nil {
		return nil, fmt.Errorf("localrun: connect to DR: %w", err)
	}
	p.archive = archive.NewS3(archive.NewS3Client(awsCfg, applyCfg.Archive.S3Endpoint), applyCfg.Archive.Bucket)
	p.checkpoints = checkpoint.New(p.primary.Database(capCfg.StateDB).Collection(capCfg.StateCollection), nil)

	ks := capture.KafkaSettings(capCfg.Kafka)
	ks.Region, ks.Credentials = awsCfg.Region, awsCfg.Credentials
	if ks, err = kafka.ResolveCredentials(ctx, ks, secrets); err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	sc, err := kafka.SaramaConfig(ks)
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	// A short fetch wait leaves the batching window in charge of apply's latency.
	sc.Consumer.MaxWaitTime = 100 * time.Millisecond
	p.esm, err = esm.New(esm.Config{
		Brokers:         ks.Brokers,
		Topic:           applyCfg.Topic,
		GroupID:         opts.GroupID,
		BatchSize:       opts.BatchSize,
		BatchingWindow:  opts.BatchingWindow,
		RetryBackoff:    opts.RetryBackoff,
		MaxRetryBackoff: opts.MaxRetryBackoff,
		HandlerTimeout:  opts.ApplyTimeout,
		Sarama:          sc,
		Logger:          log,
	}, p.handle)
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	log.Info("local run configured", "primary", capCfg.Primary.String(), "dr", applyCfg.DR.String(),
		"kafka", ks.String(), "bucket", applyCfg.Archive.Bucket, "scope", p.Scope().String(),
		"captureInterval", opts.CaptureInterval.String(), "manualCapture", opts.ManualCapture)
	return p, nil
}

func (o Options) withDefaults() Options {
	if o.CaptureInterval <= 0 {
		o.CaptureInterval = DefaultCaptureInterval
	}
	if o.CaptureTimeout <= 0 {
		o.CaptureTimeout = DefaultCaptureTimeout
	}
	if o.ApplyTimeout <= 0 {
		o.ApplyTimeout = DefaultApplyTimeout
	}
	if o.GroupID == "" {
		o.GroupID = DefaultGroupID
	}
	if o.Metrics == nil {
		o.Metrics = io.Discard
	}
	return o
}

// Scope is what capture replicates.
func (p *Pipeline) Scope() scope.Scope { return p.capture.Scope() }

// CaptureConfig and ApplyConfig are the configurations read in New.
func (p *Pipeline) CaptureConfig() config.Capture { return p.capCfg }

// ApplyConfig is apply's configuration.
func (p *Pipeline) ApplyConfig() config.Apply { return p.applyCfg }

// Primary is the client capture reads the primary with (also fine for test workloads).
func (p *Pipeline) Primary() *mongo.Client { return p.primary }

// DR is the client of the DR cluster.
func (p *Pipeline) DR() *mongo.Client { return p.dr }

// Archive is the archive bucket, unwrapped by Hooks.
func (p *Pipeline) Archive() *archive.S3 { return p.archive }

// Checkpoints is capture's state collection, unwrapped by Hooks.
func (p *Pipeline) Checkpoints() *checkpoint.Store { return p.checkpoints }

// EventSource is the local event source mapping feeding apply.
func (p *Pipeline) EventSource() *esm.EventSource { return p.esm }

// Start runs the capture schedule (unless ManualCapture) and the event source mapping in the
// background until Stop, Close, or ctx is done. It returns at once.
func (p *Pipeline) Start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel != nil || p.closed {
		return
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.running.Go(func() {
		if err := p.esm.Run(ctx); err != nil {
			p.log.Error("event source mapping stopped", "error", err)
			p.mu.Lock()
			p.esmErr = err
			p.mu.Unlock()
		}
	})
	if !p.opts.ManualCapture {
		p.running.Go(func() { p.schedule(ctx) })
	}
}

// Stop stops what Start started and waits for it: an invocation in progress is cancelled, as a
// Lambda is when its timeout strikes. Start may be called again afterwards.
func (p *Pipeline) Stop() {
	p.mu.Lock()
	cancel := p.cancel
	p.cancel = nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.running.Wait()
}

// Close stops the pipeline and releases every connection. It is safe to call more than once.
func (p *Pipeline) Close() error {
	p.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.closeErr
	}
	p.closed = true
	var errs []error
	if p.capture != nil {
		p.capture.Close()
	}
	if p.apply != nil {
		p.apply.Close()
	}
	for _, c := range []*mongo.Client{p.primary, p.dr} {
		if c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, c.Disconnect(ctx))
			cancel()
		}
	}
	p.closeErr = errors.Join(errs...)
	return p.closeErr
}

// handle is the event source mapping's handler: one apply invocation.
func (p *Pipeline) handle(ctx context.Context, ev events.KafkaEvent) error {
	started := time.Now()
	sum, err := p.apply.Handle(ctx, ev)
	if p.opts.OnApply != nil {
		n := 0
		for _, recs := range ev.Records {
			n += len(recs)
		}
		p.opts.OnApply(ApplyResult{Records: n, Started: started, Ended: time.Now(), Summary: sum, Err: err})
	}
	return err
}

// WaitCaughtUp returns once apply has handled (and the event source mapping committed) every
// record in the topic at the time of the call.
func (p *Pipeline) WaitCaughtUp(ctx context.Context) error {
	if err := p.esm.WaitCaughtUp(ctx); err != nil {
		return fmt.Errorf("localrun: apply catching up: %w", err)
	}
	return nil
}
