package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressFunc reports how many of the items a long command handles are done.
type progressFunc func(done, total int64)

// newProgress is a progress bar on w (documents done of total, rate, ETA) when w is a terminal,
// and nothing otherwise (logs and pipes stay quiet). finish ends the bar's line.
func newProgress(w io.Writer, label string) (update progressFunc, finish func()) {
	return progressOn(w, isTerminal(w), label)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func progressOn(w io.Writer, tty bool, label string) (progressFunc, func()) {
	if !tty {
		return func(int64, int64) {}, func() {}
	}
	var bar *progressbar.ProgressBar
	update := func(done, total int64) {
		if bar == nil {
			bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(label),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("docs"),
				progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetRenderBlankState(true))
		}
		_ = bar.Set64(done)
	}
	finish := func() {
		if bar != nil {
			_ = bar.Finish()
			fmt.Fprintln(w)
		}
	}
	return update, finish
}
