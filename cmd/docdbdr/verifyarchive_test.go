package main

import (
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "3h", want: now.Add(-3 * time.Hour)},
		{in: "2026-12-02T10:00:00Z", want: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)},
		{in: "2026-12-03T10:00:00Z", wantErr: true}, // the future
		{in: "-1h", wantErr: true},
		{in: "yesterday", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseSince(tc.in, now)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !got.Equal(tc.want)) {
			t.Errorf("parseSince(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
