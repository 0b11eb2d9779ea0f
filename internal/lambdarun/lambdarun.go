//go:build unix

// Package lambdarun runs a Lambda function's real bootstrap executable the way the AWS Lambda
// service runs a provided.al2023 function, so that local runs and tests exercise exactly what
// ships (functions/capture, functions/apply) and the failures only a process boundary shows.
//
// What it reproduces, and where the code depends on it, at least as strictly as Lambda:
//
//   - The Runtime API (2018-06-01): GET /runtime/invocation/next, POST .../{id}/response,
//     .../{id}/error and /runtime/init/error, with Lambda's status codes (202; 400
//     InvalidRequestID for an unknown or already answered request id; 403 InvalidStateTransition
//     out of turn; 413 RequestEntityTooLarge past 6 MiB), and the Extensions API register and
//     event/next that aws-lambda-go uses for lambda.WithEnableSIGTERM.
//   - One execution environment, one invocation at a time (reserved concurrency 1). Each
//     invocation gets a fresh random request id (a UUID), Lambda-Runtime-Deadline-Ms = dispatch
//     time + the function timeout, the invoked function ARN and a trace id.
//   - The environment: only the function's variables plus the ones Lambda sets
//     (AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_FUNCTION_NAME, AWS_REGION, credentials, ...). Nothing of
//     the caller's environment leaks in, and reserved names are refused in the configuration.
//   - Cold starts: the process starts on the first invocation; init (up to InitTimeout, 10 s)
//     ends when the runtime calls /next and every registered extension has called event/next.
//   - Freezing: between invocations the process is stopped (SIGSTOP), as Lambda freezes the
//     sandbox, so background goroutines (a producer still retrying, a heartbeat) do not run
//     until the next invocation thaws it.
//   - Death: an invocation that outlives its timeout has its process group killed with SIGKILL
//     (its goroutines, buffers and connections gone, as a dead sandbox's); so does a crash
//     (Kill, an exit, a panic that exits). The next invocation cold-starts a new process.
//   - Asynchronous invocation (InvokeEvent, what an EventBridge schedule does): a failed attempt
//     is retried MaximumRetryAttempts times with the same request id, within MaximumEventAge.
//   - Shutdown (Close): SIGTERM when an extension registered (the runtime then has
//     ShutdownGrace, 500 ms), then SIGKILL.
//
// Each Result reports the invocation's footprint: the init duration of a cold start and the
// process's peak RSS (Linux only), also in the REPORT line as Lambda's Init Duration and Max
// Memory Used.
//
// Unix only (process groups and job-control signals). What it does not: memory limits, several concurrent environments, provisioned concurrency,
// response streaming, the Telemetry API, and the service's own retries of throttled events.
package lambdarun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Limits of the Lambda service this package enforces.
const (
	// MaxSyncPayload bounds a synchronous invocation's request and response (6 MiB).
	MaxSyncPayload = 6 * 1024 * 1024
	// MaxAsyncPayload bounds an asynchronous invocation's request (256 KiB, the long-standing
	// documented limit: the stricter one).
	MaxAsyncPayload = 256 * 1024
	// DefaultInitTimeout is Lambda's limit on the init phase of an on-demand function.
	DefaultInitTimeout = 10 * time.Second
	// DefaultShutdownGrace is how long the runtime has between SIGTERM and SIGKILL when an
	// internal extension registered (aws-lambda-go's WithEnableSIGTERM registers one).
	DefaultShutdownGrace = 500 * time.Millisecond
)

// Error types the service reports for failures that are not the function's own error.
const (
	ErrorTypeTimeout          = "Sandbox.Timedout"
	ErrorTypeExit             = "Runtime.ExitError"
	ErrorTypeInit             = "Runtime.InitError"
	ErrorTypeResponseTooLarge = "Function.ResponseSizeTooLarge"
	ErrorTypeAbandoned        = "Sandbox.Abandoned" // the caller gave up (ctx done): the sandbox was killed
)

