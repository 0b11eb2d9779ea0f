package lambdarun

import (
	"os"
	"strings"
	"testing"
)

func TestParseVmHWM(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int64
		wantErr      string
	}{
		{name: "a process", status: "Name:\tbootstrap\nVmPeak:\t 1265932 kB\nVmHWM:\t   91236 kB\nVmRSS:\t   40020 kB\n", want: 91236 * 1024},
		{name: "last line without newline", status: "VmRSS:\t 1 kB\nVmHWM:\t 2 kB", want: 2048},
		{name: "kernel thread", status: "Name:\tkthreadd\nState:\tS (sleeping)\n", wantErr: "no VmHWM line"},
		{name: "not kB", status: "VmHWM:\t 2 MB\n", wantErr: "not in kB"},
		{name: "not a number", status: "VmHWM:\t many kB\n", wantErr: "invalid syntax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVmHWM([]byte(tc.status))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("%d bytes (%v), want %d", got, err, tc.want)
			}
		})
	}
}

// TestPeakRSS: this process has a peak RSS; a process that does not exist has none, and the
// error says why.
func TestPeakRSS(t *testing.T) {
	if rss, err := readPeakRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("this process: %d bytes, %v", rss, err)
	}
	if _, err := readPeakRSS(1 << 30); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a pid that does not exist: %v", err)
	}
}
