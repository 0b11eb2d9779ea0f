package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// reader reads the variables of one function and collects every problem, so that a cold start
// reports all of them at once.
type reader struct {
	fn     string
	getenv func(string) string
	errs   []error
}

// get returns the variable's value, or its registered default when unset or blank. Reading a
// variable that the registry does not list for this function is a programming error.
func (r *reader) get(name string) string {
	v, ok := lookup(name)
	if !ok || !contains(v.Functions, r.fn) {
		panic(fmt.Sprintf("config: %s reads %s, which the registry does not list for it", r.fn, name))
	}
	if s := strings.TrimSpace(r.getenv(name)); s != "" {
		return s
	}
	return v.Default
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// err returns every problem found, joined, or nil.
func (r *reader) err() error { return errors.Join(r.errs...) }

// quote shows a value in an error message, cut short so a huge value does not flood the log.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}

func (r *reader) str(name string) string { return r.get(name) }

func (r *reader) required(name string) string {
	s := r.get(name)
	if s == "" {
		r.fail(name, "required")
	}
	return s
}

func (r *reader) boolean(name string) bool {
	s := r.get(name)
	b, err := strconv.ParseBool(s)
	if err != nil {
		r.fail(name, "%s is not true or false", quote(s))
	}
	return b
}

// integer parses a base-10 integer in [min, max].
func (r *reader) integer(name string, min, max int64) int64 {
	s := r.get(name)
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		r.fail(name, "%s is not an integer", quote(s))
	case n < min || n > max:
		r.fail(name, "%d is out of range [%d, %d]", n, min, max)
	}
	return n
}

// duration parses a Go duration in [min, max].
func (r *reader) duration(name string, min, max time.Duration) time.Duration {
	s := r.get(name)
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		r.fail(name, "%s is not a duration like 500ms, 2s or 3h", quote(s))
	case d < min || d > max:
		r.fail(name, "%v is out of range [%v, %v]", d, min, max)
	}
	return d
}

// oneOf returns the value if it is one of the choices.
func (r *reader) oneOf(name string, choices ...string) string {
	s := r.get(name)
	if !contains(choices, s) {
		r.fail(name, "%s is not one of %s", quote(s), strings.Join(choices, ", "))
	}
	return s
}

// list splits a comma-separated value into trimmed, non-empty, distinct items.
func (r *reader) list(name string) []string {
	s := r.get(name)
	if s == "" {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
			r.fail(name, "empty item in %s", quote(s))
			return nil
		case seen[item]:
			r.fail(name, "%s is listed twice", quote(item))
			return nil
		}
		seen[item] = true
		out = append(out, item)
	}
	return out
}

func (r *reader) logLevel() slog.Level {
	switch s := strings.ToLower(r.get("LOG_LEVEL")); s {
	case "debug":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		r.fail("LOG_LEVEL", "%s is not one of debug, info, warn, error", quote(s))
		return slog.LevelInfo
	}
}

// hostPorts checks a list of host:port addresses.
func (r *reader) hostPorts(name string, addrs []string) {
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			r.fail(name, "%s is not host:port", quote(a))
			continue
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			r.fail(name, "%s has no valid port", quote(a))
		}
	}
}

// dbName checks a MongoDB database name.
func (r *reader) dbName(name, db string) {
	if db == "" {
		return
	}
	if len(db) > 63 || strings.ContainsAny(db, "/\\. \"$*<>:|?\x00") {
		r.fail(name, "%s is not a valid database name", quote(db))
	}
}

// collName checks a MongoDB collection name.
func (r *reader) collName(name, coll string) {
	if coll == "" || strings.ContainsAny(coll, "$\x00") || strings.HasPrefix(coll, "system.") {
		r.fail(name, "%s is not a valid collection name", quote(coll))
	}
}