// Credentials are the execution role's temporary credentials, which Lambda puts into the
// function's environment.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// Config describes one function.
type Config struct {
	// Name is the function's name (AWS_LAMBDA_FUNCTION_NAME). Required.
	Name string
	// Bootstrap is the executable. Its directory is the task root (LAMBDA_TASK_ROOT) and the
	// process's working directory, as /var/task is in Lambda. Required.
	Bootstrap string
	// Env is the function's environment variables (the template's Environment.Variables).
	// Names Lambda reserves are refused.
	Env map[string]string
	// Timeout is the function timeout. Required.
	Timeout time.Duration
	// MemoryMB is AWS_LAMBDA_FUNCTION_MEMORY_SIZE (default 128; not enforced).
	MemoryMB int
	// Region is AWS_REGION and AWS_DEFAULT_REGION (default us-east-1).
	Region string
	// Credentials go into AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
	Credentials Credentials
	// InitTimeout bounds a cold start's init phase (default 10 s); ShutdownGrace is the time
	// between SIGTERM and SIGKILL at Close (default 500 ms).
	InitTimeout   time.Duration
	ShutdownGrace time.Duration
	// Output receives the sandbox's stdout and stderr and the platform's START, END, REPORT and
	// timeout lines, as the function's CloudWatch log stream does: one complete line per Write,
	// from one goroutine at a time. Nil discards.
	Output io.Writer
	// Logger receives the emulator's own messages (cold starts, kills); nil discards.
	Logger *slog.Logger
	// NoFreeze keeps the process running between invocations (Lambda freezes it).
	NoFreeze bool
}

