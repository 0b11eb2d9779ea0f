package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/lagchart"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/internal/workload"
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
	sizes          []int // events captured and applied for the throughput figures, one stack each
	rounds         int   // interleaved product/baseline rounds per pair, after a warm-up
	batchSize      int   // event source mapping batch size
	batchingWindow time.Duration
	lagRuns        bool // also measure end-to-end lag

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

// runBench measures, on fresh embedded stacks: capture against raw relay and apply against raw
// upsert, the physical limit of the same work, in interleaved rounds at each size (benchrounds.go);
// and end-to-end lag at a steady and a bursty write rate with CONTINUOUS_DRAIN off and on. It
// prints `name: value` lines (a value with its min/median/max) and writes <out>/report.md and the
// lag charts.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c benchConfig
	fs := newFlagSet("bench", stderr)
	sizes := fs.String("sizes", "10000,100000", "comma-separated event counts for the throughput figures (one fresh stack each)")
	fs.IntVar(&c.rounds, "rounds", 5, "interleaved rounds of each product/baseline pair (after one warm-up)")
	fs.BoolVar(&c.lagRuns, "lag", true, "also measure end-to-end lag")
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
	fs.StringVar(&c.out, "out", "build/bench", "directory for report.md and the lag charts (git-ignored; make bench-report writes bench/)")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "error"), "debug, info, warn or error (logs go to stderr)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the throughput rounds (all sizes) to this file (go tool pprof)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr bench [flags]

Measures capture against raw relay and apply against raw upsert (the same work done as directly as
the driver and sarama allow), in interleaved rounds, and end-to-end lag, on the embedded local stack
(always; it never uses the services named by the environment). Prints one "name: value" line per
figure (median, with min and max) and writes <out>/report.md and the lag charts.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "--sizes: %q is not a positive event count\n", f)
			return errUsage
		}
		c.sizes = append(c.sizes, n)
	}
	if c.rounds < 1 || c.batchSize < 1 || c.rate < 1 || c.duration <= 0 || c.burstOn <= 0 || c.burstPeriod < c.burstOn {
		fmt.Fprintln(stderr, "rounds, sizes, rate and durations must be positive, and --burst-period at least --burst")
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	b := &bench{cfg: c, args: args, out: stdout, log: log, started: time.Now(), loadBefore: loadAvg()}
	b.printHost()
	b.warnLoad("before the run", b.loadBefore)
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	for _, n := range c.sizes {
		if err := b.throughputAt(ctx, n); err != nil {
			stopProfile()
			return fmt.Errorf("throughput at %d events: %w", n, err)
		}
	}
	if err := stopProfile(); err != nil {
		return err
	}
	b.headline()
	var modes []lagMode
	if c.lagRuns {
		modes = append(modes, lagMode{"drain_off", 0, false}, lagMode{"drain_on", c.drain, false})
	}
	if c.lagRuns && c.bursty {
		modes = append(modes, lagMode{"bursty_drain_off", 0, true}, lagMode{"bursty_drain_on", c.drain, true})
	}
	for _, mode := range modes {
		if err := b.lag(ctx, mode); err != nil {
			return err
		}
	}
	b.loadAfter = loadAvg()
	fmt.Fprintf(b.out, "load_after: %s\n", b.loadAfter)
	b.warnLoad("after the run", b.loadAfter)
	return b.write()
}

// startCPUProfile starts a CPU profile into path ("" profiles nothing) and returns the function
// that stops it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		return nil
	}, nil
}

// bench collects the figures as it measures them.
type bench struct {
	cfg     benchConfig
	args    []string
	out     io.Writer
	log     *slog.Logger
	started time.Time
	figures []figure
	lags    []lagRun

	pending    sample // the latest measured run (see interleave)
	sizes      []sizeFigures
	loadBefore string
	loadAfter  string
	warnings   []string
	hostInfo   [][2]string // see host
}

