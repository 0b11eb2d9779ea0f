package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

func init() {
	register(command{
		name:    "bench",
		summary: "measure capture and apply throughput and end-to-end lag on the embedded stack; write bench/report.md",
		run:     runBench,
	})
}

// benchConfig are the bench's sizes and settings (flags).
type benchConfig struct {
	events          int // documents captured and applied for the throughput figures
	originalCapture int // events sent the original write-up's way (a producer and a flush each)
	originalApply   int // documents written the original way (one insert each)
	batchSize       int // event source mapping batch size
	batchingWindow  time.Duration

	rate           int           // writes per second for the lag runs
	duration       time.Duration // length of the steady write phase
	schedule       time.Duration // capture schedule in the lag runs
	captureTimeout time.Duration // capture's Lambda timeout in the lag runs
	deadlineMargin time.Duration
	drain          time.Duration // CONTINUOUS_DRAIN when on
	idleTimeout    time.Duration
	maxAwait       time.Duration
	bursty         bool          // also run bursts: writes during burstOn of every burstPeriod
	burstOn        time.Duration //
	burstPeriod    time.Duration //

	out string // directory of report.md and lag.svg
}

// runBench measures, on fresh embedded stacks: capture throughput against a raw drain of the same
// change stream and against the original write-up's producer-per-event; apply throughput against
// a raw bulk write of the same documents and against one insert per document; and end-to-end lag
// at a steady write rate with CONTINUOUS_DRAIN off and on. It prints `name: value` lines and
// writes <out>/report.md and <out>/lag.svg.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c benchConfig
	fs := newFlagSet("bench", stderr)
	fs.IntVar(&c.events, "events", 20000, "documents captured and applied for the throughput figures")
	fs.IntVar(&c.originalCapture, "original-capture", 300, "events published the original way (new producer + flush per event)")
	fs.IntVar(&c.originalApply, "original-apply", 2000, "documents written the original way (one insert per record)")
	fs.IntVar(&c.batchSize, "batch-size", 500, "event source mapping batch size (the template's default)")
	fs.DurationVar(&c.batchingWindow, "batching-window", time.Second, "event source mapping batching window (the template's default)")
	fs.IntVar(&c.rate, "rate", 500, "writes per second in the lag runs")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "length of each lag run's write phase")
	fs.DurationVar(&c.schedule, "schedule", 10*time.Second, "capture schedule in the lag runs (AWS: 1 minute)")
	fs.DurationVar(&c.captureTimeout, "capture-timeout", 10*time.Second, "capture timeout in the lag runs (AWS: 60s)")
	fs.DurationVar(&c.deadlineMargin, "deadline-margin", 1500*time.Millisecond, "DEADLINE_MARGIN in the lag runs (AWS default: 10s)")
	fs.DurationVar(&c.drain, "continuous-drain", 7500*time.Millisecond, "CONTINUOUS_DRAIN of the 'on' lag run (AWS: about 45s)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 3*time.Second, "IDLE_TIMEOUT in the lag runs")
	fs.DurationVar(&c.maxAwait, "max-await", time.Second, "MAX_AWAIT in the lag runs")
	fs.BoolVar(&c.bursty, "bursty", true, "also measure lag with bursts of writes (where CONTINUOUS_DRAIN matters)")
	fs.DurationVar(&c.burstOn, "burst", time.Second, "length of each burst in the bursty lag runs")
	fs.DurationVar(&c.burstPeriod, "burst-period", 5*time.Second, "a burst starts every this long in the bursty lag runs")
	fs.StringVar(&c.out, "out", "bench", "directory for report.md and lag.svg")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "error"), "debug, info, warn or error (logs go to stderr)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr bench [flags]

