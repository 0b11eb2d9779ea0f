package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestBenchSmall runs the bench with tiny sizes and checks every figure is printed and the
// report and charts are written.
func TestBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts embedded stacks")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"bench",
		"--sizes", "300,600", "--rounds", "3", "--batching-window", "100ms",
		"--rate", "100", "--duration", "2s", "--schedule", "1s", "--capture-timeout", "1s", "--deadline-margin", "200ms",
		"--continuous-drain", "700ms", "--idle-timeout", "300ms", "--max-await", "100ms", "--burst", "300ms", "--burst-period", "1s",
		"--out", out,
	}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"capture_vs_raw_relay", "apply_vs_raw_upsert", "capture_cpu_us_per_event", "apply_cpu_us_per_event",
		"capture_vs_raw_relay_300", "capture_vs_raw_relay_600", "apply_vs_raw_upsert_600", "raw_relay_throughput_600",
		"raw_upsert_throughput_600", "raw_relay_cpu_us_per_event_600", "raw_upsert_cpu_us_per_event_600",
		"lag_drain_off_p50", "lag_drain_off_p99", "lag_drain_on_p50", "lag_drain_on_p99", "lag_bursty_drain_off_p99", "lag_bursty_drain_on_p99",
	} {
		if !strings.Contains(stdout.String(), "\n"+name+": ") {
			t.Errorf("stdout has no %q line", name)
		}
		if !strings.Contains(string(report), "`"+name+"`") {
			t.Errorf("report.md has no %s row", name)
		}
	}
	// Every spread figure says its rounds; the report names what the figures come from.
	if !strings.Contains(stdout.String(), "\ncapture_vs_raw_relay: ") || !strings.Contains(stdout.String(), "; 3 rounds)") {
		t.Errorf("no headline figure with its spread:\n%s", stdout.String())
	}
	for _, want := range []string{"- commit: ", "- go: go1.", "- cpu: ", "- load average before: ", "- load average after: "} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md has no %q line:\n%s", want, report)
		}
	}
	for _, chart := range []string{"lag.svg", "lag-bursty.svg"} {
		svg, err := os.ReadFile(filepath.Join(out, chart))
		if err != nil {
			t.Fatal(err)
		}
		for _, color := range []string{"#d62728", "#1f77b4"} { // one series per CONTINUOUS_DRAIN setting
			if !strings.Contains(string(svg), `<polyline fill="none" stroke="`+color) {
				t.Errorf("%s has no %s series:\n%s", chart, color, svg)
			}
		}
		if !strings.HasSuffix(strings.TrimSpace(string(svg)), "</svg>") {
			t.Errorf("%s is not a complete SVG", chart)
		}
	}
}

