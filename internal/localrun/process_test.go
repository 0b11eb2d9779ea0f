package localrun

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/faults"
	"github.com/docdb-dr/docdb-dr/internal/lambdarun"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
)

var (
	buildOnce  sync.Once
	buildDir   string
	bootstraps = map[string]string{}
	buildErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// bootstrap builds functions/<fn> once per test binary and returns the executable.
func bootstrap(t *testing.T, fn string) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "localrun-bootstraps-"); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for _, f := range []string{"capture", "apply"} {
			dir := buildDir + "/" + f
			if buildErr = os.Mkdir(dir, 0o755); buildErr != nil {
				return
			}
			if bootstraps[f], buildErr = lambdarun.Build(ctx, "github.com/docdb-dr/docdb-dr/functions/"+f, dir); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bootstraps[fn]
}

type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var uuid = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestOutOfProcessFunctions runs both real bootstraps behind the Runtime API stand-in: changes
// reach DR, each invocation has a fresh request id, the warm process is reused, a kill -9 of
// the capture process is followed by a cold start that carries on, and both functions' EMF
// lines reach Metrics.
func TestOutOfProcessFunctions(t *testing.T) {
	emf, logs := &lines{}, &lines{}
	var mu sync.Mutex
	var results []CaptureResult
	p, ctx := startPipeline(t, Options{
		ManualCapture:    true,
		CaptureTimeout:   20 * time.Second,
		CaptureBootstrap: bootstrap(t, "capture"),
		ApplyBootstrap:   bootstrap(t, "apply"),
		Metrics:          emf,
		FunctionLogs:     logs,
		OnCapture: func(r CaptureResult) {
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		},
	}, nil)
	p.Start(ctx)
	foo := p.Primary().Database("bar").Collection("foo")
	mustDo(t, func() error {
		_, err := foo.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}}})
		return err
	})
	if err := p.Sync(ctx); err != nil {
		t.Fatalf("%v\nfunction logs:\n%s", err, logs.String())
	}
	firstPID := p.CaptureSandbox().PID()
	if firstPID == 0 || !p.CaptureSandbox().Kill() {
		t.Fatal("no capture process to kill")
	}
	mustDo(t, func() error { _, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: 3}}); return err })
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := p.DR().Database("bar").Collection("foo").CountDocuments(ctx, bson.D{}); err != nil || n != 3 {
		t.Errorf("DR has %d documents (%v), want 3", n, err)
	}

	mu.Lock()
	defer mu.Unlock()
	seen := map[string]bool{}
	var colds int
	for _, r := range results {
		if !uuid.MatchString(r.Owner) || seen[r.Owner] {
			t.Errorf("request id %q: want a fresh UUID per invocation", r.Owner)
		}
		seen[r.Owner] = true
		if r.ColdStart {
			colds++
		}
	}
	last := results[len(results)-1]
	if colds != 2 || last.PID == firstPID || !results[0].ColdStart {
		t.Errorf("%d cold starts (want 2: the first invocation and the one after the kill); pids %d then %d", colds, firstPID, last.PID)
	}
	for _, fn := range []string{`"Function":"capture"`, `"Function":"apply"`} {
		if !strings.Contains(emf.String(), fn) {
			t.Errorf("no EMF line with %s from the out-of-process functions", fn)
		}
	}
	if strings.Contains(logs.String(), `"_aws"`) {
		t.Error("EMF lines reached the function logs")
	}
	if !strings.Contains(logs.String(), "REPORT RequestId: "+last.Owner) {
		t.Error("no platform REPORT line in the function logs")
	}
}

// TestHooksNeedInProcessFunctions: a fault hook cannot reach into another process.
func TestHooksNeedInProcessFunctions(t *testing.T) {
	p, err := New(context.Background(), Options{
		Getenv:           Getenv(localOverrides, []string{"PRIMARY_URI=mongodb://127.0.0.1:1", "DR_URI=mongodb://127.0.0.1:1", "KAFKA_BROKERS=127.0.0.1:1", "ARCHIVE_BUCKET=b", "PRIMARY_TLS=disabled", "DR_TLS=disabled"}, nil),
		CaptureBootstrap: os.Args[0],
		Hooks:            Hooks{CaptureDeps: func(d capture.Deps) capture.Deps { return d }},
	})
	if err == nil || !strings.Contains(err.Error(), "Hooks.CaptureDeps") {
		t.Errorf("New with a capture hook and a bootstrap: %v", err)
		if p != nil {
			_ = p.Close()
		}
	}
}

// TestScheduledRetriesKeepTheRequestID: with CaptureRetryAttempts 1, a failed scheduled
// invocation is retried once with the same request id (template.yaml's 0 retries nothing).
func TestScheduledRetriesKeepTheRequestID(t *testing.T) {
	var fault faults.Fault
	var mu sync.Mutex
	var results []CaptureResult
	p, ctx := startPipeline(t, Options{
		ManualCapture: true,
		Hooks: Hooks{CaptureDeps: func(d capture.Deps) capture.Deps {
			d.Checkpoints = faults.FailingCheckpoints{Checkpoints: d.Checkpoints, SaveFault: &fault}
			return d
		}},
		CaptureRetryAttempts: 1,
		CaptureRetryDelay:    10 * time.Millisecond,
		OnCapture: func(r CaptureResult) {
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		},
	}, nil)
	mu.Lock()
	results = nil
	mu.Unlock()
	fault.Arm(0, 1)
	p.invokeEvent(ctx, ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 2 || results[0].Err == nil || results[1].Err != nil ||
		results[0].Owner != results[1].Owner || results[1].Attempt != 1 {
		t.Fatalf("attempts %+v: want a failure and one retry with the same request id", results)
	}
}
