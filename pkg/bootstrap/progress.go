package bootstrap

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progress counts what the copy has done and prints a one-line summary: documents, bytes, rate
// and estimated time left. On a terminal the line is rewritten in place ("\r"); elsewhere (a log
// file, CI) each report is its own line.
type progress struct {
	label    string
	total    int64 // estimated documents in the scope
	prior    int64 // documents copied by earlier, interrupted runs
	docs     atomic.Int64
	bytes    atomic.Int64
	started  time.Time
	w        io.Writer
	tty      bool
	stop     chan struct{}
	stopped  sync.WaitGroup
	lastLen  int
	writeMux sync.Mutex
}

// isTerminal reports whether w is a character device (an interactive terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newProgress starts reporting to w every interval (w nil: no output, counting only).
func newProgress(w io.Writer, label string, total, prior int64, interval time.Duration) *progress {
	p := &progress{label: label, total: total, prior: prior, started: time.Now(), w: w, stop: make(chan struct{})}
	if w == nil {
		return p
	}
	p.tty = isTerminal(w)
	if interval <= 0 {
		interval = 10 * time.Second
		if p.tty {
			interval = time.Second
		}
	}
	p.stopped.Add(1)
	go func() {
		defer p.stopped.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print(false)
			}
		}
	}()
	return p
}

// add counts one written batch.
func (p *progress) add(docs, bytes int64) {
	p.docs.Add(docs)
	p.bytes.Add(bytes)
}

// finish stops the periodic reports and prints the final line.
func (p *progress) finish() {
	if p.w == nil {
		return
	}
	close(p.stop)
	p.stopped.Wait()
	p.print(true)
}

// line renders the current state, e.g.
// "bootstrap bar: 45,000/100,000 docs (45.0%), 12.3 MB, 15,000 docs/s, ETA 4s".
func (p *progress) line() string {
	docs, bytes := p.docs.Load(), p.bytes.Load()
	elapsed := time.Since(p.started)
	done := p.prior + docs
	s := fmt.Sprintf("bootstrap %s: %s", p.label, groupDigits(done))
	if p.total > 0 {
		pct := 100 * float64(done) / float64(p.total)
		s += fmt.Sprintf("/%s docs (%.1f%%)", groupDigits(p.total), min(pct, 100))
	} else {
		s += " docs"
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(docs) / elapsed.Seconds()
	}
	s += fmt.Sprintf(", %s, %s docs/s (%s/s)", humanBytes(bytes), groupDigits(int64(rate)),
		humanBytes(int64(float64(bytes)/max(elapsed.Seconds(), 1e-9))))
	if left := p.total - done; left > 0 && rate > 0 {
		s += ", ETA " + time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second).String()
	}
	return s + ", elapsed " + elapsed.Round(time.Second).String()
}

func (p *progress) print(final bool) {
	p.writeMux.Lock()
	defer p.writeMux.Unlock()
	l := p.line()
	if !p.tty {
		fmt.Fprintln(p.w, l)
		return
	}
	pad := ""
	if n := p.lastLen - len(l); n > 0 {
		pad = fmt.Sprintf("%*s", n, "")
	}
	p.lastLen = len(l)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprint(p.w, "\r"+l+pad+end)
}

// groupDigits renders n with thousands separators: 1234567 → "1,234,567".
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	neg := ""
	if n < 0 {
		neg, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return neg + s
}

// humanBytes renders a byte count with a binary unit: 1536 → "1.5 KiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