Measures capture and apply throughput and end-to-end lag on the embedded local stack (always; it
never uses the services named by the environment). Prints one "name: value" line per figure and
writes <out>/report.md and <out>/lag.svg.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.events < 1 || c.originalCapture < 1 || c.originalApply < 1 || c.rate < 1 || c.duration <= 0 ||
		c.burstOn <= 0 || c.burstPeriod < c.burstOn {
		fmt.Fprintln(stderr, "sizes, rate and durations must be positive, and --burst-period at least --burst")
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	b := &bench{cfg: c, out: stdout, log: log, started: time.Now()}
	if err := b.throughput(ctx); err != nil {
		return err
	}
	modes := []lagMode{{"drain_off", 0, false}, {"drain_on", c.drain, false}}
	if c.bursty {
		modes = append(modes, lagMode{"bursty_drain_off", 0, true}, lagMode{"bursty_drain_on", c.drain, true})
	}
	for _, mode := range modes {
		if err := b.lag(ctx, mode); err != nil {
			return err
		}
	}
	return b.write()
}

// bench collects the figures as it measures them.
type bench struct {
	cfg     benchConfig
	out     io.Writer
	log     *slog.Logger
	started time.Time
	figures []figure
	lags    []lagRun
}

type figure struct{ name, value, note string }

// put records and prints one figure.
func (b *bench) put(name string, value float64, unit, note string) {
	v := formatFigure(value)
	if unit != "" {
		v += " " + unit
	}
	b.figures = append(b.figures, figure{name, v, note})
	fmt.Fprintf(b.out, "%s: %s\n", name, v)
}

func formatFigure(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// benchStack starts an embedded stack and a pipeline over it watching bench.<coll>, with change
// streams enabled and the checkpoint pinned at "now".
func (b *bench) benchStack(ctx context.Context, coll string, env map[string]string, opts localrun.Options) (*devstack.Stack, *localrun.Pipeline, error) {
	st, err := devstack.Start(ctx, devstack.Options{Logger: b.log.With("component", "devstack")})
	if err != nil {
		return nil, nil, fmt.Errorf("start the embedded stack: %w", err)
	}
	overrides := map[string]string{"WATCH_DB": "bench", "WATCH_COLLECTIONS": coll}
	for k, v := range env {
		overrides[k] = v
	}
	opts.Getenv = localrun.Getenv(overrides, st.Env(), nil)
	opts.Logger = b.log
	opts.BatchSize = b.cfg.batchSize
	opts.BatchingWindow = b.cfg.batchingWindow
	p, err := localrun.New(ctx, opts)
	if err != nil {
		_ = st.Close()
		return nil, nil, err
	}
	err = docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope())
	if err == nil {
		_, err = p.CaptureOnce(ctx, capture.Overrides{IdleTimeout: capture.Duration(10 * time.Millisecond), ContinuousDrain: capture.Duration(10 * time.Millisecond)})
	}
	if err != nil {
		_ = p.Close()
		_ = st.Close()
		return nil, nil, err
	}
	return st, p, nil
}

// benchDoc is a document of about 300 bytes with the usual types.
func benchDoc(seq int) bson.D {
	return bson.D{
		{Key: "_id", Value: primitive.NewObjectID()},
		{Key: "seq", Value: int64(seq)},
		{Key: "customer", Value: fmt.Sprintf("customer-%06d", seq%5000)},
		{Key: "status", Value: "created"},
		{Key: "total", Value: float64(seq%1000) + 0.99},
		{Key: "at", Value: primitive.NewDateTimeFromTime(time.Now())},
		{Key: "items", Value: bson.A{
			bson.D{{Key: "sku", Value: "A-100"}, {Key: "qty", Value: int32(1 + seq%3)}},
			bson.D{{Key: "sku", Value: "B-200"}, {Key: "qty", Value: int32(2)}},
		}},
		{Key: "address", Value: bson.D{{Key: "city", Value: "Seattle"}, {Key: "zip", Value: "98101"}}},
		{Key: "note", Value: strings.Repeat("x", 80)},
	}
}

