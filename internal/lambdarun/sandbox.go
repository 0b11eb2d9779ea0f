//go:build unix

package lambdarun

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// sandbox is one execution environment: a bootstrap process and the Runtime API it talks to.
// Each sandbox has its own listener, so nothing a dead process had in flight can reach its
// successor.
type sandbox struct {
	cfg Config
	log *slog.Logger
	out *lineSplitter
	cmd *exec.Cmd
	pid int
	srv *http.Server

	events chan *invocation // the invocation the runtime's next /next receives

	exited  chan struct{} // closed once the process has exited
	exitErr error         // why, set before exited is closed

	initDone   chan struct{} // closed when init completed
	initFailed chan struct{} // closed when the runtime posted /init/error

	mu          sync.Mutex
	started     time.Time // just before the exec
	firstNext   time.Time // the runtime's first /next: the end of its init
	initialized bool
	initErr     *FunctionError
	ready       bool            // the runtime called /next at least once
	extensions  map[string]bool // registered extension id -> it called event/next
	current     *invocation     // handed to the runtime, answered or not
	frozen      bool
	stopping    bool // shutting down
	killed      bool
}

// invocation is one request handed to a sandbox.
type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
	done     chan struct{}

	once     sync.Once
	response []byte
	err      *FunctionError
}

func (i *invocation) finish(resp []byte, err *FunctionError) {
	i.once.Do(func() {
		i.response, i.err = resp, err
		close(i.done)
	})
}

func (i *invocation) answered() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

func startSandbox(cfg Config, log *slog.Logger, out *logStream) (*sandbox, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lambdarun: runtime API listener: %w", err)
	}
	sb := &sandbox{
		cfg:        cfg,
		log:        log,
		out:        &lineSplitter{stream: out},
		events:     make(chan *invocation),
		exited:     make(chan struct{}),
		initDone:   make(chan struct{}),
		initFailed: make(chan struct{}),
		extensions: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", sb.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", sb.response)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", sb.invocationError)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", sb.initError)
	mux.HandleFunc("POST /2020-01-01/extension/register", sb.register)
	mux.HandleFunc("GET /2020-01-01/extension/event/next", sb.extensionNext)
	sb.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = sb.srv.Serve(ln) }()

	cmd := exec.Command(cfg.Bootstrap)
	cmd.Dir = filepath.Dir(cfg.Bootstrap)
	cmd.Env = cfg.environ(ln.Addr().String())
	cmd.Stdout, cmd.Stderr = sb.out, sb.out
	cmd.WaitDelay = time.Second
	setProcessGroup(cmd)
	// The process may call the Runtime API before Start returns: its handlers (freeze) read
	// sb.cmd under sb.mu, so Start and the assignment hold it too.
	sb.mu.Lock()
	sb.started = time.Now()
	err = cmd.Start()
	if err == nil {
		sb.cmd, sb.pid = cmd, cmd.Process.Pid
	}
	sb.mu.Unlock()
	if err != nil {
		_ = sb.srv.Close()
		return nil, fmt.Errorf("lambdarun: start %s: %w", cfg.Bootstrap, err)
	}
	log.Info("cold start", "pid", sb.pid, "runtimeAPI", ln.Addr().String())
	go func() {
		err := cmd.Wait()
		sb.out.flush()
		sb.exitErr = err
		close(sb.exited)
		_ = sb.srv.Close()
		log.Info("sandbox process exited", "pid", sb.pid, "status", fmt.Sprint(err))
	}()
	return sb, nil
}

