package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// runDemoForTest runs `docdbdr demo` on the embedded stack and returns its exit status and
// output.
func runDemoForTest(t *testing.T) (int, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the embedded stack")
	}
	t.Setenv("PRIMARY_URI", "") // never against real services from a test
	t.Setenv("PRIMARY_SECRET_ARN", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"demo", "--interval", "100ms", "--step-timeout", "20s", "--log-level", "error"}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	return code, stdout.String()
}

func TestDemoPassesEveryCheck(t *testing.T) {
	code, out := runDemoForTest(t)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	for step := 1; step <= 5; step++ {
		if !strings.Contains(out, "\n"+string(rune('0'+step))+"  ") {
			t.Errorf("no table row for step %d", step)
		}
	}
	if strings.Count(out, "PASS") != 5 || strings.Contains(out, "FAIL") || !strings.Contains(out, "all 5 checks passed") {
		t.Errorf("table does not show 5 passes")
	}
	// Step 5 prints the archived line, with the original write-up's fields and the DR document
	// as it was before the delete.
	for _, want := range []string{`"operation":"delete"`, `"db":"bar"`, `"coll":"foo"`, `"timestampReadable":`, `"before":{"_id":{"$oid":`, `"x":{"$numberInt":"2"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}
	if !strings.Contains(out, "primary bar: [exa foo]") || !strings.Contains(out, "DR      bar: [foo]") {
		t.Errorf("step 3 does not list the collections")
	}
}

// TestDemoFailsWhenDeletesAreApplied shows the checks can fail: with deletes applied instead of
// archived (INTERCEPT_POLICY from the environment), steps 4 and 5 fail and the exit status is 1.
func TestDemoFailsWhenDeletesAreApplied(t *testing.T) {
	t.Setenv("INTERCEPT_POLICY", "delete=apply")
	code, out := runDemoForTest(t)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(out, "the delete was applied, not intercepted") || !strings.Contains(out, "2 of 5 checks failed") {
		t.Errorf("output does not report steps 4 and 5 failing")
	}
}