// throughput measures capture and apply over the same N events, and the baselines.
func (b *bench) throughput(ctx context.Context) error {
	c := b.cfg
	var (
		mu                 sync.Mutex
		firstApply, lastAp time.Time
		applied            int
	)
	st, p, err := b.benchStack(ctx, "events", map[string]string{
		"MAX_AWAIT": "100ms", "IDLE_TIMEOUT": "2s", "CONTINUOUS_DRAIN": "0",
	}, localrun.Options{
		ManualCapture:  true,
		CaptureTimeout: 10 * time.Minute,
		OnApply: func(r localrun.ApplyResult) {
			mu.Lock()
			defer mu.Unlock()
			if r.Err != nil {
				return
			}
			if firstApply.IsZero() {
				firstApply = r.Started
			}
			lastAp = r.Ended
			applied += r.Records
		},
	})
	if err != nil {
		return err
	}
	defer st.Close()
	defer p.Close()

	// Load N documents into the watched collection (capture has not run since its start).
	fmt.Fprintf(b.out, "# loading %d documents into the primary\n", c.events)
	coll := p.Primary().Database("bench").Collection("events")
	docs := make([]any, 0, 1000)
	for i := range c.events {
		docs = append(docs, benchDoc(i))
		if len(docs) == cap(docs) || i == c.events-1 {
			if _, err := coll.InsertMany(ctx, docs); err != nil {
				return fmt.Errorf("load: %w", err)
			}
			docs = docs[:0]
		}
	}
	state, err := p.Checkpoints().Load(ctx, p.Scope().ID())
	if err != nil {
		return err
	}
	from := state.ResumeToken

	// Capture: one invocation drains exactly N events (MAX_EVENTS), publishes and checkpoints.
	start := time.Now()
	sum, err := p.CaptureOnce(ctx, capture.Overrides{MaxEvents: c.events})
	elapsed := time.Since(start)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if sum.Events != c.events {
		return fmt.Errorf("capture published %d events, want %d (stop: %s)", sum.Events, c.events, sum.StopReason)
	}
	captureRate := float64(c.events) / elapsed.Seconds()

	// Raw drain: the same stream from the same token with the driver, reading only.
	rawRate, err := rawDrain(ctx, coll, from, c.events)
	if err != nil {
		return err
	}

	// Apply: the event source mapping delivers the N records to apply.
	p.Start(ctx)
	if err := p.WaitCaughtUp(ctx); err != nil {
		return err
	}
	p.Stop()
	mu.Lock()
	applyRate := float64(applied) / lastAp.Sub(firstApply).Seconds()
	mu.Unlock()
	if applied < c.events {
		return fmt.Errorf("apply handled %d records, want %d", applied, c.events)
	}

	// Raw bulk write of the same documents, and the original one-insert-per-record.
	all, err := readAllRaw(ctx, coll)
	if err != nil {
		return err
	}
	bulkRate, err := bulkInsert(ctx, p.DR().Database("bench_raw").Collection("bulk"), all)
	if err != nil {
		return err
	}
	oneRate, err := oneByOne(ctx, p.DR().Database("bench_raw").Collection("one_by_one"), all[:min(len(all), c.originalApply)])
	if err != nil {
		return err
	}

	// The original capture: a new producer and a flush for every event (after apply is done, so
	// its JSON messages never reach apply).
	origRate, err := originalCapture(ctx, coll, from, c.originalCapture, st.KafkaBrokers, st.Topic)
	if err != nil {
		return err
	}

	b.put("capture_events", float64(c.events), "", "one capture invocation, MAX_EVENTS = N")
	b.put("capture_throughput", captureRate, "events/s", "drain + publish (acks=all, lz4) + checkpoint")
	b.put("raw_drain_throughput", rawRate, "events/s", "driver change stream from the same token, updateLookup, read only")
	b.put("capture_vs_raw_drain", captureRate/rawRate, "", "")
	b.put("original_capture_throughput", origRate, "events/s", fmt.Sprintf("new producer + send + flush + close per event, %d events", c.originalCapture))
	b.put("capture_vs_original", captureRate/origRate, "x", "")
	b.put("apply_records", float64(applied), "", fmt.Sprintf("event source mapping, batch size %d", c.batchSize))
	b.put("apply_throughput", applyRate, "records/s", "first batch start to last batch end")
	b.put("raw_bulk_write_throughput", bulkRate, "docs/s", "insertMany of the same raw documents, 1000 per command")
	b.put("apply_vs_raw_bulk_write", applyRate/bulkRate, "", "")
	b.put("original_apply_throughput", oneRate, "docs/s", fmt.Sprintf("one insert per record, %d records", min(len(all), c.originalApply)))
	b.put("apply_vs_original", applyRate/oneRate, "x", "")
	return nil
}

