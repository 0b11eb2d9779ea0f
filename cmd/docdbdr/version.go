package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	register(command{
		name:    "version",
		summary: "print the version, commit and Go version (also: docdbdr --version)",
		run:     runVersion,
	})
}

// version and commit are set at link time (make cli: go build -ldflags "-X main.version=...
// -X main.commit=..."); otherwise they come from the build information: the module version
// ("(devel)" for a build from a checkout) and the VCS stamp (absent with -buildvcs=false).
var version, commit = "", ""

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	asJSON := fs.Bool("json", false, "print {version, commit, go, platform} as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := versionOf(debug.ReadBuildInfo())
	if *asJSON {
		return json.NewEncoder(stdout).Encode(v)
	}
	_, err := fmt.Fprintln(stdout, v.line())
	return err
}

// versionInfo is what version prints.
type versionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`               // "unknown" when neither linked in nor stamped
	Time     string `json:"commitTime,omitempty"` // the VCS stamp's commit time
	Dirty    bool   `json:"dirty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// line is "docdbdr <version> commit <rev>[-dirty] (<time>) <go version> <os>/<arch>".
func (v versionInfo) line() string {
	rev := v.Commit
	if v.Dirty {
		rev += "-dirty"
	}
	if v.Time != "" {
		rev += " (" + v.Time + ")"
	}
	return fmt.Sprintf("docdbdr %s commit %s %s %s", v.Version, rev, v.Go, v.Platform)
}

func versionLine(bi *debug.BuildInfo, ok bool) string { return versionOf(bi, ok).line() }

// versionOf takes the link-time values, else the build information.
func versionOf(bi *debug.BuildInfo, ok bool) versionInfo {
	v, rev, at, dirty := version, commit, "", false
	if ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if rev == "" {
		rev = "unknown"
	}
	return versionInfo{Version: v, Commit: rev, Time: at, Dirty: dirty, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}
