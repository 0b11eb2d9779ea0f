package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/esm"
	"github.com/docdb-dr/docdb-dr/internal/lambdarun"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// harnessOptions change how a test's functions are built. The zero value is the plain
// functions, as functions/capture and functions/apply build them.
type harnessOptions struct {
	CheckpointEvery int           // capture's CHECKPOINT_EVERY; default 1000 (one save per run)
	LeaseTTL        time.Duration // capture's LEASE_TTL; default 2s, so a crashed holder's lease frees soon
	// Env overrides or adds function variables (both functions'), after the harness's own.
	Env map[string]string
	// DR, Archive and Handler decorate apply's DR writer, its archive (apply.Env.WrapDR and
	// WrapArchive), and the whole apply invocation (what the event source mapping calls).
	DR      func(apply.DR) apply.DR
	Archive func(apply.Archive) apply.Archive
	Handler func(next applyFunc) applyFunc
	// CaptureProcess runs capture out of process: the real functions/capture bootstrap behind
	// internal/lambdarun (frozen between invocations, SIGKILLed past its timeout or by Kill,
	// cold-started after). Its invocations cannot be decorated.
	CaptureProcess bool
	// GroupID is the event source mapping's consumer group (default "reliability-apply").
	GroupID string
	// Timeout bounds the whole test (default 2 minutes).
	Timeout time.Duration
	// Lean keeps nothing that grows with the number of events (the soak test measures the heap):
	// logs and metrics are discarded and apply invocations are only counted, not recorded. The
	// ledger then counts every record the mapping committed as applied (it commits only after a
	// successful invocation).
	Lean bool
}

// captureTimeout is every capture invocation's Lambda timeout in these tests.
const captureTimeout = 30 * time.Second

// applyFunc is one apply invocation.
type applyFunc func(ctx context.Context, ev events.KafkaEvent) (apply.Summary, error)

// applyCall is what one apply invocation got and returned.
type applyCall struct {
	records []coord
	sum     apply.Summary
	err     error
}

// coord is a Kafka record's position in the topic.
type coord struct {
	partition int32
	offset    int64
}

// harness is one test's world: the stack, the capture function (invoked by the test, as the
// schedule would), the apply function behind the local event source mapping (running in the
// background), and what the ledger needs to account for every change. Both functions are built
// only by their shipped constructors (capture.NewFunction, apply.NewFunction) from environment
// variables, or, with CaptureProcess, capture is the shipped bootstrap itself.
type harness struct {
	t   *testing.T
	ctx context.Context
	*stack
	opts harnessOptions
	env  map[string]string // the functions' variables

	logs    *syncBuffer // every log line of capture, apply and the mapping (nil when Lean)
	metrics *syncBuffer // every EMF line (nil when Lean)
	logOut  io.Writer   // where logs go: logs, or io.Discard
	emfOut  io.Writer   // where EMF lines go: metrics, or io.Discard
	calls   atomic.Int64
	failed  atomic.Int64

	captureFn   *capture.Function   // in process, or
	captureProc *lambdarun.Function // out of process
	captureBase capture.Deps        // what capture.NewFunction built, before the routing decorators
	checkpoints *checkpoint.Store
	scope       scope.Scope
	invocations atomic.Int64

	applyFn applyFunc
	esm     *esm.EventSource
	applyMu sync.Mutex
	applies []applyCall

	witness bson.Raw // a stream position taken before the test wrote anything
	nextID  int      // the workload's next document _id
	written int      // change events the workload made in the watched scope
}

func newHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the embedded stack")
	}
	ctx := testContext(t, opts)
	return buildHarness(t, ctx, startStack(t, ctx), opts)
}

