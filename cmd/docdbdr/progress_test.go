package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestProgress: a bar with count, rate and ETA on a terminal; nothing on a pipe or a file.
func TestProgress(t *testing.T) {
	for _, tty := range []bool{false, true} {
		var out bytes.Buffer
		update, finish := progressOn(&out, tty, "restore bar.foo")
		for i := int64(0); i <= 3; i++ {
			update(i, 3)
		}
		finish()
		got := out.String()
		if !tty && got != "" {
			t.Errorf("not a terminal: printed %q", got)
		}
		if tty && (!strings.Contains(got, "restore bar.foo") || !strings.Contains(got, "3/3") || !strings.Contains(got, "docs")) {
			t.Errorf("terminal: printed %q, want the label, 3/3 and a rate in docs", got)
		}
	}
	if isTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
}
