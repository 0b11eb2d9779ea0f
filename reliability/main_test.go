package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
)

// stackChildEnv, when "1", makes the test binary serve a local stack instead of running tests:
// the soak test starts the stack in a child process so that the heap and goroutines it samples
// are the functions' own, not the in-memory clusters'.
const stackChildEnv = "RELIABILITY_STACK_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(stackChildEnv) == "1" {
		os.Exit(serveStack())
	}
	code := m.Run()
	if bootstrapDir != "" {
		_ = os.RemoveAll(bootstrapDir)
	}
	os.Exit(code)
}

// serveStack runs devstack until its standard input closes (the parent test ended or died),
// after printing the stack's environment as one JSON line.
func serveStack() int {
	st, err := devstack.Start(context.Background(), devstack.Options{Partitions: partitions, Topic: topic, Bucket: bucket, Prefix: prefix})
	if err != nil {
		fmt.Fprintln(os.Stderr, "stack child:", err)
		return 1
	}
	defer st.Close()
	if err := json.NewEncoder(os.Stdout).Encode(st.Env()); err != nil {
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startStackProcess starts the stack in a child process and connects to it like startStack,
// without the fault hooks (the servers are in the other process).
func startStackProcess(t *testing.T, ctx context.Context) *stack {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), stackChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		t.Fatalf("stack child: %v", err)
	}
	var env []string
	if err := json.Unmarshal(line, &env); err != nil {
		t.Fatalf("stack child said %q: %v", line, err)
	}
	get := func(name string) string {
		for _, kv := range env {
			if k, v, ok := strings.Cut(kv, "="); ok && k == name {
				return v
			}
		}
		t.Fatalf("stack child did not give %s", name)
		return ""
	}
	st := &stack{brokers: strings.Split(get("KAFKA_BROKERS"), ","), primaryURI: get("PRIMARY_URI"), drURI: get("DR_URI"), s3URL: get("S3_ENDPOINT")}
	st.primary = connect(t, ctx, st.primaryURI)
	st.dr = connect(t, ctx, st.drURI)
	st.s3c = devstack.NewS3Client(st.s3URL)
	st.archive = archive.NewS3(st.s3c, bucket)
	enableStreams(t, ctx, st.primary)
	return st
}
