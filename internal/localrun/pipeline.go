// Package localrun runs docdb-dr's two functions on one machine, the way AWS runs them:
//
//   - capture is invoked on a schedule (EventBridge in AWS), one invocation at a time (the
//     function has reserved concurrency 1), each invocation with a fresh random request id and
//     a deadline like a Lambda timeout; a scheduled invocation that fails is retried as
//     template.yaml's EventInvokeConfig says (MaximumRetryAttempts 0: not at all);
//   - apply is invoked by internal/esm, the local stand-in for the MSK event source mapping,
//     with batches of Kafka records, and retried with the same batch until it succeeds (the
//     template leaves the mapping's retries unlimited).
//
// Each function runs in one of two ways:
//
//   - in process (the default): built by the same constructors as functions/capture and
//     functions/apply (capture.NewFunction, apply.NewFunction), from the same environment
//     variables (pkg/config), so that tests can wrap their collaborators (Hooks);
//   - out of process (Options.CaptureBootstrap, Options.ApplyBootstrap): the real bootstrap
//     executable behind internal/lambdarun, the Runtime API stand-in. Then an invocation past
//     its timeout is killed with its process, the process is frozen between invocations and
//     cold-started after a crash, exactly as a Lambda sandbox, and nothing of the caller's
//     process is shared.
//
// The variables come through a getenv that layers the caller's overrides over the local stack's
// Env() (see Getenv). When they point at real clusters, brokers and buckets, the same runner runs
// against them.
//
// Typical use (the demo, the end-to-end suite and the benchmark do this):
//
//	p, err := localrun.New(ctx, localrun.Options{Getenv: localrun.Getenv(overrides, stack.Env(), nil)})
//	defer p.Close()
//	p.Start(ctx)        // the capture schedule and the event source mapping
//	... write to the primary ...
//	err = p.Sync(ctx)   // everything written so far is in DR (or in the archive)
//
// Tests inject faults through Hooks (in-process functions only), which may wrap capture's
// collaborators (for instance a Checkpoints whose Save fails: a crash after Kafka acknowledged but
// before the checkpoint moved), apply's DR writer or its archive; internal/faults has ready-made
// failing decorators.
package localrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/esm"
	"github.com/docdb-dr/docdb-dr/internal/lambdarun"
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

// What template.yaml configures for the capture schedule's asynchronous invocations
// (CaptureFunction's EventInvokeConfig); deploy/localrun_test.go checks the two agree.
const (
	TemplateCaptureRetryAttempts = 0
	TemplateCaptureMaxEventAge   = 60 * time.Second
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
	// CaptureRetryAttempts is how many times a failed scheduled invocation is retried, with the
	// same request id, after CaptureRetryDelay (default: TemplateCaptureRetryAttempts, none;
	// Lambda waits a minute, the default delay).
	CaptureRetryAttempts int
	CaptureRetryDelay    time.Duration

	// CaptureBootstrap and ApplyBootstrap, when set, run that function out of process: the
	// executable (functions/capture or functions/apply, see lambdarun.Build) behind the
	// internal/lambdarun Runtime API, with the function's variables from Getenv and nothing
	// else. Hooks cannot reach into another process: New refuses a hook for such a function.
	CaptureBootstrap string
	ApplyBootstrap   string
	// FunctionLogs receives the out-of-process functions' log lines (their JSON logs and the
	// platform's START/END/REPORT lines); their EMF lines go to Metrics. Default os.Stderr.
	FunctionLogs io.Writer

	// The event source mapping (internal/esm defaults when zero).
	BatchSize       int
	BatchingWindow  time.Duration
	GroupID         string        // consumer group; default DefaultGroupID
	ApplyTimeout    time.Duration // one apply invocation's timeout; default 5m
	RetryBackoff    time.Duration // first wait before a failed batch is retried
	MaxRetryBackoff time.Duration
	// BisectBatchOnError is the template's ApplyBisectBatchOnError: a failed batch is split in
	// two halves, each retried (without limit) in turn.
	BisectBatchOnError bool

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
	Owner   string // the request id, which capture uses as its lease owner
	Attempt int    // 0, or the retry number of a scheduled invocation (same Owner)
	Started time.Time
	Ended   time.Time
	Summary capture.Summary // out of process, a failed invocation has only StopReason and Error
	Err     error

	// Out of process only: the sandbox's process, whether it was started for this invocation,
	// and whether it died during it (timeout, crash); the init duration of a cold start and the
	// process's peak RSS in bytes (lambdarun.Result's InitDuration and PeakRSS; Linux only).
	PID          int
	ColdStart    bool
	Killed       bool
	InitDuration time.Duration
	PeakRSS      int64
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

	capture     *capture.Function   // in process, or
	captureProc *lambdarun.Function // out of process
	apply       *apply.Function
	applyProc   *lambdarun.Function
	esm         *esm.EventSource

	// Clients of the test workload and of the checks, separate from the functions' own.
	primary, dr *mongo.Client
	checkpoints *checkpoint.Store
	archive     *archive.S3

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
	p := &Pipeline{opts: opts, log: log, capCfg: capCfg, applyCfg: applyCfg, notify: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()

	awsCfg, err := config.LoadAWS(ctx, opts.Getenv)
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	if err := p.buildFunctions(ctx, awsCfg); err != nil {
		return nil, err
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
		HandlerTimeout:  p.applyHandlerTimeout(),
		Sarama:          sc,
		Logger:          log,

		BisectBatchOnFunctionError: opts.BisectBatchOnError,
	}, p.applyHandler())
	if err != nil {
		return nil, fmt.Errorf("localrun: %w", err)
	}
	log.Info("local run configured", "primary", capCfg.Primary.String(), "dr", applyCfg.DR.String(),
		"kafka", ks.String(), "bucket", applyCfg.Archive.Bucket, "scope", p.Scope().String(),
		"captureInterval", opts.CaptureInterval.String(), "manualCapture", opts.ManualCapture,
		"captureProcess", opts.CaptureBootstrap != "", "applyProcess", opts.ApplyBootstrap != "")
	return p, nil
}

