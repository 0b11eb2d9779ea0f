package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

func init() {
	register(command{
		name:    "run",
		summary: "run capture and apply continuously on this machine (the devstack or real services) until Ctrl-C",
		run:     runRun,
	})
}

// runDefaults are the capture settings of a long-lived local run, used where the environment
// sets none: each capture invocation drains the stream continuously for most of its timeout.
var runDefaults = map[string]string{
	"CONTINUOUS_DRAIN": "45s",
	"MAX_AWAIT":        "200ms",
}

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	interval := fs.Duration("capture-interval", time.Second, "capture schedule: an invocation starts this often, or as soon as the previous one ends")
	timeout := fs.Duration("capture-timeout", localrun.DefaultCaptureTimeout, "one capture invocation's timeout (the Lambda timeout; CONTINUOUS_DRAIN must end DEADLINE_MARGIN before it)")
	batchSize := fs.Int("batch-size", 100, "most Kafka records in one apply batch (the event source mapping's BatchSize)")
	window := fs.Duration("batching-window", 100*time.Millisecond, "longest an apply batch waits for more records (MaximumBatchingWindowInSeconds)")
	group := fs.String("group", localrun.DefaultGroupID, "apply's Kafka consumer group")
	asJSON := fs.Bool("json", false, "print the per-batch lines as JSON objects (durations in seconds)")
	logLevel := fs.String("log-level", "warn", "level of the functions' JSON logs on stderr (the summary lines go to stdout)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr run [flags]

Runs the capture and apply functions on this machine, built by the same constructors as the
Lambda functions (capture.NewFunction, apply.NewFunction) from the same variables (see
docs/configuration.md): capture on a schedule, each invocation draining the change stream
continuously (CONTINUOUS_DRAIN, default here 45s), and apply behind a Kafka consumer group with
the MSK event source mapping's batching (internal/esm). Point the variables at the devstack
(. DIR/env.sh) or at real clusters, brokers and a bucket. Prints one line per capture invocation
and per apply batch; Ctrl-C or SIGTERM stops it after the invocation in progress (at most 5s).

Unset variables that a long-lived run needs differently from Lambda: `+runDefaultsText()+`.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *interval <= 0 || *timeout <= 0 || *batchSize < 1 || *window < 0 {
		fmt.Fprintln(stderr, "--capture-interval, --capture-timeout and --batch-size must be positive, --batching-window not negative")
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	sum := &runSummaries{w: stdout, json: *asJSON}
	p, err := localrun.New(ctx, localrun.Options{
		Getenv:          localrun.Getenv(nil, nil, runGetenv(os.Getenv)),
		CaptureInterval: *interval,
		CaptureTimeout:  *timeout,
		BatchSize:       *batchSize,
		BatchingWindow:  *window,
		GroupID:         *group,
		Logger:          log,
		OnCapture:       sum.capture,
		OnApply:         sum.apply,
	})
	if err != nil {
		return err
	}
	sc := p.Scope()
	if !*asJSON {
		fmt.Fprintf(stdout, "docdbdr run: capturing %s from %s into %s through topic %s; Ctrl-C stops\n",
			sc, p.CaptureConfig().Primary, p.ApplyConfig().DR, p.ApplyConfig().Topic)
	}
	p.Start(ctx)
	<-ctx.Done()
	if err := p.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	sum.total()
	return nil
}

// runGetenv reads the environment, with runDefaults for what it leaves unset.
func runGetenv(getenv func(string) string) func(string) string {
	return func(name string) string {
		if v := getenv(name); strings.TrimSpace(v) != "" {
			return v
		}
		return runDefaults[name]
	}
}

func runDefaultsText() string {
	var parts []string
	for _, k := range []string{"CONTINUOUS_DRAIN", "MAX_AWAIT"} {
		parts = append(parts, k+"="+runDefaults[k])
	}
	return strings.Join(parts, ", ")
}

// runSummaries prints one line per capture invocation and apply batch. The callbacks come from
// the capture schedule's and the event source mapping's goroutines: a mutex orders the lines.
type runSummaries struct {
	w    io.Writer
	json bool
	mu   sync.Mutex
	// totals
	events, records, applied, archived, captureErrs, applyErrs int
}

func (s *runSummaries) capture(r localrun.CaptureResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sm := r.Summary
	s.events += sm.Events
	// An invocation cut short by the run's own stop (Ctrl-C) lost nothing: not a failure.
	stopped := capture.CutShort(r.Err, sm.CheckpointSaved)
	if r.Err != nil && !stopped {
		s.captureErrs++
	}
	if s.json {
		s.encode(struct {
			Kind     string          `json:"kind"` // "capture"
			Capture  capture.Summary `json:"capture"`
			Duration jsonDuration    `json:"duration"`
			Error    string          `json:"error,omitempty"`
		}{"capture", sm, jsonDuration(r.Ended.Sub(r.Started)), errText(r.Err)})
		return
	}
	line := fmt.Sprintf("capture: %d event(s), %d acknowledged, stopped on %s after %s",
		sm.Events, sm.Acknowledged, sm.StopReason, humanDuration(r.Ended.Sub(r.Started)))
	if sm.LastClusterTime != nil {
		line += ", newest event " + sm.LastClusterTime.Time.UTC().Format(time.RFC3339)
	}
	if sm.DeadLettered > 0 {
		line += fmt.Sprintf(", %d dead-lettered", sm.DeadLettered)
	}
	switch {
	case stopped:
		line += ", cut short by the stop (checkpoint saved)"
	case r.Err != nil:
		line += ", FAILED: " + r.Err.Error()
	}
	fmt.Fprintln(s.w, line)
}

func (s *runSummaries) apply(r localrun.ApplyResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sm := r.Summary
	if r.Err != nil {
		s.applyErrs++
	} else {
		s.records += r.Records
		s.applied += sm.Applied
		s.archived += sm.Archived
	}
	if s.json {
		s.encode(applyLine{Kind: "apply", Records: r.Records, Applied: sm.Applied, Archived: sm.Archived, AlreadyApplied: sm.AlreadyApplied,
			DeadLettered: sm.DeadLettered, MaxLag: jsonDuration(sm.MaxLag), Duration: jsonDuration(r.Ended.Sub(r.Started)), Error: errText(r.Err)})
		return
	}
	line := fmt.Sprintf("apply: batch of %d record(s): %d applied, %d archived, %d already applied, in %s, max lag %s",
		r.Records, sm.Applied, sm.Archived, sm.AlreadyApplied, humanDuration(r.Ended.Sub(r.Started)), humanDuration(sm.MaxLag))
	if sm.DeadLettered > 0 {
		line += fmt.Sprintf(", %d dead-lettered", sm.DeadLettered)
	}
	if r.Err != nil {
		line += ", FAILED (retried): " + r.Err.Error()
	}
	fmt.Fprintln(s.w, line)
}

func (s *runSummaries) total() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.json {
		s.encode(map[string]any{"kind": "total", "events": s.events, "records": s.records, "applied": s.applied, "archived": s.archived,
			"failedCaptures": s.captureErrs, "failedApplyBatches": s.applyErrs})
		return
	}
	fmt.Fprintf(s.w, "docdbdr run: stopped; %d event(s) captured, %d record(s) applied (%d writes, %d archived), %d failed capture invocation(s), %d failed apply batch(es)\n",
		s.events, s.records, s.applied, s.archived, s.captureErrs, s.applyErrs)
}

// applyLine is one apply batch in --json.
type applyLine struct {
	Kind           string       `json:"kind"` // "apply"
	Records        int          `json:"records"`
	Applied        int          `json:"applied"`
	Archived       int          `json:"archived"`
	AlreadyApplied int          `json:"alreadyApplied"`
	DeadLettered   int          `json:"deadLettered"`
	MaxLag         jsonDuration `json:"maxLag"`
	Duration       jsonDuration `json:"duration"`
	Error          string       `json:"error,omitempty"`
}

// encode writes one JSON line; the caller holds s.mu.
func (s *runSummaries) encode(v any) {
	enc := json.NewEncoder(s.w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
