package lagchart

import (
	"strings"
	"testing"
	"time"
)

func TestSVG(t *testing.T) {
	ms := time.Millisecond
	runs := []Run{
		// Writes at 0 s and 0.1 s (one bucket, the worst lag 300 ms), then a pause, then 2 s.
		{Label: "steady", Written: []time.Duration{0, 100 * ms, 2000 * ms}, Lag: []time.Duration{200 * ms, 300 * ms, 50 * ms}},
		{Label: "bursty", Written: []time.Duration{0}, Lag: []time.Duration{700 * ms}},
	}
	svg := SVG("lag", runs)
	for _, want := range []string{
		`<text x="70" y="20" font-size="14">lag</text>`,
		`>steady</text>`, `>bursty</text>`,
		`stroke="#d62728"`, `stroke="#1f77b4"`,
		`>1000</text>`, // the y axis tops at niceCeil(700) = 1000 ms
	} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %s:\n%s", want, svg)
		}
	}
	// The pause splits the steady run into two polylines; the bursty run is one lone bucket.
	if n := strings.Count(svg, "<polyline"); n != 3 {
		t.Errorf("%d polylines, want 3 (two segments of the steady run, one of the bursty run):\n%s", n, svg)
	}
	if !strings.HasPrefix(svg, "<svg ") || !strings.HasSuffix(svg, "</svg>\n") {
		t.Errorf("not one SVG document:\n%s", svg)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{1, 1}, {1.5, 2}, {3, 5}, {7, 10}, {10, 10}, {11, 20}, {0.3, 0.5}, {2500, 5000}} {
		if got := niceCeil(tc.in); got != tc.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