// buildFunctions builds capture and apply in process with their constructors, or as Lambda
// sandboxes of their bootstrap executables.
func (p *Pipeline) buildFunctions(ctx context.Context, awsCfg aws.Config) error {
	opts, log := p.opts, p.log
	var err error
	if opts.CaptureBootstrap != "" {
		if opts.Hooks.CaptureDeps != nil {
			return errors.New("localrun: Hooks.CaptureDeps cannot wrap an out-of-process capture (CaptureBootstrap)")
		}
		p.captureProc, err = p.sandbox("docdbdr-capture", opts.CaptureBootstrap, config.FuncCapture, opts.CaptureTimeout)
	} else {
		p.capture, err = capture.NewFunction(ctx, capture.Env{
			Getenv: opts.Getenv, AWS: awsCfg, Logger: log.With("function", "capture"), Metrics: opts.Metrics, Wrap: opts.Hooks.CaptureDeps,
		})
	}
	if err != nil {
		return fmt.Errorf("localrun: %w", err)
	}
	if opts.ApplyBootstrap != "" {
		if opts.Hooks.DR != nil || opts.Hooks.Archive != nil {
			return errors.New("localrun: Hooks.DR and Hooks.Archive cannot wrap an out-of-process apply (ApplyBootstrap)")
		}
		p.applyProc, err = p.sandbox("docdbdr-apply", opts.ApplyBootstrap, config.FuncApply, opts.ApplyTimeout)
	} else {
		p.apply, err = apply.NewFunction(ctx, apply.Env{
			Getenv: opts.Getenv, AWS: awsCfg, Logger: log.With("function", "apply"), Metrics: opts.Metrics,
			WrapDR: opts.Hooks.DR, WrapArchive: opts.Hooks.Archive,
		})
	}
	if err != nil {
		return fmt.Errorf("localrun: %w", err)
	}
	return nil
}

// sandbox is function fn's bootstrap behind the Runtime API emulator, given exactly the
// variables pkg/config reads for fn (what template.yaml sets), and the AWS credentials and
// region as Lambda gives them from the execution role.
func (p *Pipeline) sandbox(name, bootstrap, fn string, timeout time.Duration) (*lambdarun.Function, error) {
	get := p.opts.Getenv
	env := map[string]string{}
	for _, v := range config.VariablesOf(fn) {
		if val := get(v); val != "" {
			env[v] = val
		}
	}
	return lambdarun.New(lambdarun.Config{
		Name:      name,
		Bootstrap: bootstrap,
		Env:       env,
		Timeout:   timeout,
		Region:    get("AWS_REGION"),
		Credentials: lambdarun.Credentials{
			AccessKeyID: get("AWS_ACCESS_KEY_ID"), SecretAccessKey: get("AWS_SECRET_ACCESS_KEY"), SessionToken: get("AWS_SESSION_TOKEN"),
		},
		Output: &splitEMF{metrics: p.opts.Metrics, logs: p.opts.FunctionLogs},
		Logger: p.log.With("component", "lambdarun"),
	})
}