// sizeFigures are the throughput pairs measured at one size.
type sizeFigures struct {
	n       int
	capture pairStats
	apply   pairStats
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
func (b *bench) benchStack(ctx context.Context, coll string, do devstack.Options, env map[string]string, opts localrun.Options) (*devstack.Stack, *localrun.Pipeline, error) {
	do.Logger = b.log.With("component", "devstack")
	st, err := devstack.Start(ctx, do)
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
	st, p, err := b.benchStack(ctx, "lag", devstack.Options{}, map[string]string{
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
		if _, err := coll.InsertOne(ctx, workload.Order(i)); err != nil {
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
	charts := map[string]string{}
	if len(b.lags) > 0 {
		charts["lag.svg"] = lagchart.SVG("End-to-end lag, steady writes (worst per 250 ms of writes)", b.runs(false))
		charts["lag-bursty.svg"] = lagchart.SVG("End-to-end lag, bursts of writes (worst per 250 ms of writes)", b.runs(true))
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
	fmt.Fprintf(b.out, "# wrote %s (and %d charts) in %s\n", path, len(charts), time.Since(b.started).Round(time.Second))
	return nil
}

// runs returns the lag runs with the given write pattern, for the chart.
func (b *bench) runs(bursty bool) []lagchart.Run {
	var out []lagchart.Run
	for _, r := range b.lags {
		if r.mode.bursty == bursty {
			out = append(out, lagchart.Run{Label: r.mode.label(), Written: r.written, Lag: r.lag})
		}
	}
	return out
}

func (b *bench) report() string {
	c := b.cfg
	var s strings.Builder
	fmt.Fprintf(&s, "# docdb-dr benchmark\n\nGenerated by `docdbdr bench %s` on %s, on the embedded local stack\n",
		strings.Join(b.args, " "), time.Now().UTC().Format("2006-01-02 15:04 MST"))
	s.WriteString("(Mongo-wire servers, kfake Kafka and gofakes3 S3 in one process on loopback). The absolute numbers are\n")
	s.WriteString("those of that stack on this machine, not of DocumentDB and MSK; the ratios compare the product with the\n")
	s.WriteString("physical limit of the same work, measured in the same run, interleaved.\n\n")
	for _, h := range b.host() {
		fmt.Fprintf(&s, "- %s: %s\n", h[0], h[1])
	}
	fmt.Fprintf(&s, "- load average after: %s\n", b.loadAfter)
	for _, w := range b.warnings {
		fmt.Fprintf(&s, "- **WARNING**: %s\n", w)
	}
	s.WriteString("\n| figure | value | how |\n|---|---|---|\n")
	for _, f := range b.figures {
		fmt.Fprintf(&s, "| `%s` | %s | %s |\n", f.name, f.value, f.note)
	}
	fmt.Fprintf(&s, `
## Settings

- Throughput, at each size N (%s), on a fresh stack: N documents of about 300 bytes loaded into the
  primary; then one warm-up and %d rounds of each pair, the product first in odd rounds and the
  baseline first in even ones. Figures are the median of the rounds, with min and max; a ratio is
  taken within one round.
- Capture: one invocation from the same resume token (the checkpoint is reset before each round),
  MAX_EVENTS = N, MAX_AWAIT 100ms: drain, convert, publish, wait for every acknowledgement,
  checkpoint.
- Raw relay: capture's stream opener (the driver, fullDocument updateLookup, the same MAX_AWAIT)
  from the same token; each event's bytes, copied once out of the driver's buffer, produced
  unchanged (key: its documentKey bytes) to the same topic by one long-lived sarama AsyncProducer
  with capture's configuration (kafka.SaramaConfig: idempotent, acks=all, the same compression,
  partitioner and flush settings), until Kafka acknowledged all N.
- Apply: the N events as capture publishes them (changeevent.Marshal, Key, Headers), hashed to the
  topic's 3 partitions, in MSK-shaped batches of %d records (base64 keys and values), given to the
  in-process apply function; each round's offsets and cluster times follow the previous round's,
  so the batches are new changes to apply, not a redelivery or a republished copy.
- Raw upsert: the same batches; each value base64-decoded, its fullDocument and documentKey._id
  read in place (bsoncore), written to the same DR namespace as ordered replaceOne upserts,
  MAX_BULK_OPS per command and never across a batch.
- Each run of either side starts on an empty DR collection (dropped outside the timing): both
  insert N new documents. The topic's records are deleted after every run of the capture pair,
  and the DR server keeps only its last %d changes: the broker's messages and DR's history
  would otherwise grow this process's heap by N per run.
- CPU per event: the process's user+sys time (getrusage) over the run ÷ N. The embedded servers
  and broker run in the same process, so it includes their work, alike for both sides of a pair.
- Lag: %d writes/s, one insertOne at a time, for %s: steadily, and (bursty runs) only during the
  first %s of every %s. Lag is from the primary's acknowledgement of a write to the return of the
  DR bulk write holding the document. Capture runs every %s with a %s timeout (DEADLINE_MARGIN %s,
  MAX_AWAIT %s, IDLE_TIMEOUT %s): AWS's 1-minute schedule and 60 s timeout scaled down.
  CONTINUOUS_DRAIN is 0 (off) or %s (on). Each lag run is one run (no rounds).
`, joinInts(c.sizes), c.rounds, c.batchSize, benchDROplog, c.rate, c.duration, c.burstOn,
		c.burstPeriod, c.schedule, c.captureTimeout, c.deadlineMargin, c.maxAwait, c.idleTimeout, c.drain)
	if len(b.lags) > 0 {
		s.WriteString(`
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
`)
	}
	return s.String()
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ", ")
}

// host describes the machine and build the figures come from, as they were when the run started
// (the run's own output files would otherwise make the checkout look modified).
func (b *bench) host() [][2]string {
	if b.hostInfo == nil {
		b.hostInfo = describeHost(b.loadBefore)
	}
	return b.hostInfo
}

func describeHost(loadBefore string) [][2]string {
	host, _ := os.Hostname()
	return [][2]string{
		{"commit", gitCommit()},
		{"go", runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH},
		{"host", host},
		{"cpu", fmt.Sprintf("%s, %d cores (GOMAXPROCS %d)", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0))},
		{"load average before", loadBefore},
	}
}

// printHost prints the host description as comment lines.
func (b *bench) printHost() {
	for _, h := range b.host() {
		fmt.Fprintf(b.out, "# %s: %s\n", h[0], h[1])
	}
}

// headline prints the headline figures unsuffixed: those at the largest size.
func (b *bench) headline() {
	if len(b.sizes) == 0 {
		return
	}
	last := b.sizes[0]
	for _, sz := range b.sizes {
		if sz.n > last.n {
			last = sz
		}
	}
	note := fmt.Sprintf("at %d events (the largest size)", last.n)
	b.putSpread("capture_vs_raw_relay", last.capture.ratios(), "", note)
	b.putSpread("apply_vs_raw_upsert", last.apply.ratios(), "", note)
	b.putSpread("capture_cpu_us_per_event", cpuPerEvent(last.capture.product, last.n), "µs", note)
	b.putSpread("apply_cpu_us_per_event", cpuPerEvent(last.apply.product, last.n), "µs", note)
}

// buildCommit, when set at build time (-ldflags "-X main.buildCommit=..."), names the commit of a
// binary built outside a checkout (a before/after comparison of two builds).
var buildCommit string

// gitCommit is the checkout's commit, marked "+dirty" with uncommitted changes.
func gitCommit() string {
	if buildCommit != "" {
		return buildCommit
	}
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += "+dirty"
	}
	return c
}

// cpuModel is /proc/cpuinfo's first model name.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown cpu"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown cpu"
}
