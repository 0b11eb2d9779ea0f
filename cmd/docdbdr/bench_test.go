package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		"--events", "300", "--original-capture", "10", "--original-apply", "50", "--batching-window", "100ms",
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
		"capture_throughput", "raw_drain_throughput", "capture_vs_raw_drain", "original_capture_throughput", "capture_vs_original",
		"apply_throughput", "raw_bulk_write_throughput", "apply_vs_raw_bulk_write", "original_apply_throughput", "apply_vs_original",
		"lag_drain_off_p50", "lag_drain_off_p99", "lag_drain_on_p50", "lag_drain_on_p99", "lag_bursty_drain_off_p99", "lag_bursty_drain_on_p99",
	} {
		if !strings.Contains(stdout.String(), "\n"+name+": ") {
			t.Errorf("stdout has no %q line", name)
		}
		if !strings.Contains(string(report), "`"+name+"`") {
			t.Errorf("report.md has no %s row", name)
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
	if code := run(context.Background(), []string{"bench", "--events", "0"}, io.Discard, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
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