func (sb *sandbox) dead() bool {
	select {
	case <-sb.exited:
		return true
	default:
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.killed
}

// exitError is how an invocation reports the process's death.
func (sb *sandbox) exitError(id string) *FunctionError {
	return &FunctionError{Type: ErrorTypeExit, Message: fmt.Sprintf("RequestId: %s Error: Runtime exited with error: %v", id, sb.exitErr)}
}

// initDuration is the time from the exec to the runtime's first /next (0 before that /next).
func (sb *sandbox) initDuration() time.Duration {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.firstNext.IsZero() {
		return 0
	}
	return sb.firstNext.Sub(sb.started)
}

// awaitInit waits for the init phase to end; a failure is the invocation's error.
func (sb *sandbox) awaitInit(ctx context.Context, timeout time.Duration) *FunctionError {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-sb.initDone:
		return nil
	case <-sb.initFailed:
		sb.mu.Lock()
		defer sb.mu.Unlock()
		return sb.initErr
	case <-sb.exited:
		return &FunctionError{Type: ErrorTypeExit, Message: fmt.Sprintf("Runtime exited during init with error: %v", sb.exitErr)}
	case <-t.C:
		return &FunctionError{Type: ErrorTypeTimeout, Message: fmt.Sprintf("INIT phase timed out after %.2f seconds", timeout.Seconds())}
	case <-ctx.Done():
		return &FunctionError{Type: ErrorTypeAbandoned, Message: fmt.Sprintf("the caller gave up during init: %v", ctx.Err())}
	}
}

// run hands one invocation to the runtime and waits for its end: a response or error from the
// runtime, the process's death, the timeout (the process group is killed), or the caller giving
// up (killed as well). When the sandbox was killed, run returns only once the process is gone.
func (sb *sandbox) run(ctx context.Context, r Result, payload []byte, timeout time.Duration) Result {
	inv := &invocation{id: r.RequestID, payload: payload, deadline: time.Now().Add(timeout), done: make(chan struct{})}
	r.Deadline = inv.deadline
	timer := time.NewTimer(time.Until(inv.deadline))
	defer timer.Stop()
	end := func(err *FunctionError, killed bool) Result {
		r.Err, r.Killed, r.Ended = err, killed, time.Now()
		if killed {
			sb.awaitExit(5 * time.Second)
		}
		return r
	}

	select {
	case sb.events <- inv:
	case <-sb.exited:
		return end(sb.exitError(inv.id), true)
	case <-timer.C:
		return end(sb.timedOut(inv.id, timeout), true)
	case <-ctx.Done():
		sb.kill("the caller gave up")
		return end(&FunctionError{Type: ErrorTypeAbandoned, Message: fmt.Sprintf("RequestId: %s: %v", inv.id, ctx.Err())}, true)
	}

	select {
	case <-inv.done:
	case <-sb.exited:
		if !inv.answered() {
			return end(sb.exitError(inv.id), true)
		}
	case <-timer.C:
		if !inv.answered() {
			return end(sb.timedOut(inv.id, timeout), true)
		}
	case <-ctx.Done():
		if !inv.answered() {
			sb.kill("the caller gave up")
			return end(&FunctionError{Type: ErrorTypeAbandoned, Message: fmt.Sprintf("RequestId: %s: %v", inv.id, ctx.Err())}, true)
		}
	}
	if inv.err != nil && inv.err.Type == ErrorTypeResponseTooLarge {
		r.Err, r.Ended = inv.err, time.Now()
		return r
	}
	r.Payload, r.Err, r.Ended = inv.response, inv.err, time.Now()
	return r
}

