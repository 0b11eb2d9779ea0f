package bootstrap

import (
	"strings"
	"testing"
	"time"
)

func TestProgressFormatting(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {1234567, "1,234,567"}, {-45000, "-45,000"}} {
		if got := groupDigits(tt.n); got != tt.want {
			t.Errorf("groupDigits(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	for _, tt := range []struct {
		n    int64
		want string
	}{{512, "512 B"}, {1536, "1.5 KiB"}, {3 << 20, "3.0 MiB"}, {5 << 30, "5.0 GiB"}} {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestProgressLine checks the counts, the share done (including documents copied by an earlier,
// interrupted run) and that an ETA appears once there is a rate.
func TestProgressLine(t *testing.T) {
	p := newProgress(nil, "bar.foo", 100_000, 20_000, 0)
	p.started = time.Now().Add(-10 * time.Second)
	p.add(30_000, 3<<20)
	line := p.line()
	for _, want := range []string{"bootstrap bar.foo: 50,000/100,000 docs (50.0%)", "3.0 MiB", " docs/s (", "ETA 17s"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
}
