package main

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	stamped := &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	tests := []struct {
		name         string
		linkV, linkC string
		bi           *debug.BuildInfo
		ok           bool
		want         string
	}{
		{"build info", "", "", stamped, true, "docdbdr v1.2.3 commit abc123-dirty (2026-12-01T10:00:00Z) "},
		{"link-time values win", "v9", "fff", stamped, true, "docdbdr v9 commit fff-dirty (2026-12-01T10:00:00Z) "},
		{"no VCS stamp", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "docdbdr (devel) commit unknown "},
		{"no build info", "", "", nil, false, "docdbdr (devel) commit unknown "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, commit = tt.linkV, tt.linkC
			defer func() { version, commit = "", "" }()
			got := versionLine(tt.bi, tt.ok)
			if !strings.HasPrefix(got, tt.want) || !strings.Contains(got, runtime.Version()) {
				t.Errorf("got %q, want prefix %q and the Go version", got, tt.want)
			}
		})
	}
	var js bytes.Buffer
	if code := run(context.Background(), []string{"version", "--json"}, &js, io.Discard); code != 0 ||
		!strings.Contains(js.String(), `"go":"`+runtime.Version()+`"`) || !strings.Contains(js.String(), `"commit":"`) {
		t.Errorf("version --json: exit %d, %s", code, js.String())
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out bytes.Buffer
		if code := run(context.Background(), args, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "docdbdr ") {
			t.Errorf("%v: exit %d, %q", args, code, out.String())
		}
	}
	if code := run(context.Background(), []string{"run", "--batch-size", "0"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("run --batch-size 0: exit %d, want 2", code)
	}
}