// splitEMF routes an out-of-process function's log lines (one per Write): EMF lines to metrics,
// the rest to logs, as CloudWatch Logs keeps both and extracts the metrics.
type splitEMF struct{ metrics, logs io.Writer }

func (s *splitEMF) Write(line []byte) (int, error) {
	if bytes.HasPrefix(line, []byte("{")) && bytes.Contains(line, []byte(`"_aws":`)) {
		return s.metrics.Write(line)
	}
	return s.logs.Write(line)
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
	if o.FunctionLogs == nil {
		o.FunctionLogs = os.Stderr
	}
	if o.CaptureRetryDelay <= 0 {
		o.CaptureRetryDelay = time.Minute
	}
	return o
}

// Scope is what capture replicates.
func (p *Pipeline) Scope() scope.Scope { return capture.OptionsFromConfig(p.capCfg).Scope }

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
	for _, f := range []*lambdarun.Function{p.captureProc, p.applyProc} {
		if f != nil {
			errs = append(errs, f.Close())
		}
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

// applyHandler is the event source mapping's handler: one apply invocation, in process or
// through the apply sandbox.
func (p *Pipeline) applyHandler() esm.Handler {
	if p.applyProc != nil {
		return esm.Invoker(p.applyProc, func(ev events.KafkaEvent, r lambdarun.Result) {
			if p.opts.OnApply == nil {
				return
			}
			res := ApplyResult{Records: records(ev), Started: r.Started, Ended: r.Ended, Err: r.Error()}
			if r.Err == nil {
				if err := json.Unmarshal(r.Payload, &res.Summary); err != nil {
					res.Err = fmt.Errorf("localrun: apply response %q: %w", r.Payload, err)
				}
			}
			p.opts.OnApply(res)
		})
	}
	return func(ctx context.Context, ev events.KafkaEvent) error {
		started := time.Now()
		sum, err := p.apply.Handle(ctx, ev)
		if p.opts.OnApply != nil {
			p.opts.OnApply(ApplyResult{Records: records(ev), Started: started, Ended: time.Now(), Summary: sum, Err: err})
		}
		return err
	}
}

// ApplyOnce runs one in-process apply invocation on ev now, outside the event source mapping
// (benchmarks hand it batches they built). It fails for an out-of-process apply.
func (p *Pipeline) ApplyOnce(ctx context.Context, ev events.KafkaEvent) (apply.Summary, error) {
	if p.apply == nil {
		return apply.Summary{}, errors.New("localrun: ApplyOnce needs the in-process apply function")
	}
	return p.apply.Handle(ctx, ev)
}

// applyHandlerTimeout bounds one in-process apply invocation; out of process the sandbox
// enforces the timeout itself (and kills the process), so the mapping only keeps a backstop.
func (p *Pipeline) applyHandlerTimeout() time.Duration {
	if p.applyProc != nil {
		return p.opts.ApplyTimeout + 30*time.Second
	}
	return p.opts.ApplyTimeout
}

func records(ev events.KafkaEvent) int {
	n := 0
	for _, recs := range ev.Records {
		n += len(recs)
	}
	return n
}

// WaitCaughtUp returns once apply has handled (and the event source mapping committed) every
// record in the topic at the time of the call.
func (p *Pipeline) WaitCaughtUp(ctx context.Context) error {
	if err := p.esm.WaitCaughtUp(ctx); err != nil {
		return fmt.Errorf("localrun: apply catching up: %w", err)
	}
	return nil
}

// CaptureSandbox is the out-of-process capture's Lambda sandbox (nil in process): tests kill it
// (Kill) as a crash of the function's process would.
func (p *Pipeline) CaptureSandbox() *lambdarun.Function { return p.captureProc }

// ApplySandbox is the out-of-process apply's Lambda sandbox (nil in process).
func (p *Pipeline) ApplySandbox() *lambdarun.Function { return p.applyProc }
