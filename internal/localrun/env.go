package localrun

import "strings"

// Getenv returns a getenv function over three layers, first match wins:
//
//  1. overrides (what the caller insists on, e.g. WATCH_DB=bar for the demo);
//  2. env, as "NAME=value" lines (devstack.Stack.Env());
//  3. fallback (os.Getenv to see the process environment; nil for none).
//
// A name set to "" in overrides or env counts as set: it hides the layers below, so an override
// can clear a variable.
func Getenv(overrides map[string]string, env []string, fallback func(string) string) func(string) string {
	fromEnv := make(map[string]string, len(env))
	for _, kv := range env {
		if name, value, ok := strings.Cut(kv, "="); ok {
			fromEnv[name] = value
		}
	}
	return func(name string) string {
		if v, ok := overrides[name]; ok {
			return v
		}
		if v, ok := fromEnv[name]; ok {
			return v
		}
		if fallback != nil {
			return fallback(name)
		}
		return ""
	}
}