// reserved are the environment variables Lambda sets itself and refuses in a function's
// configuration.
var reserved = []string{
	"_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
	"AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
	"AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
	"AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
	"AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}

func (c Config) withDefaults() Config {
	if c.MemoryMB <= 0 {
		c.MemoryMB = 128
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.InitTimeout <= 0 {
		c.InitTimeout = DefaultInitTimeout
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Output == nil {
		c.Output = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("lambdarun: Config.Name is required"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("lambdarun: Config.Timeout is required"))
	}
	if c.Bootstrap == "" {
		errs = append(errs, errors.New("lambdarun: Config.Bootstrap is required"))
	} else if st, err := os.Stat(c.Bootstrap); err != nil {
		errs = append(errs, fmt.Errorf("lambdarun: bootstrap: %w", err))
	} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		errs = append(errs, fmt.Errorf("lambdarun: bootstrap %s is not an executable file", c.Bootstrap))
	}
	for name := range c.Env {
		for _, r := range reserved {
			if strings.EqualFold(name, r) {
				errs = append(errs, fmt.Errorf("lambdarun: environment variable %s is reserved by Lambda", name))
			}
		}
	}
	return errors.Join(errs...)
}

// environ is the process environment of a sandbox whose Runtime API listens on api.
func (c Config) environ(api string) []string {
	root := filepath.Dir(c.Bootstrap)
	env := []string{
		"AWS_LAMBDA_RUNTIME_API=" + api,
		"AWS_LAMBDA_FUNCTION_NAME=" + c.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		fmt.Sprintf("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=%d", c.MemoryMB),
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + c.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + strings.ReplaceAll(NewRequestID(), "-", ""),
		"AWS_REGION=" + c.Region,
		"AWS_DEFAULT_REGION=" + c.Region,
		"_HANDLER=bootstrap",
		"LAMBDA_TASK_ROOT=" + root,
		"LAMBDA_RUNTIME_DIR=" + root,
		"TZ=:UTC",
		"LANG=en_US.UTF-8",
		"PATH=/usr/local/bin:/usr/bin:/bin",
	}
	if c.Credentials.AccessKeyID != "" {
		env = append(env, "AWS_ACCESS_KEY_ID="+c.Credentials.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+c.Credentials.SecretAccessKey)
		if c.Credentials.SessionToken != "" {
			env = append(env, "AWS_SESSION_TOKEN="+c.Credentials.SessionToken)
		}
	}
	names := make([]string, 0, len(c.Env))
	for n := range c.Env {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		env = append(env, n+"="+c.Env[n])
	}
	return env
}

// FunctionError is a failed invocation as the Lambda Invoke API reports it: the function's own
// error (errorType and errorMessage from /error), or the service's (timeout, exit, init).
type FunctionError struct {
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// Result is one invocation.
type Result struct {
	RequestID string
	// Payload is the function's response; nil when Err is set.
	Payload []byte
	// Err is the invocation's failure, nil on success.
	Err *FunctionError
	// ColdStart says a new process was started (and initialized) for this invocation.
	ColdStart bool
	// Killed says the sandbox died during the invocation (timeout, crash, Kill, abandonment).
	Killed bool
	// PID is the process that served the invocation.
	PID      int
	Started  time.Time
	Ended    time.Time
	Deadline time.Time
	// InitDuration is, for a cold start, the init phase: from just before the process was
	// started (exec) to its first GET /runtime/invocation/next. 0 for a warm invocation, and
	// when init failed. (Init also waits for registered extensions' first event/next;
	// aws-lambda-go's SIGTERM extension calls it concurrently with the runtime's /next.)
	InitDuration time.Duration
	// PeakRSS is the process's peak resident set size in bytes since it started, VmHWM in
	// /proc/<pid>/status, read once the invocation ended, while the process is still alive (it
	// is then frozen, or about to be). It covers the bootstrap process alone, not processes it
	// started. Linux only: 0 elsewhere, and 0 when the sandbox died during the invocation.
	PeakRSS int64
}

// Error returns r.Err as an error (a nil interface on success).
func (r Result) Error() error {
	if r.Err == nil {
		return nil
	}
	return r.Err
}

// Function is one function with its single execution environment. Invoke, InvokeEvent and
// Kill may be called from any goroutine; invocations are served one at a time, in call order
// as far as a mutex orders them.
type Function struct {
	cfg Config
	log *slog.Logger
	out *logStream // the log stream every sandbox and the platform write to

	invokeMu sync.Mutex // one invocation at a time

	mu     sync.Mutex
	sb     *sandbox // nil before the first invocation and after the sandbox died
	closed bool
}

// ErrClosed is returned by invocations after Close.
var ErrClosed = errors.New("lambdarun: function closed")

// New checks the configuration. No process starts until the first invocation (a cold start).
func New(cfg Config) (*Function, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Function{cfg: cfg, log: cfg.Logger.With("function", cfg.Name), out: &logStream{dst: cfg.Output}}, nil
}

// Invoke runs one synchronous (RequestResponse) invocation with a fresh request id, as the
// Invoke API or an event source mapping does. The returned error is the emulator's (closed,
// payload too large, ctx done before the invocation started); the function's failure is in
// Result.Err. When ctx is done during the invocation the sandbox is killed (the caller gave up
// on it) and the result says so.
func (f *Function) Invoke(ctx context.Context, payload []byte) (Result, error) {
	if len(payload) > MaxSyncPayload {
		return Result{}, fmt.Errorf("lambdarun: RequestEntityTooLargeException: %d byte payload exceeds %d bytes", len(payload), MaxSyncPayload)
	}
	return f.invoke(ctx, NewRequestID(), payload)
}

// InvokeAs is Invoke with a request id the caller chose: a caller that retries an asynchronous
// event itself keeps its id, as Lambda's retries do. Give each new invocation a fresh one
// (NewRequestID).
func (f *Function) InvokeAs(ctx context.Context, requestID string, payload []byte) (Result, error) {
	if len(payload) > MaxSyncPayload {
		return Result{}, fmt.Errorf("lambdarun: RequestEntityTooLargeException: %d byte payload exceeds %d bytes", len(payload), MaxSyncPayload)
	}
	return f.invoke(ctx, requestID, payload)
}

// PID returns the sandbox's process id, or 0 when no process is running.
func (f *Function) PID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sb == nil {
		return 0
	}
	return f.sb.pid
}

// Kill kills the sandbox's process group with SIGKILL now, as the host or an out-of-memory
// kill would; an invocation in progress fails with Runtime.ExitError. It reports whether a
// process was running.
func (f *Function) Kill() bool {
	f.mu.Lock()
	sb := f.sb
	f.mu.Unlock()
	if sb == nil {
		return false
	}
	sb.kill("killed by the caller")
	return true
}

// Close shuts the environment down: SIGTERM when an extension registered, ShutdownGrace to exit,
// then SIGKILL. Invocations after Close fail with ErrClosed.
func (f *Function) Close() error {
	f.mu.Lock()
	f.closed = true
	sb := f.sb
	f.sb = nil
	f.mu.Unlock()
	if sb != nil {
		sb.shutdown(f.cfg.ShutdownGrace)
	}
	return nil
}

func (f *Function) invoke(ctx context.Context, id string, payload []byte) (Result, error) {
	f.invokeMu.Lock()
	defer f.invokeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("lambdarun: %w", err)
	}
	r := Result{RequestID: id, Started: time.Now()}
	sb, cold, ferr, err := f.sandbox(ctx)
	if err != nil {
		return Result{}, err
	}
	r.ColdStart = cold
	if ferr != nil {
		r.Err, r.Killed, r.Ended = ferr, true, time.Now()
		f.platform("START RequestId: %s Version: $LATEST", id)
		f.platform("END RequestId: %s", id)
		f.platform("REPORT RequestId: %s\tStatus: error\tErrorType: %s", id, ferr.Type)
		return r, nil
	}
	r.PID = sb.pid
	if cold {
		r.InitDuration = sb.initDuration()
	}
	f.platform("START RequestId: %s Version: $LATEST", id)
	r = sb.run(ctx, r, payload, f.cfg.Timeout)
	if !r.Killed {
		r.PeakRSS = f.peakRSS(sb.pid)
	}
	f.platform("END RequestId: %s", id)
	f.platform("REPORT RequestId: %s\tDuration: %.2f ms\tMemory Size: %d MB%s", id,
		float64(r.Ended.Sub(r.Started).Microseconds())/1000, f.cfg.MemoryMB, footprintNote(r))
	if r.Killed {
		f.mu.Lock()
		if f.sb == sb {
			f.sb = nil
		}
		f.mu.Unlock()
	}
	return r, nil
}

// footprintNote is the end of the REPORT line, as Lambda writes it: Max Memory Used when the
// peak RSS is known (in MiB, which Lambda calls MB) and Init Duration on a cold start.
func footprintNote(r Result) string {
	var note string
	if r.PeakRSS > 0 {
		note += fmt.Sprintf("\tMax Memory Used: %d MB", (r.PeakRSS+(1<<20)-1)>>20)
	}
	if r.ColdStart {
		note += fmt.Sprintf("\tInit Duration: %.2f ms", float64(r.InitDuration.Microseconds())/1000)
	}
	return note
}

// peakRSS is the process's peak RSS (Result.PeakRSS), 0 when it cannot be read.
func (f *Function) peakRSS(pid int) int64 {
	rss, err := readPeakRSS(pid)
	if err != nil {
		f.log.Warn("peak RSS unavailable", "pid", pid, "error", err)
		return 0
	}
	return rss
}

// sandbox returns the running sandbox, starting (and initializing) one when there is none. An
// init failure is returned as a FunctionError, the way the invocation reports it.
func (f *Function) sandbox(ctx context.Context) (*sandbox, bool, *FunctionError, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, false, nil, ErrClosed
	}
	sb := f.sb
	f.mu.Unlock()
	if sb != nil && !sb.dead() {
		return sb, false, nil, nil
	}
	sb, err := startSandbox(f.cfg, f.log, f.out)
	if err != nil {
		return nil, false, nil, err
	}
	if ferr := sb.awaitInit(ctx, f.cfg.InitTimeout); ferr != nil {
		sb.kill("init failed")
		return nil, true, ferr, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		sb.kill("closed during init")
		return nil, false, nil, ErrClosed
	}
	f.sb = sb
	return sb, true, nil, nil
}

// platform writes one of the service's own lines to the log stream.
func (f *Function) platform(format string, args ...any) {
	f.out.writeLine([]byte(fmt.Sprintf(format, args...) + "\n"))
}
