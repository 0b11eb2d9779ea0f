package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

func TestSoftDeadlinePassed(t *testing.T) {
	timeout := errors.New("connection(127.0.0.1:1) incomplete read of message header: i/o timeout")
	tests := []struct {
		name     string
		deadline time.Duration // from now; 0: no deadline
		expired  bool          // cancel the context before asking
		err      error
		want     bool
	}{
		{"context expired", time.Hour, true, timeout, true},
		{"error wraps DeadlineExceeded", time.Hour, false, fmt.Errorf("read: %w", context.DeadlineExceeded), true},
		{"socket timeout at the deadline, context not yet expired", time.Millisecond, false, timeout, true},
		{"real failure long before the deadline", time.Hour, false, timeout, false},
		{"no deadline", 0, false, timeout, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.Background(), func() {}
			if tt.deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
			}
			defer cancel()
			if tt.expired {
				cancel()
			}
			if got := softDeadlinePassed(ctx, tt.err); got != tt.want {
				t.Errorf("softDeadlinePassed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSummaryLevel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		saved bool
		want  slog.Level
	}{
		{"success", nil, true, slog.LevelInfo},
		{"failure", errors.New("publish: broker down"), true, slog.LevelError},
		{"cancelled after the checkpoint", fmt.Errorf("drain: %w", context.Canceled), true, slog.LevelWarn},
		{"cancelled before the checkpoint", fmt.Errorf("drain: %w", context.Canceled), false, slog.LevelError},
		{"deadline", fmt.Errorf("drain: %w", context.DeadlineExceeded), true, slog.LevelError},
	} {
		if got := summaryLevel(tc.err, tc.saved); got != tc.want {
			t.Errorf("%s: level %v; want %v", tc.name, got, tc.want)
		}
	}
}
