//go:build unix

package lambdarun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(testFunctionEnv); mode != "" {
		os.Exit(runTestFunction(mode))
	}
	os.Exit(m.Run())
}

// syncBuffer collects a function's log stream.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) count(s string) int { return strings.Count(b.String(), s) }

// testFunction is the test binary as a function in the given mode.
func testFunction(t *testing.T, mode string, timeout time.Duration, tweak func(*Config)) (*Function, *syncBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cfg := Config{Name: "test-fn", Bootstrap: exe, Timeout: timeout, Output: out,
		Env: map[string]string{testFunctionEnv: mode, "FUNCTION_SETTING": "from-config"}}
	if tweak != nil {
		tweak(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, out
}

func invoke(t *testing.T, f *Function, o order) (Result, report) {
	t.Helper()
	payload, _ := json.Marshal(o)
	r, err := f.Invoke(context.Background(), payload)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if r.Err == nil {
		if err := json.Unmarshal(r.Payload, &rep); err != nil {
			t.Fatalf("response %q: %v", r.Payload, err)
		}
	}
	return r, rep
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestInvocationContext: each invocation has a fresh random request id, the deadline is the
// dispatch time plus the timeout, the process is reused while warm, and its environment is the
// function's configuration plus Lambda's variables, nothing of the caller's.
func TestInvocationContext(t *testing.T) {
	t.Setenv("LAMBDARUN_CALLER_SECRET", "must-not-leak")
	f, _ := testFunction(t, "go", 3*time.Second, nil)
	r1, a := invoke(t, f, order{})
	r2, b := invoke(t, f, order{})
	if r1.Err != nil || r2.Err != nil {
		t.Fatalf("invocations failed: %v, %v", r1.Err, r2.Err)
	}
	if a.RequestID != r1.RequestID || b.RequestID != r2.RequestID || a.RequestID == b.RequestID ||
		!uuidV4.MatchString(a.RequestID) || !uuidV4.MatchString(b.RequestID) {
		t.Errorf("request ids %q, %q (results %q, %q): want two different random UUIDs, as the handler saw them", a.RequestID, b.RequestID, r1.RequestID, r2.RequestID)
	}
	if !r1.ColdStart || r2.ColdStart || a.PID != b.PID || b.Count != 2 {
		t.Errorf("cold %v/%v, pids %d/%d, count %d: want one cold start, then the same warm process", r1.ColdStart, r2.ColdStart, a.PID, b.PID, b.Count)
	}
	if d := time.UnixMilli(a.DeadlineMs).Sub(r1.Deadline); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("the handler's deadline differs from the dispatch deadline by %v", d)
	}
	if got := r1.Deadline.Sub(r1.Started); got < 3*time.Second || got > 3*time.Second+time.Second {
		t.Errorf("deadline %v after the start, want the 3 s timeout", got)
	}
	if a.Env["AWS_LAMBDA_FUNCTION_NAME"] != "test-fn" || a.Env["FUNCTION_SETTING"] != "from-config" || a.Env["AWS_LAMBDA_RUNTIME_API"] == "" {
		t.Errorf("environment lacks the function's or Lambda's variables: %v", a.Env)
	}
	if _, ok := a.Env["LAMBDARUN_CALLER_SECRET"]; ok {
		t.Error("the caller's environment leaked into the sandbox")
	}
	if !strings.HasSuffix(a.ARN, ":function:test-fn") {
		t.Errorf("invoked function ARN %q", a.ARN)
	}
}

// TestTimeoutKillsTheSandbox: an invocation past its timeout fails with Sandbox.Timedout, its
// process (with the goroutines it started) is gone, and the next invocation cold-starts.
func TestTimeoutKillsTheSandbox(t *testing.T) {
	f, out := testFunction(t, "go", time.Second, nil)
	_, warm := invoke(t, f, order{})
	start := time.Now()
	r, _ := invoke(t, f, order{Background: true, Sleep: "30s"})
	if r.Err == nil || r.Err.Type != ErrorTypeTimeout || !r.Killed {
		t.Fatalf("result %+v, want Sandbox.Timedout and a killed sandbox", r)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the timeout took %v to strike, want about 1 s", took)
	}
	if alive(warm.PID) {
		t.Fatalf("process %d still runs after its invocation timed out", warm.PID)
	}
	ticks := out.count("tick ")
	time.Sleep(200 * time.Millisecond)
	if n := out.count("tick "); n != ticks || ticks == 0 {
		t.Errorf("the background goroutine ticked %d times before, %d after the kill: want >0 and no more", ticks, n)
	}
	if !strings.Contains(out.String(), "Task timed out after 1.00 seconds") {
		t.Error("no timeout line in the log stream")
	}
	r, rep := invoke(t, f, order{})
	if r.Err != nil || !r.ColdStart || rep.PID == warm.PID || rep.Count != 1 {
		t.Errorf("after the timeout: err %v, cold %v, pid %d (was %d), count %d; want a cold start in a new process", r.Err, r.ColdStart, rep.PID, warm.PID, rep.Count)
	}
}

// TestCrashes: an exit, or a SIGKILL from outside (Kill) during an invocation, fails it with
// Runtime.ExitError; the next invocation cold-starts.
func TestCrashes(t *testing.T) {
	f, _ := testFunction(t, "go", 10*time.Second, nil)
	r, _ := invoke(t, f, order{Exit: 3})
	if r.Err == nil || r.Err.Type != ErrorTypeExit || !strings.Contains(r.Err.Message, "exit status 3") {
		t.Fatalf("exit 3: %+v", r.Err)
	}
	_, rep := invoke(t, f, order{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.Kill()
	}()
	r, _ = invoke(t, f, order{Sleep: "5s"})
	if r.Err == nil || r.Err.Type != ErrorTypeExit || !strings.Contains(r.Err.Message, "signal: killed") || !r.Killed {
		t.Fatalf("kill -9 during an invocation: %+v", r)
	}
	if alive(rep.PID) {
		t.Fatal("the killed process is alive")
	}
	if r, _ := invoke(t, f, order{}); r.Err != nil || !r.ColdStart {
		t.Errorf("after the kill: %v, cold %v", r.Err, r.ColdStart)
	}
	if r, _ := invoke(t, f, order{Fail: "boom"}); r.Err == nil || r.Err.Message != "boom" || r.Killed {
		t.Errorf("a function error: %+v, want errorMessage boom and the sandbox kept", r)
	}
}

// TestFrozenBetweenInvocations: a goroutine an invocation left running does not run while the
// sandbox waits for the next invocation; NoFreeze is the control.
func TestFrozenBetweenInvocations(t *testing.T) {
	for _, freeze := range []bool{true, false} {
		f, out := testFunction(t, "go", 5*time.Second, func(c *Config) { c.NoFreeze = !freeze })
		if r, _ := invoke(t, f, order{Background: true, Sleep: "100ms"}); r.Err != nil {
			t.Fatal(r.Err)
		}
		time.Sleep(50 * time.Millisecond)
		before := out.count("tick ")
		time.Sleep(400 * time.Millisecond)
		idle := out.count("tick ") - before
		if freeze && idle != 0 {
			t.Errorf("frozen sandbox: its goroutine ticked %d times between invocations", idle)
		}
		if !freeze && idle < 5 {
			t.Errorf("control without freezing: only %d ticks in 400 ms; the check cannot tell", idle)
		}
		if r, _ := invoke(t, f, order{Sleep: "100ms"}); r.Err != nil {
			t.Fatal(r.Err)
		}
		if freeze && out.count("tick ") == before {
			t.Error("the next invocation did not thaw the sandbox")
		}
	}
}

// TestRuntimeAPIRefusals: the API refuses what Lambda's refuses, with its status codes, and a
// response over 6 MiB fails the invocation.
func TestRuntimeAPIRefusals(t *testing.T) {
	f, out := testFunction(t, "raw", 5*time.Second, nil)
	r, err := f.Invoke(context.Background(), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Err == nil || r.Err.Type != ErrorTypeResponseTooLarge {
		t.Fatalf("a 6 MiB + 1 response: %+v, want %s", r.Err, ErrorTypeResponseTooLarge)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "codes ") })
	line := out.String()[strings.Index(out.String(), "codes ")+6:]
	var codes map[string]int
	if err := json.Unmarshal([]byte(line[:strings.Index(line, "\n")]), &codes); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"wrongID": 400, "nextBeforeAnswer": 403, "tooLarge": 413, "afterAnswer": 403, "initErrorLate": 403}
	for k, v := range want {
		if codes[k] != v {
			t.Errorf("%s: status %d, want %d", k, codes[k], v)
		}
	}
	if _, err := f.Invoke(context.Background(), make([]byte, MaxSyncPayload+1)); err == nil {
		t.Error("a request over 6 MiB was accepted")
	}
}

// TestInitFailures: a runtime that posts /init/error, or exits before asking for work, fails the
// invocation; the next one tries a new cold start.
func TestInitFailures(t *testing.T) {
	f, _ := testFunction(t, "init-error", 5*time.Second, nil)
	r, _ := f.Invoke(context.Background(), nil)
	if r.Err == nil || r.Err.Type != "Runtime.ConfigError" || r.Err.Message != "bad config" || !r.ColdStart {
		t.Errorf("init/error: %+v", r)
	}
	f, out := testFunction(t, "exit-at-init", 5*time.Second, nil)
	for range 2 {
		r, _ := f.Invoke(context.Background(), nil)
		if r.Err == nil || r.Err.Type != ErrorTypeExit || !strings.Contains(r.Err.Message, "exit status 1") {
			t.Errorf("exit during init: %+v", r.Err)
		}
	}
	if n := out.count("PRETEND_CONFIG is missing"); n != 2 {
		t.Errorf("%d init attempts logged, want 2 (a cold start each)", n)
	}
}

// TestInvokeEventRetries: an asynchronous invocation is retried MaximumRetryAttempts times with
// the same request id; a success ends it.
func TestInvokeEventRetries(t *testing.T) {
	f, _ := testFunction(t, "go", 5*time.Second, nil)
	cfg := EventInvokeConfig{MaximumRetryAttempts: 2, RetryDelays: []time.Duration{10 * time.Millisecond}}
	rs, err := f.InvokeEvent(context.Background(), []byte(`{"fail":"no"}`), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 || rs[0].RequestID != rs[1].RequestID || rs[1].RequestID != rs[2].RequestID {
		t.Fatalf("%d attempts (%v), want 3 with one request id", len(rs), rs)
	}
	rs, _ = f.InvokeEvent(context.Background(), []byte(`{"fail":"no"}`), EventInvokeConfig{})
	if len(rs) != 1 {
		t.Errorf("MaximumRetryAttempts 0: %d attempts", len(rs))
	}
	rs, _ = f.InvokeEvent(context.Background(), []byte(`{}`), cfg)
	if len(rs) != 1 || rs[0].Err != nil {
		t.Errorf("a successful event: %d attempts, %v", len(rs), rs[0].Err)
	}
	if _, err := f.InvokeEvent(context.Background(), nil, EventInvokeConfig{MaximumRetryAttempts: 3}); err == nil {
		t.Error("MaximumRetryAttempts 3 accepted")
	}
	if _, err := f.InvokeEvent(context.Background(), make([]byte, MaxAsyncPayload+1), cfg); err == nil {
		t.Error("an event over 256 KiB was accepted")
	}
}

// TestShutdownSendsSIGTERM: a runtime that registered an extension (lambda.WithEnableSIGTERM)
// gets SIGTERM at Close and may run its handler.
func TestShutdownSendsSIGTERM(t *testing.T) {
	f, out := testFunction(t, "go", 5*time.Second, func(c *Config) { c.NoFreeze = os.Getenv("NOFREEZE") != "" })
	if r, _ := invoke(t, f, order{}); r.Err != nil {
		t.Fatal(r.Err)
	}
	_ = f.Close()
	if !strings.Contains(out.String(), "SIGTERM received") {
		t.Errorf("no SIGTERM handler output at shutdown:\n%s", out.String())
	}
	if _, err := f.Invoke(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("invoke after Close: %v", err)
	}
}

func TestConfigRefusesReservedVariables(t *testing.T) {
	exe, _ := os.Executable()
	_, err := New(Config{Name: "x", Bootstrap: exe, Timeout: time.Second, Env: map[string]string{"AWS_REGION": "eu-west-1", "aws_lambda_runtime_api": "x"}})
	if err == nil || !strings.Contains(err.Error(), "AWS_REGION") || !strings.Contains(err.Error(), "aws_lambda_runtime_api") {
		t.Errorf("reserved variables: %v", err)
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Name") || !strings.Contains(err.Error(), "Timeout") || !strings.Contains(err.Error(), "Bootstrap") {
		t.Errorf("empty config: %v", err)
	}
}

// TestRealBootstraps builds the shipped functions and cold-starts each without configuration:
// the real binaries run under the emulator and fail init naming what is missing.
func TestRealBootstraps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both functions")
	}
	for _, fn := range []struct{ pkg, missing string }{
		{"github.com/docdb-dr/docdb-dr/functions/capture", "WATCH_DB"},
		{"github.com/docdb-dr/docdb-dr/functions/apply", "DR_URI"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		exe, err := Build(ctx, fn.pkg, t.TempDir())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		out := &syncBuffer{}
		f, err := New(Config{Name: "real", Bootstrap: exe, Timeout: 5 * time.Second, Output: out})
		if err != nil {
			t.Fatal(err)
		}
		r, err := f.Invoke(context.Background(), []byte(`{}`))
		_ = f.Close()
		if err != nil || r.Err == nil || r.Err.Type != ErrorTypeExit || !strings.Contains(out.String(), fn.missing) {
			t.Errorf("%s without configuration: %v, %+v; log:\n%s", fn.pkg, err, r.Err, out.String())
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