// testContext bounds a test by opts.Timeout (default 2 minutes).
func testContext(t *testing.T, opts harnessOptions) context.Context {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// functionEnv is both functions' environment on the stack: the variables docs/configuration.md
// lists, with the bounds these tests use.
func (h *harness) functionEnv() map[string]string {
	env := map[string]string{
		"PRIMARY_URI": h.primaryURI, "PRIMARY_TLS": "disabled",
		"DR_URI": h.drURI, "DR_TLS": "disabled",
		"KAFKA_BROKERS": strings.Join(h.brokers, ","), "KAFKA_TOPIC": topic, "KAFKA_TLS": "false",
		"KAFKA_COMPRESSION": "lz4", "KAFKA_MAX_MESSAGE_BYTES": "1000000",
		"ARCHIVE_BUCKET": bucket, "ARCHIVE_PREFIX": prefix, "S3_ENDPOINT": h.s3URL,
		"AWS_REGION": devstack.Region, "AWS_ACCESS_KEY_ID": devstack.AccessKeyID, "AWS_SECRET_ACCESS_KEY": devstack.SecretAccessKey,
		"WATCH_DB": watchDB, "WATCH_COLLECTIONS": watchColl, "STATE_DB": stateDB, "STATE_COLLECTION": stateColl,
		"MAX_EVENTS": "1000000", "MAX_BYTES": strconv.Itoa(1 << 30),
		"CHECKPOINT_EVERY": strconv.Itoa(h.opts.CheckpointEvery),
		"IDLE_TIMEOUT":     "300ms", "MAX_AWAIT": "50ms",
		// A run ends DEADLINE_MARGIN before its lease expires (capture never outlives its lease;
		// pkg/config wants LEASE_TTL > DEADLINE_MARGIN).
		"DEADLINE_MARGIN": (h.opts.LeaseTTL / 4).String(), "LEASE_TTL": h.opts.LeaseTTL.String(),
		"CHANGE_STREAM_RETENTION": "3h", "LOG_LEVEL": "debug",
	}
	for k, v := range h.opts.Env {
		env[k] = v
	}
	return env
}

// buildHarness builds the functions on a stack with their constructors.
func buildHarness(t *testing.T, ctx context.Context, st *stack, opts harnessOptions) *harness {
	t.Helper()
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = 1000
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 2 * time.Second
	}
	if opts.GroupID == "" {
		opts.GroupID = "reliability-apply"
	}
	h := &harness{t: t, ctx: ctx, stack: st, opts: opts, nextID: 1, logOut: io.Discard, emfOut: io.Discard}
	if !opts.Lean {
		h.logs, h.metrics = &syncBuffer{}, &syncBuffer{}
		h.logOut, h.emfOut = h.logs, h.metrics
	}
	h.witness = h.streamPosition()
	h.env = h.functionEnv()
	getenv := func(name string) string { return h.env[name] }
	awsCfg, err := config.LoadAWS(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	capCfg, err := config.LoadCapture(getenv)
	if err != nil {
		t.Fatal(err)
	}
	h.scope = capture.OptionsFromConfig(capCfg).Scope
	h.checkpoints = checkpoint.New(h.primary.Database(stateDB).Collection(stateColl), nil)

	if opts.CaptureProcess {
		h.captureProc = h.captureSandbox()
	} else {
		h.captureFn, err = capture.NewFunction(ctx, capture.Env{
			Getenv: getenv, AWS: awsCfg, Logger: jsonLogger(h.logOut).With("function", "capture"), Metrics: h.emfOut,
			Wrap: h.routeCapture,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.captureFn.Close)
	}

	applyFn, err := apply.NewFunction(ctx, apply.Env{
		Getenv: getenv, AWS: awsCfg, Logger: jsonLogger(h.logOut).With("function", "apply"), Metrics: h.emfOut,
		WrapDR: opts.DR, WrapArchive: opts.Archive,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(applyFn.Close)
	h.applyFn = applyFn.Handle
	if opts.Handler != nil {
		h.applyFn = opts.Handler(h.applyFn)
	}
	h.startMapping()
	// The first capture ever pins the scope's checkpoint at "now" (START_AT's default), as the
	// first scheduled invocation does after deployment: everything written afterwards is
	// captured.
	if _, err := h.capture(nil); err != nil {
		t.Fatalf("first capture: %v", err)
	}
	return h
}

// captureSandbox is functions/capture's bootstrap behind the Runtime API stand-in, with the
// capture variables of the harness's environment.
func (h *harness) captureSandbox() *lambdarun.Function {
	h.t.Helper()
	env := map[string]string{}
	for _, name := range config.VariablesOf(config.FuncCapture) {
		if v, ok := h.env[name]; ok {
			env[name] = v
		}
	}
	f, err := lambdarun.New(lambdarun.Config{
		Name:        "reliability-capture",
		Bootstrap:   captureBootstrap(h.t),
		Env:         env,
		Timeout:     captureTimeout,
		Region:      devstack.Region,
		Credentials: lambdarun.Credentials{AccessKeyID: devstack.AccessKeyID, SecretAccessKey: devstack.SecretAccessKey},
		Output:      emfSplitter{metrics: h.emfOut, logs: h.logOut},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = f.Close() })
	return f
}

// emfSplitter sends a sandbox's EMF lines (one per Write) to metrics and the rest to logs.
type emfSplitter struct{ metrics, logs io.Writer }

func (e emfSplitter) Write(line []byte) (int, error) {
	if bytes.HasPrefix(line, []byte("{")) && bytes.Contains(line, []byte(`"_aws":`)) {
		return e.metrics.Write(line)
	}
	return e.logs.Write(line)
}

var (
	bootstrapOnce sync.Once
	bootstrapPath string
	bootstrapErr  error
	bootstrapDir  string
)

// captureBootstrap builds functions/capture once per test binary (removed by TestMain).
func captureBootstrap(t testing.TB) string {
	bootstrapOnce.Do(func() {
		if bootstrapDir, bootstrapErr = os.MkdirTemp("", "reliability-capture-"); bootstrapErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bootstrapPath, bootstrapErr = lambdarun.Build(ctx, "github.com/docdb-dr/docdb-dr/functions/capture", bootstrapDir)
	})
	if bootstrapErr != nil {
		t.Fatal(bootstrapErr)
	}
	return bootstrapPath
}

// startMapping runs the local event source mapping in the background until the test ends.
func (h *harness) startMapping() {
	sc, err := kafka.SaramaConfig(kafka.Settings{Brokers: h.brokers, Topic: topic})
	if err != nil {
		h.t.Fatal(err)
	}
	sc.Consumer.MaxWaitTime = 100 * time.Millisecond
	h.esm, err = esm.New(esm.Config{
		Brokers:         h.brokers,
		Topic:           topic,
		GroupID:         h.opts.GroupID,
		BatchSize:       100,
		BatchingWindow:  50 * time.Millisecond,
		RetryBackoff:    50 * time.Millisecond,
		MaxRetryBackoff: 500 * time.Millisecond,
		HandlerTimeout:  30 * time.Second,
		Sarama:          sc,
		Logger:          jsonLogger(h.logOut),
	}, h.invokeApply)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := h.esm.Run(ctx); err != nil {
			h.t.Errorf("event source mapping: %v", err)
		}
	})
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

// invokeApply is the mapping's handler: one apply invocation, recorded for the ledger.
func (h *harness) invokeApply(ctx context.Context, ev events.KafkaEvent) (err error) {
	h.calls.Add(1)
	if h.opts.Lean {
		_, err := h.applyFn(ctx, ev)
		if err != nil {
			h.failed.Add(1)
		}
		return err
	}
	var call applyCall
	for _, recs := range ev.Records {
		for _, r := range recs {
			call.records = append(call.records, coord{partition: int32(r.Partition), offset: r.Offset})
		}
	}
	defer func() {
		if r := recover(); r != nil {
			call.err = fmt.Errorf("apply panicked: %v", r)
			h.applyMu.Lock()
			h.applies = append(h.applies, call)
			h.applyMu.Unlock()
			panic(r) // the mapping turns it into a failed invocation, as Lambda does
		}
	}()
	call.sum, call.err = h.applyFn(ctx, ev)
	h.applyMu.Lock()
	h.applies = append(h.applies, call)
	h.applyMu.Unlock()
	return call.err
}

// applyCalls returns a copy of every apply invocation so far.
func (h *harness) applyCalls() []applyCall {
	h.applyMu.Lock()
	defer h.applyMu.Unlock()
	return append([]applyCall(nil), h.applies...)
}

// failedApplies counts apply invocations that returned an error.
func (h *harness) failedApplies() int {
	if h.opts.Lean {
		return int(h.failed.Load())
	}
	n := 0
	for _, c := range h.applyCalls() {
		if c.err != nil {
			n++
		}
	}
	return n
}

// publisher is a standalone producer on the stack's topic, for tests of pkg/kafka itself (the
// functions own theirs); it is closed when the test ends.
func (h *harness) publisher() (*kafka.Publisher, error) {
	pub, err := kafka.NewPublisher(h.ctx, kafka.Settings{Brokers: h.brokers, Topic: topic, Compression: "lz4", MaxMessageBytes: 1_000_000})
	if err != nil {
		return nil, err
	}
	h.t.Cleanup(func() { _ = pub.Close(5 * time.Second) })
	return pub, nil
}

// decorate wraps one capture invocation's collaborators; c is that invocation's crash switch.
type decorate func(d capture.Deps, c *crash) capture.Deps

// capture runs one capture invocation with a new owner (a fresh random Lambda request id), as a
// schedule tick does.
func (h *harness) capture(wrap decorate) (capture.Summary, error) {
	h.invocations.Add(1)
	return h.captureAs(lambdarun.NewRequestID(), wrap)
}

// captureAs runs one capture invocation as owner (its request id), with a Lambda-like deadline
// of captureTimeout.
func (h *harness) captureAs(owner string, wrap decorate) (capture.Summary, error) {
	return h.invoke(owner, capture.Overrides{}, wrap)
}

// invoke runs one capture invocation as owner with a manual invoke's overrides, through the
// function's Handle (or the sandbox). wrap decorates this invocation only: its decorated
// collaborators travel in the invocation's context to the routing decorators installed at
// construction (routeCapture), with the invocation's crash switch.
func (h *harness) invoke(owner string, overrides capture.Overrides, wrap decorate) (capture.Summary, error) {
	payload, err := json.Marshal(overrides)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.captureProc != nil {
		if wrap != nil {
			h.t.Fatal("an out-of-process capture cannot be decorated")
		}
		return h.invokeProcess(owner, payload)
	}
	ctx, cancel := context.WithDeadline(h.ctx, time.Now().Add(captureTimeout))
	defer cancel()
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: owner})
	if wrap != nil {
		ctx = withCaptureDeps(ctx, wrap(h.captureBase, &crash{cancel: cancel}))
	}
	return h.captureFn.Handle(ctx, payload)
}

// invokeProcess invokes the capture sandbox; a failed invocation has no summary (Lambda returns
// only the error), so one is made from the error.
func (h *harness) invokeProcess(owner string, payload []byte) (capture.Summary, error) {
	r, err := h.captureProc.InvokeAs(h.ctx, owner, payload)
	if err != nil {
		return capture.Summary{StopReason: capture.StopError, Error: err.Error()}, err
	}
	if r.Err != nil {
		return capture.Summary{Owner: owner, StopReason: capture.StopError, Error: r.Err.Error()}, r.Err
	}
	var sum capture.Summary
	if err := json.Unmarshal(r.Payload, &sum); err != nil {
		return sum, fmt.Errorf("capture response %q: %w", r.Payload, err)
	}
	return sum, nil
}

// settle brings the pipeline to rest after a fault: capture runs (a lease left by a crashed
// invocation is waited out) until one invocation reads to the end of the stream without an
// error, then apply is given time to commit every record in the topic.
func (h *harness) settle() {
	h.t.Helper()
	deadline := time.Now().Add(max(60*time.Second, h.opts.LeaseTTL+30*time.Second))
	for {
		sum, err := h.capture(nil)
		if err == nil && sum.StopReason == capture.StopIdle {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("capture did not settle: last run stopped with %s: %v", sum.StopReason, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.waitApplied()
}

// waitApplied waits until apply has committed every record now in the topic. It waits as long as
// records keep being committed (a kill test leaves thousands, and apply is several times slower
// under the race detector) and fails after a minute without progress.
func (h *harness) waitApplied() {
	h.t.Helper()
	before := int64(-1) // records not committed a minute ago; -1: not known yet
	for {
		ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
		err := h.esm.WaitCaughtUp(ctx)
		cancel()
		if err == nil {
			return
		}
		left, _, lagErr := h.esm.Lag(h.ctx)
		if lagErr != nil || h.ctx.Err() != nil || (before >= 0 && left >= before) {
			h.t.Fatalf("apply did not catch up: %v (%d records not committed, %d a minute before; %v)", err, left, before, lagErr)
		}
		h.t.Logf("apply still catching up: %d records not committed", left)
		before = left
	}
}

// streamPosition is the watched collection's change stream position now (its post-batch resume
// token): the ledger reads the primary's history from there.
func (h *harness) streamPosition() bson.Raw {
	h.t.Helper()
	cs, err := h.primary.Database(watchDB).Collection(watchColl).Watch(h.ctx, mongo.Pipeline{},
		options.ChangeStream().SetMaxAwaitTime(10*time.Millisecond))
	if err != nil {
		h.t.Fatal(err)
	}
	defer cs.Close(context.Background())
	if cs.TryNext(h.ctx) {
		h.t.Fatal("the watched collection changed before the test wrote anything")
	}
	tok := cs.ResumeToken()
	if len(tok) == 0 {
		h.t.Fatalf("no post-batch resume token: %v", cs.Err())
	}
	return append(bson.Raw(nil), tok...)
}

// eventsAfter counts the watched collection's change events after a stream position.
func (h *harness) eventsAfter(pos bson.Raw) int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	cs, err := h.primary.Database(watchDB).Collection(watchColl).Watch(ctx, mongo.Pipeline{},
		options.ChangeStream().SetResumeAfter(pos).SetMaxAwaitTime(20*time.Millisecond))
	if err != nil {
		h.t.Fatalf("events after a position: %v", err)
	}
	defer cs.Close(context.Background())
	n := 0
	for cs.TryNext(ctx) {
		n++
	}
	if err := cs.Err(); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// checkpoint returns the scope's state document.
func (h *harness) checkpoint() checkpoint.State {
	h.t.Helper()
	st, err := h.checkpoints.Load(h.ctx, h.scope.ID())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// write makes `rounds` rounds of changes. Each round, in the watched collection bar.foo:
// inserts 10 documents (InsertMany), updates 5 of them ($set and $inc), replaces 1 and deletes 2
// (18 change events); and inserts 1 document into the unwatched bar.other, which must never
// reach Kafka. Documents carry several BSON types so that a lossy path would show in the
// byte-for-byte comparison.
func (h *harness) write(rounds int) {
	h.t.Helper()
	foo := h.primary.Database(watchDB).Collection(watchColl)
	other := h.primary.Database(watchDB).Collection(otherColl)
	for range rounds {
		base := h.nextID
		h.nextID += 10
		docs := make([]any, 10)
		ids := make([]any, 10)
		for i := range docs {
			id := int64(base + i)
			ids[i] = id
			docs[i] = bson.D{
				{Key: "_id", Value: id},
				{Key: "name", Value: fmt.Sprintf("doc-%d", id)},
				{Key: "n", Value: int32(i)},
				{Key: "price", Value: mustDecimal(fmt.Sprintf("%d.25", id))},
				{Key: "at", Value: primitive.NewDateTimeFromTime(time.Unix(1_700_000_000+id, 0))},
				{Key: "tags", Value: bson.A{"a", "b", int32(i)}},
				{Key: "blob", Value: primitive.Binary{Subtype: 0, Data: []byte{byte(i), 0xff}}},
			}
		}
		must(h.t, func() error { _, err := foo.InsertMany(h.ctx, docs); return err })
		must(h.t, func() error {
			_, err := foo.UpdateMany(h.ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids[:5]}}}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "updated", Value: true}}}, {Key: "$inc", Value: bson.D{{Key: "n", Value: int32(100)}}}})
			return err
		})
		must(h.t, func() error {
			_, err := foo.ReplaceOne(h.ctx, bson.D{{Key: "_id", Value: ids[5]}},
				bson.D{{Key: "replaced", Value: true}, {Key: "v", Value: int64(2)}})
			return err
		})
		must(h.t, func() error {
			_, err := foo.DeleteMany(h.ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids[8:]}}}})
			return err
		})
		must(h.t, func() error { _, err := other.InsertOne(h.ctx, bson.D{{Key: "x", Value: base}}); return err })
		h.written += 18
	}
}

func must(t testing.TB, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

func mustDecimal(s string) primitive.Decimal128 {
	d, err := primitive.ParseDecimal128(s)
	if err != nil {
		panic(err)
	}
	return d
}

// waitFor polls cond every 10 ms for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