// timedOut kills the sandbox for an invocation past its timeout, as Lambda does.
func (sb *sandbox) timedOut(id string, timeout time.Duration) *FunctionError {
	msg := fmt.Sprintf("Task timed out after %.2f seconds", timeout.Seconds())
	sb.out.stream.writeLine([]byte(fmt.Sprintf("%s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), id, msg)))
	sb.kill("timeout")
	return &FunctionError{Type: ErrorTypeTimeout, Message: fmt.Sprintf("RequestId: %s Error: %s", id, msg)}
}

// kill sends SIGKILL to the process group: every goroutine, buffer and connection of the
// sandbox is gone at once.
func (sb *sandbox) kill(why string) {
	sb.mu.Lock()
	already := sb.killed
	sb.killed = true
	sb.mu.Unlock()
	if already {
		return
	}
	sb.log.Info("killing the sandbox", "pid", sb.pid, "reason", why)
	if err := signalGroup(sb.cmd, syscall.SIGKILL); err != nil {
		sb.log.Warn("kill", "pid", sb.pid, "error", err)
	}
}

func (sb *sandbox) awaitExit(d time.Duration) {
	select {
	case <-sb.exited:
	case <-time.After(d):
		sb.log.Error("the sandbox process did not exit after SIGKILL", "pid", sb.pid)
	}
}

// shutdown ends the sandbox: SIGTERM and a grace period when an extension registered, then
// SIGKILL.
func (sb *sandbox) shutdown(grace time.Duration) {
	sb.mu.Lock()
	ext := len(sb.extensions) > 0
	sb.stopping = true // no freeze from now on: a runtime reaching /next must see its SIGTERM
	sb.mu.Unlock()
	sb.thaw()
	if ext && !sb.dead() {
		_ = signalGroup(sb.cmd, syscall.SIGTERM)
		select {
		case <-sb.exited:
		case <-time.After(grace):
		}
	}
	sb.kill("shutdown")
	sb.awaitExit(5 * time.Second)
	_ = sb.srv.Close()
}

// freeze stops the process between invocations, as Lambda freezes an idle sandbox.
func (sb *sandbox) freeze() {
	if sb.cfg.NoFreeze {
		return
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if !sb.initialized || sb.frozen || sb.killed || sb.stopping {
		return
	}
	if err := signalGroup(sb.cmd, syscall.SIGSTOP); err == nil {
		sb.frozen = true
	}
}

func (sb *sandbox) thaw() {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.frozen {
		_ = signalGroup(sb.cmd, syscall.SIGCONT)
		sb.frozen = false
	}
}

// checkInitLocked ends the init phase once the runtime waits for an invocation and every
// registered extension waits for an event.
func (sb *sandbox) checkInitLocked() {
	if sb.initialized || !sb.ready || sb.initErr != nil {
		return
	}
	for _, waiting := range sb.extensions {
		if !waiting {
			return
		}
	}
	sb.initialized = true
	close(sb.initDone)
}

// --- Runtime API ---------------------------------------------------------------------------

func (sb *sandbox) next(w http.ResponseWriter, r *http.Request) {
	sb.mu.Lock()
	if sb.current != nil && !sb.current.answered() {
		id := sb.current.id
		sb.mu.Unlock()
		apiError(w, http.StatusForbidden, "InvalidStateTransition", "next called before invocation "+id+" was answered")
		return
	}
	sb.current = nil
	if !sb.ready {
		sb.firstNext = time.Now()
	}
	sb.ready = true
	sb.checkInitLocked()
	sb.mu.Unlock()

	var inv *invocation
	select {
	case inv = <-sb.events:
	default:
		sb.freeze()
		select {
		case inv = <-sb.events:
		case <-r.Context().Done():
			return
		case <-sb.exited:
			return
		}
	}
	sb.thaw()
	sb.mu.Lock()
	sb.current = inv
	sb.mu.Unlock()

	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", fmt.Sprintf("arn:aws:lambda:%s:000000000000:function:%s", sb.cfg.Region, sb.cfg.Name))
	h.Set("Lambda-Runtime-Trace-Id", newTraceID())
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.payload)
}

// answering returns the invocation a /response or /error for id may answer, or writes the
// Runtime API's refusal.
func (sb *sandbox) answering(w http.ResponseWriter, id string) *invocation {
	sb.mu.Lock()
	inv := sb.current
	sb.mu.Unlock()
	switch {
	case inv == nil:
		apiError(w, http.StatusForbidden, "InvalidStateTransition", "no invocation in progress")
	case inv.id != id:
		apiError(w, http.StatusBadRequest, "InvalidRequestID", "Invalid request ID")
	case inv.answered():
		apiError(w, http.StatusForbidden, "InvalidStateTransition", "invocation "+id+" was already answered")
	default:
		return inv
	}
	return nil
}

func (sb *sandbox) response(w http.ResponseWriter, r *http.Request) {
	inv := sb.answering(w, r.PathValue("id"))
	if inv == nil {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxSyncPayload+1))
	if err != nil {
		apiError(w, http.StatusBadRequest, "TruncatedHTTPRequest", err.Error())
		return
	}
	if len(body) > MaxSyncPayload {
		inv.finish(nil, &FunctionError{Type: ErrorTypeResponseTooLarge,
			Message: fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", MaxSyncPayload)})
		apiError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge",
			fmt.Sprintf("Exceeded maximum allowed payload size (%d bytes).", MaxSyncPayload))
		return
	}
	// aws-lambda-go reports an error met while streaming the response in trailers.
	if t := r.Trailer.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
		fe := &FunctionError{Type: t}
		if b, err := base64.StdEncoding.DecodeString(r.Trailer.Get("Lambda-Runtime-Function-Error-Body")); err == nil {
			_ = json.Unmarshal(b, fe)
		}
		inv.finish(nil, fe)
	} else {
		inv.finish(body, nil)
	}
	accepted(w)
}

func (sb *sandbox) invocationError(w http.ResponseWriter, r *http.Request) {
	inv := sb.answering(w, r.PathValue("id"))
	if inv == nil {
		return
	}
	inv.finish(nil, readFunctionError(r))
	accepted(w)
}

func (sb *sandbox) initError(w http.ResponseWriter, r *http.Request) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.initialized || sb.initErr != nil {
		apiError(w, http.StatusForbidden, "InvalidStateTransition", "init/error after init")
		return
	}
	fe := readFunctionError(r)
	if fe.Type == "" {
		fe.Type = ErrorTypeInit
	}
	sb.initErr = fe
	close(sb.initFailed)
	accepted(w)
}

func readFunctionError(r *http.Request) *FunctionError {
	fe := &FunctionError{}
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxSyncPayload))
	if err := json.Unmarshal(body, fe); err != nil {
		fe.Message = string(body)
	}
	if t := r.Header.Get("Lambda-Runtime-Function-Error-Type"); t != "" && fe.Type == "" {
		fe.Type = t
	}
	if fe.Type == "" {
		fe.Type = "Unhandled"
	}
	return fe
}

