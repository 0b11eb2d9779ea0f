//go:build unix

package lambdarun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// The test binary doubles as the function under test: with testFunctionEnv set (through
// Config.Env, the only environment a sandbox gets) TestMain runs one of these programs instead
// of the tests.
const testFunctionEnv = "LAMBDARUN_TEST_FUNCTION"

// testInitDelayEnv, a duration, makes the aws-lambda-go test function sleep that long before it
// starts its runtime: a slow init.
const testInitDelayEnv = "LAMBDARUN_TEST_INIT_DELAY"

// order is what a test invocation asks the aws-lambda-go test function to do.
type order struct {
	Sleep      string `json:"sleep,omitempty"`      // sleep this long, ignoring the deadline
	Exit       int    `json:"exit,omitempty"`       // exit with this status
	Fail       string `json:"fail,omitempty"`       // return this error
	Background bool   `json:"background,omitempty"` // start a goroutine printing "tick" every 20 ms
	Big        int    `json:"big,omitempty"`        // return a response of this many bytes
	TouchMiB   int    `json:"touchMiB,omitempty"`   // write to this many MiB, then return them to the OS
}

// report is the test function's answer.
type report struct {
	RequestID  string            `json:"requestId"`
	DeadlineMs int64             `json:"deadlineMs"`
	ARN        string            `json:"arn"`
	PID        int               `json:"pid"`
	Count      int64             `json:"count"` // invocations this process served
	Env        map[string]string `json:"env"`
	Big        string            `json:"big,omitempty"`
}

var served atomic.Int64

// runTestFunction is the aws-lambda-go test function ("go") or a raw Runtime API client that
// checks the API's refusals ("raw", "init-error", "exit-at-init").
func runTestFunction(mode string) int {
	switch mode {
	case "go":
		if d, err := time.ParseDuration(os.Getenv(testInitDelayEnv)); err == nil {
			time.Sleep(d)
		}
		lambda.StartWithOptions(goHandler, lambda.WithEnableSIGTERM(func() { fmt.Println("SIGTERM received") }))
		return 0
	case "exit-at-init":
		fmt.Println("cannot start: PRETEND_CONFIG is missing")
		return 1
	case "init-error":
		post("/2018-06-01/runtime/init/error", `{"errorType":"Runtime.ConfigError","errorMessage":"bad config"}`, "Runtime.ConfigError")
		time.Sleep(time.Minute)
		return 0
	case "raw":
		return rawClient()
	}
	return 2
}

func goHandler(ctx context.Context, o order) (report, error) {
	n := served.Add(1)
	if o.Background {
		go func() {
			for i := 0; ; i++ {
				fmt.Printf("tick %d\n", i)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	if o.Sleep != "" {
		d, _ := time.ParseDuration(o.Sleep)
		time.Sleep(d)
	}
	if o.TouchMiB > 0 {
		touch(o.TouchMiB)
	}
	if o.Exit != 0 {
		os.Exit(o.Exit)
	}
	if o.Fail != "" {
		return report{}, errors.New(o.Fail)
	}
	lc, _ := lambdacontext.FromContext(ctx)
	dl, _ := ctx.Deadline()
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return report{RequestID: lc.AwsRequestID, DeadlineMs: dl.UnixMilli(), ARN: lc.InvokedFunctionArn,
		PID: os.Getpid(), Count: n, Env: env, Big: strings.Repeat("x", o.Big)}, nil
}

// touch makes mib MiB resident (a write to every page), then frees them and returns them to
// the OS: the process's RSS goes back down, its peak RSS stays up.
func touch(mib int) {
	b := make([]byte, mib<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	debug.FreeOSMemory()
}

func api(path string) string { return "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + path }

func post(path, body, errType string) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, api(path), strings.NewReader(body))
	if errType != "" {
		req.Header.Set("Lambda-Runtime-Function-Error-Type", errType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rawClient answers each invocation with the status codes the Runtime API gave it for a series
// of wrong and right calls.
func rawClient() int {
	for {
		resp, err := http.Get(api("/2018-06-01/runtime/invocation/next"))
		if err != nil {
			return 3
		}
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		resp.Body.Close()
		codes := map[string]int{}
		codes["wrongID"], _ = post("/2018-06-01/runtime/invocation/00000000-0000-4000-8000-000000000000/response", "{}", "")
		nextEarly, err := http.Get(api("/2018-06-01/runtime/invocation/next"))
		if err == nil {
			codes["nextBeforeAnswer"] = nextEarly.StatusCode
			nextEarly.Body.Close()
		}
		codes["tooLarge"], _ = post("/2018-06-01/runtime/invocation/"+id+"/response", strings.Repeat("x", MaxSyncPayload+1), "")
		codes["afterAnswer"], _ = post("/2018-06-01/runtime/invocation/"+id+"/response", "{}", "")
		codes["initErrorLate"], _ = post("/2018-06-01/runtime/init/error", "{}", "")
		b, _ := json.Marshal(codes)
		// The invocation already failed (too large); say what was seen on stdout.
		fmt.Printf("codes %s\n", b)
	}
}