// rawDrain reads n events of the stream after token as fast as the driver can, and returns
// events/s.
func rawDrain(ctx context.Context, coll *mongo.Collection, token bson.Raw, n int) (float64, error) {
	start := time.Now()
	cs, err := openStream(ctx, coll, token)
	if err != nil {
		return 0, err
	}
	defer cs.Close(ctx)
	for i := 0; i < n; i++ {
		if !cs.Next(ctx) {
			return 0, fmt.Errorf("raw drain: stream ended after %d events: %w", i, cs.Err())
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func openStream(ctx context.Context, coll *mongo.Collection, token bson.Raw) (*mongo.ChangeStream, error) {
	opts := options.ChangeStream().SetFullDocument(options.UpdateLookup).SetMaxAwaitTime(100 * time.Millisecond)
	if len(token) > 0 {
		opts.SetResumeAfter(token)
	}
	cs, err := coll.Watch(ctx, mongo.Pipeline{}, opts)
	if err != nil {
		return nil, fmt.Errorf("open change stream: %w", err)
	}
	return cs, nil
}

// originalCapture publishes n events the original write-up's way: each event's document
// flattened to a JSON string, and a new producer, one send, a flush and a close per event.
func originalCapture(ctx context.Context, coll *mongo.Collection, token bson.Raw, n int, brokers []string, topic string) (float64, error) {
	cs, err := openStream(ctx, coll, token)
	if err != nil {
		return 0, err
	}
	defer cs.Close(ctx)
	start := time.Now()
	for i := 0; i < n; i++ {
		if !cs.Next(ctx) {
			return 0, fmt.Errorf("original capture: stream ended after %d events: %w", i, cs.Err())
		}
		ev, err := changeevent.FromChangeStream(cs.Current)
		if err != nil {
			return 0, err
		}
		body, err := bson.MarshalExtJSON(ev.FullDocument, false, false)
		if err != nil {
			return 0, err
		}
		cfg := sarama.NewConfig()
		cfg.Producer.Return.Successes = true
		prod, err := sarama.NewSyncProducer(brokers, cfg)
		if err != nil {
			return 0, fmt.Errorf("original capture: producer: %w", err)
		}
		_, _, err = prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(ev.ResumeToken), Value: sarama.ByteEncoder(body)})
		cerr := prod.Close()
		if err = errors.Join(err, cerr); err != nil {
			return 0, fmt.Errorf("original capture: send: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func readAllRaw(ctx context.Context, coll *mongo.Collection) ([]bson.Raw, error) {
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	var out []bson.Raw
	for cur.Next(ctx) {
		out = append(out, slices.Clone(cur.Current))
	}
	return out, cur.Err()
}

// bulkInsert writes docs with ordered insertMany commands of 1000 and returns docs/s.
func bulkInsert(ctx context.Context, coll *mongo.Collection, docs []bson.Raw) (float64, error) {
	start := time.Now()
	for i := 0; i < len(docs); i += 1000 {
		chunk := make([]any, 0, 1000)
		for _, d := range docs[i:min(i+1000, len(docs))] {
			chunk = append(chunk, d)
		}
		if _, err := coll.InsertMany(ctx, chunk); err != nil {
			return 0, fmt.Errorf("raw bulk write: %w", err)
		}
	}
	return float64(len(docs)) / time.Since(start).Seconds(), nil
}

// oneByOne writes docs with one insertOne each (the original apply) and returns docs/s.
func oneByOne(ctx context.Context, coll *mongo.Collection, docs []bson.Raw) (float64, error) {
	start := time.Now()
	for _, d := range docs {
		if _, err := coll.InsertOne(ctx, d); err != nil {
			return 0, fmt.Errorf("one insert per record: %w", err)
		}
	}
	return float64(len(docs)) / time.Since(start).Seconds(), nil
}

// lagMode is one lag run's capture setting and write pattern.
type lagMode struct {
	name   string
	drain  time.Duration // CONTINUOUS_DRAIN; 0 is off
	bursty bool          // writes in bursts rather than steadily
}

// label names the mode in the chart's legend.
func (m lagMode) label() string {
	if m.drain > 0 {
		return "CONTINUOUS_DRAIN " + m.drain.String()
	}
	return "CONTINUOUS_DRAIN off"
}

// writeTimes returns when each write is due, from the run's start: steadily at the rate, or at the
// rate during the first burstOn of every burstPeriod.
func (c benchConfig) writeTimes(bursty bool) []time.Duration {
	interval := time.Second / time.Duration(c.rate)
	var out []time.Duration
	if !bursty {
		for i := range int(float64(c.rate) * c.duration.Seconds()) {
			out = append(out, time.Duration(i)*interval)
		}
		return out
	}
	perBurst := int(float64(c.rate) * c.burstOn.Seconds())
	for start := time.Duration(0); start < c.duration; start += c.burstPeriod {
		for i := range perBurst {
			out = append(out, start+time.Duration(i)*interval)
		}
	}
	return out
}

// lagRun is one lag run's measurements: per write, when it was acknowledged by the primary
// (since the run's start) and how long until apply's bulk write holding it returned.
type lagRun struct {
	mode    lagMode
	written []time.Duration
	lag     []time.Duration
	missing int
}

// lagRecorder wraps apply's DR writer and notes when each document (by its seq field) was first
// written to DR.
type lagRecorder struct {
	apply.DR
	mu   sync.Mutex
	seen map[int64]time.Time
}

func (r *lagRecorder) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []apply.Write) (apply.BulkResult, error) {
	res, err := r.DR.BulkWrite(ctx, ns, writes)
	if err != nil {
		return res, err
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range writes {
		if v, ok := w.Doc.Lookup("seq").Int64OK(); ok && w.Kind == apply.ReplaceOne {
			if _, dup := r.seen[v]; !dup {
				r.seen[v] = now
			}
		}
	}
	return res, nil
}

func (r *lagRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// lag writes at a steady rate while capture runs on its schedule and apply through the event
// source mapping, and measures each write's delay until DR has it.
func (b *bench) lag(ctx context.Context, mode lagMode) error {
	c := b.cfg
	rec := &lagRecorder{seen: map[int64]time.Time{}}
	st, p, err := b.benchStack(ctx, "lag", map[string]string{
		"MAX_AWAIT":        c.maxAwait.String(),
		"IDLE_TIMEOUT":     c.idleTimeout.String(),
		"CONTINUOUS_DRAIN": mode.drain.String(),
		"DEADLINE_MARGIN":  c.deadlineMargin.String(),
	}, localrun.Options{
		CaptureInterval: c.schedule,
		CaptureTimeout:  c.captureTimeout,
		Hooks:           localrun.Hooks{DR: func(d apply.DR) apply.DR { rec.DR = d; return rec }},
	})
	if err != nil {
		return err
	}
	defer st.Close()
	defer p.Close()

	due := c.writeTimes(mode.bursty)
	total := len(due)
	pattern := "steadily"
	if mode.bursty {
		pattern = fmt.Sprintf("in bursts of %s every %s", c.burstOn, c.burstPeriod)
	}
	fmt.Fprintf(b.out, "# lag run %s: %d writes at %d/s %s, schedule %s, timeout %s, CONTINUOUS_DRAIN %s, IDLE_TIMEOUT %s\n",
		mode.name, total, c.rate, pattern, c.schedule, c.captureTimeout, mode.drain, c.idleTimeout)
	coll := p.Primary().Database("bench").Collection("lag")
	p.Start(ctx)
	t0 := time.Now()
	acked := make([]time.Time, total)
	for i := range total {
		if d := time.Until(t0.Add(due[i])); d > 0 {
			time.Sleep(d)
		}
		if _, err := coll.InsertOne(ctx, benchDoc(i)); err != nil {
			return fmt.Errorf("lag run write %d: %w", i, err)
		}
		acked[i] = time.Now()
	}
	// Everything written is in DR within two schedule periods plus the batching window, unless
	// something is wrong.
	wait := 2*c.schedule + c.captureTimeout + 10*time.Second
	_ = waitUntil(ctx, wait, "DR to hold every write", func(context.Context) (bool, error) { return rec.count() >= total, nil })
	p.Stop()

	run := lagRun{mode: mode}
	rec.mu.Lock()
	for i, at := range acked {
		inDR, ok := rec.seen[int64(i)]
		if !ok {
			run.missing++
			continue
		}
		run.written = append(run.written, at.Sub(t0))
		run.lag = append(run.lag, inDR.Sub(at))
	}
	rec.mu.Unlock()
	if run.missing > 0 {
		return fmt.Errorf("lag run %s: %d of %d writes never reached DR within %s", mode.name, run.missing, total, wait)
	}
	b.lags = append(b.lags, run)
	sorted := slices.Clone(run.lag)
	slices.Sort(sorted)
	b.put("lag_"+mode.name+"_p50", ms(percentile(sorted, 0.50)), "ms", "")
	b.put("lag_"+mode.name+"_p99", ms(percentile(sorted, 0.99)), "ms", "")
	b.put("lag_"+mode.name+"_max", ms(sorted[len(sorted)-1]), "ms", "")
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// write writes report.md and lag.svg into the output directory.
func (b *bench) write() error {
	if err := os.MkdirAll(b.cfg.out, 0o755); err != nil {
		return fmt.Errorf("bench output: %w", err)
	}
	charts := map[string]string{
		"lag.svg":        lagChart("End-to-end lag, steady writes (worst per 250 ms of writes)", b.runs(false)),
		"lag-bursty.svg": lagChart("End-to-end lag, bursts of writes (worst per 250 ms of writes)", b.runs(true)),
	}
	for name, svg := range charts {
		if err := os.WriteFile(filepath.Join(b.cfg.out, name), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("bench output: %w", err)
		}
	}
	report := b.report()
	path := filepath.Join(b.cfg.out, "report.md")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		return fmt.Errorf("bench output: %w", err)
	}
	fmt.Fprintf(b.out, "# wrote %s, lag.svg and lag-bursty.svg in %s\n", path, time.Since(b.started).Round(time.Second))
	return nil
}

// runs returns the lag runs with the given write pattern.
func (b *bench) runs(bursty bool) []lagRun {
	var out []lagRun
	for _, r := range b.lags {
		if r.mode.bursty == bursty {
			out = append(out, r)
		}
	}
	return out
}

func (b *bench) report() string {
	c := b.cfg
	var s strings.Builder
	fmt.Fprintf(&s, "# docdb-dr benchmark\n\nGenerated by `docdbdr bench` (`make bench`) on %s, %s, on the embedded local stack\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), hostInfo())
	s.WriteString("(Mongo-wire servers, kfake Kafka and gofakes3 S3 in one process on loopback). The absolute numbers are\n")
	s.WriteString("those of that stack on this machine, not of DocumentDB and MSK; the ratios compare approaches on equal terms.\n\n")
	s.WriteString("| figure | value | how |\n|---|---|---|\n")
	for _, f := range b.figures {
		fmt.Fprintf(&s, "| `%s` | %s | %s |\n", f.name, f.value, f.note)
	}
	fmt.Fprintf(&s, `
## Settings

- Throughput: %d documents of about 300 bytes loaded into the primary, then captured by one invocation
  (MAX_EVENTS = N) and applied by the local event source mapping (batch size %d, window %s).
- Raw drain: the Go driver reading the same change stream from the same resume token, with
  fullDocument updateLookup, doing nothing with the events.
- Original capture: for each event, the document flattened to a JSON string, then a new producer,
  one send, a flush (a synchronous send) and a close, as the original write-up does (%d events).
- Raw bulk write: insertMany of the same documents, 1000 per command, into an empty collection.
  Original apply: one insertOne per record (%d records).
- Lag: %d writes/s, one insertOne at a time, for %s: steadily, and (bursty runs) only during the
  first %s of every %s. Lag is from the primary's acknowledgement of a write to the return of the
  DR bulk write holding the document. Capture runs every %s with a %s timeout (DEADLINE_MARGIN %s,
  MAX_AWAIT %s, IDLE_TIMEOUT %s): AWS's 1-minute schedule and 60 s timeout scaled down.
  CONTINUOUS_DRAIN is 0 (off) or %s (on).

## Lag over time

![lag, steady writes](lag.svg)

![lag, bursts of writes](lag-bursty.svg)

Each line is the worst lag among the writes of each 250 ms, by when they were written.

- Steady writes never leave the stream idle, so with CONTINUOUS_DRAIN off an invocation reads until
  its deadline (timeout minus DEADLINE_MARGIN) and with it on until the drain time; the saw-tooth is
  the gap until the next scheduled invocation, a little longer with the drain on (it stops earlier).
- With bursts, an invocation without CONTINUOUS_DRAIN ends IDLE_TIMEOUT after a burst, and the next
  burst waits for the next scheduled invocation; with it, the invocation is still reading when the
  next burst comes.
`, c.events, c.batchSize, c.batchingWindow, c.originalCapture, c.originalApply, c.rate, c.duration, c.burstOn,
		c.burstPeriod, c.schedule, c.captureTimeout, c.deadlineMargin, c.maxAwait, c.idleTimeout, c.drain)
	return s.String()
}

func hostInfo() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("host %s", host)
}

// lagChart draws the lag runs as an SVG line chart: x is when a write was made (seconds since the
// run started), y the worst lag among the writes of each 250 ms bucket (milliseconds).
func lagChart(title string, runs []lagRun) string {
	const (
		width, height          = 900, 420
		left, right, top, bott = 70, 20, 40, 50
		bucket                 = 250 * time.Millisecond
	)
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"}
	type point struct{ x, y float64 }
	// Each run is drawn as segments of consecutive buckets: no line across a pause in the writes.
	series := make([][][]point, len(runs))
	maxX, maxY := 1.0, 1.0
	for i, r := range runs {
		worst := map[int]time.Duration{}
		last := 0
		for j, w := range r.written {
			k := int(w / bucket)
			worst[k] = max(worst[k], r.lag[j])
			last = max(last, k)
		}
		var seg []point
		for k := 0; k <= last+1; k++ {
			v, ok := worst[k]
			if !ok {
				if len(seg) > 0 {
					series[i] = append(series[i], seg)
					seg = nil
				}
				continue
			}
			p := point{float64(k) * bucket.Seconds(), ms(v)}
			seg = append(seg, p)
			maxX, maxY = math.Max(maxX, p.x), math.Max(maxY, p.y)
		}
	}
	maxY = niceCeil(maxY)
	maxX = math.Ceil(maxX)
	px := func(x float64) float64 { return left + x/maxX*(width-left-right) }
	py := func(y float64) float64 { return height - bott - y/maxY*(height-top-bott) }

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&s, `<text x="%d" y="20" font-size="14">%s</text>`+"\n", left, title)
	for i := 0; i <= 5; i++ {
		y := maxY * float64(i) / 5
		fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, width-right, py(y), py(y))
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, py(y)+4, y)
	}
	step := math.Max(1, math.Ceil(maxX/10))
	for x := 0.0; x <= maxX; x += step {
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", px(x), height-bott+16, x)
	}
	fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, width-right, height-bott, height-bott)
	fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, left, top, height-bott)
	fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle">seconds since the first write</text>`+"\n", (width+left)/2, height-12)
	fmt.Fprintf(&s, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">lag (ms)</text>`+"\n", (height)/2, height/2)
	for i, segs := range series {
		color := colors[i%len(colors)]
		for _, seg := range segs {
			var path strings.Builder
			for _, p := range seg {
				fmt.Fprintf(&path, "%.1f,%.1f ", px(p.x), py(p.y))
			}
			if len(seg) == 1 { // a lone bucket: a short flat stroke
				fmt.Fprintf(&path, "%.1f,%.1f", px(seg[0].x+bucket.Seconds()/2), py(seg[0].y))
			}
			fmt.Fprintf(&s, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.TrimSpace(path.String()))
		}
		label := runs[i].mode.label()
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			width-right-220, top+8+i*18, color, width-right-202, top+13+i*18, label)
	}
	s.WriteString("</svg>\n")
	return s.String()
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