// --- Extensions API ------------------------------------------------------------------------

func (sb *sandbox) register(w http.ResponseWriter, r *http.Request) {
	name := r.Header.Get("Lambda-Extension-Name")
	sb.mu.Lock()
	if sb.initialized {
		sb.mu.Unlock()
		apiError(w, http.StatusForbidden, "InvalidStateTransition", "extensions register during init only")
		return
	}
	if name == "" {
		sb.mu.Unlock()
		apiError(w, http.StatusBadRequest, "InvalidRequest", "missing Lambda-Extension-Name")
		return
	}
	id := NewRequestID()
	sb.extensions[id] = false
	sb.mu.Unlock()
	w.Header().Set("Lambda-Extension-Identifier", id)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"functionName": sb.cfg.Name, "functionVersion": "$LATEST", "handler": "bootstrap"})
}

func (sb *sandbox) extensionNext(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Lambda-Extension-Identifier")
	sb.mu.Lock()
	if _, ok := sb.extensions[id]; !ok {
		sb.mu.Unlock()
		apiError(w, http.StatusForbidden, "Extension.UnknownExtensionIdentifier", "unknown extension identifier")
		return
	}
	sb.extensions[id] = true
	sb.checkInitLocked()
	sb.mu.Unlock()
	// An extension registered for no events waits for ever; at shutdown the process is
	// signalled instead.
	select {
	case <-r.Context().Done():
	case <-sb.exited:
	}
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(FunctionError{Type: typ, Message: msg})
}

func accepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"status":"OK"}`)
}