func TestBenchRejectsBadSizes(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{{"--sizes", "0"}, {"--sizes", "10,x"}, {"--rounds", "0"}} {
		if code := run(context.Background(), append([]string{"bench"}, args...), io.Discard, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]time.Duration{0.5: 5, 0.99: 10, 0.1: 1, 1: 10} {
		if got := percentile(d, q); got != want {
			t.Errorf("percentile(%v) = %v, want %v", q, got, want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}

func TestSpreadAndRatios(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want spread
	}{
		{[]float64{3, 1, 2}, spread{1, 2, 3}},
		{[]float64{4, 1, 3, 2}, spread{1, 2.5, 4}},
		{[]float64{7}, spread{7, 7, 7}},
	} {
		if got := spreadOf(tc.xs); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.xs, got, tc.want)
		}
	}
	// A ratio is product throughput over baseline throughput, within one round.
	p := pairStats{
		product:  []sample{{wall: 2 * time.Second}, {wall: time.Second}},
		baseline: []sample{{wall: time.Second}, {wall: time.Second}},
	}
	if got := p.ratios(); got[0] != 0.5 || got[1] != 1 {
		t.Errorf("ratios = %v, want [0.5 1]", got)
	}
	if got := cpuPerEvent([]sample{{cpu: 3 * time.Millisecond}}, 1000); got[0] != 3 {
		t.Errorf("cpuPerEvent = %v µs, want 3", got)
	}
}

func TestWarnLoad(t *testing.T) {
	cores := runtime.NumCPU()
	for _, tc := range []struct {
		load string
		warn bool
	}{
		{fmt.Sprintf("%d.50 1.00 1.00", cores), true},
		{fmt.Sprintf("%d.00 9.00 9.00", cores), false}, // the 1-minute figure decides; equal is not above
		{"0.10 0.20 0.30", false},
		{"", false},
	} {
		var out bytes.Buffer
		b := &bench{out: &out}
		b.warnLoad("before the run", tc.load)
		if got := len(b.warnings) == 1 && strings.Contains(out.String(), "WARNING"); got != tc.warn {
			t.Errorf("load %q: warned %v, want %v (%q)", tc.load, got, tc.warn, out.String())
		}
	}
}

// TestLaterClusterTime checks the bench's rewrite of a record's cluster time: only the seconds
// move, every other byte stays.
func TestLaterClusterTime(t *testing.T) {
	ev := changeevent.Event{Version: changeevent.FormatVersion, Operation: changeevent.Insert,
		NS:           changeevent.Namespace{DB: "bench", Coll: "events"},
		DocumentKey:  bson.Raw(bsoncore.NewDocumentBuilder().AppendInt32("_id", 7).Build()),
		FullDocument: bson.Raw(bsoncore.NewDocumentBuilder().AppendInt32("_id", 7).AppendString("s", "x").Build()),
		ResumeToken:  bson.Raw(bsoncore.NewDocumentBuilder().AppendString("_data", "8200").Build()),
		ClusterTime:  primitive.Timestamp{T: 1_700_000_000, I: 3}}
	value, err := changeevent.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	later, err := laterClusterTime(base64.StdEncoding.EncodeToString(value), 2_000_000)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(later)
	got, err := changeevent.Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := (primitive.Timestamp{T: 1_702_000_000, I: 3}); got.ClusterTime != want {
		t.Errorf("cluster time %v, want %v", got.ClusterTime, want)
	}
	got.ClusterTime = ev.ClusterTime
	back, _ := changeevent.Marshal(&got)
	if !bytes.Equal(back, value) {
		t.Error("bytes other than the cluster time's changed")
	}
	if _, err := laterClusterTime(base64.StdEncoding.EncodeToString(bsoncore.NewDocumentBuilder().AppendInt32("v", 1).Build()), 1); err == nil {
		t.Error("a record without clusterTime was rewritten")
	}
}

// TestInterleaveAlternates checks the order of the runs (a warm-up, then A B, B A, A B, ...) and
// that each round pairs the product's sample with the baseline's of the same round.
func TestInterleaveAlternates(t *testing.T) {
	b := &bench{out: io.Discard}
	var order []string
	run := func(side string) func() error {
		return func() error {
			order = append(order, side)
			// The sample says which run it was: its position in the order, in milliseconds.
			b.pending = sample{wall: time.Duration(len(order)) * time.Millisecond}
			return nil
		}
	}
	var got pairStats
	if err := b.interleave(3, run("p"), run("b"), &got); err != nil {
		t.Fatal(err)
	}
	if want := "p b p b b p p b"; strings.Join(order, " ") != want {
		t.Errorf("runs = %q, want %q", strings.Join(order, " "), want)
	}
	ms := func(ss []sample) (out []int) {
		for _, s := range ss {
			out = append(out, int(s.wall/time.Millisecond))
		}
		return out
	}
	if p, bl := ms(got.product), ms(got.baseline); !slices.Equal(p, []int{3, 6, 7}) || !slices.Equal(bl, []int{4, 5, 8}) {
		t.Errorf("product runs %v, baseline runs %v; want [3 6 7] and [4 5 8] (the warm-up dropped)", p, bl)
	}
}
