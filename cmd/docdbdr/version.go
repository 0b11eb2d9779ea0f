package main

import (
	"context"
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
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, versionLine(debug.ReadBuildInfo()))
	return err
}

// versionLine is "docdbdr <version> commit <rev>[-dirty] (<time>) <go version> <os>/<arch>".
func versionLine(bi *debug.BuildInfo, ok bool) string {
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
	if dirty {
		rev += "-dirty"
	}
	if at != "" {
		rev += " (" + at + ")"
	}
	return fmt.Sprintf("docdbdr %s commit %s %s %s/%s", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
