// Package lagchart draws end-to-end lag runs as an SVG line chart, for docdbdr bench's report.
package lagchart

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Run is one lag run: when each write was made (since the run started) and its lag, index by
// index, and the run's name in the legend.
type Run struct {
	Label   string
	Written []time.Duration
	Lag     []time.Duration
}

// SVG draws the lag runs as an SVG line chart: x is when a write was made (seconds since the
// run started), y the worst lag among the writes of each 250 ms bucket (milliseconds).
func SVG(title string, runs []Run) string {
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
		for j, w := range r.Written {
			k := int(w / bucket)
			worst[k] = max(worst[k], r.Lag[j])
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
			p := point{float64(k) * bucket.Seconds(), float64(v) / float64(time.Millisecond)}
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
		label := runs[i].Label
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
