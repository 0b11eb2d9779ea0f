package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// TestReadmeRecipe runs the README's local recipe with the built binary, each step in its own
// process as in its own terminal, with no variable but those of the env file devstack writes:
//
//	docdbdr devstack --data DIR               # terminal 1
//	. DIR/env.sh && docdbdr run               # terminal 2
//	(writes from any Mongo client)            # terminal 3
//	. DIR/env.sh && docdbdr verify / status   # to watch
//
// and stops them with SIGINT and SIGTERM.
func TestReadmeRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "docdbdr")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "stack")
	// Only what a fresh terminal has: nothing of docdb-dr's variables.
	bare := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tmp}

	stack := exec.Command(bin, "devstack", "--data", dir, "--log-level", "warn")
	stack.Env, stack.Stderr = bare, os.Stderr
	stackOut, err := stack.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := stack.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stack.Process.Kill(); _ = stack.Wait() }()
	env := readExports(t, stackOut)
	go func() { _, _ = io.Copy(io.Discard, stackOut) }()
	if env["WATCH_DB"] != "bar" {
		t.Fatalf("the env file sets WATCH_DB=%q, want bar", env["WATCH_DB"])
	}

	// terminal: `. DIR/env.sh && docdbdr <args>`
	shell := func(args ...string) *exec.Cmd {
		c := exec.CommandContext(ctx, "sh", append([]string{"-c", `. "$0/env.sh" && exec "$@"`, dir, bin}, args...)...)
		c.Env = bare
		return c
	}
	runCmd := shell("run", "--capture-interval", "200ms")
	runOut := &syncBuffer{}
	runCmd.Stdout, runCmd.Stderr = runOut, os.Stderr
	if err := runCmd.Start(); err != nil {
		t.Fatal(err)
	}
	runExited := make(chan error, 1)
	go func() { runExited <- runCmd.Wait() }()
	defer func() { _ = runCmd.Process.Kill() }()

	// Writes from a plain driver client.
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(env["PRIMARY_URI"]))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	drClient, err := mongo.Connect(ctx, options.Client().ApplyURI(env["DR_URI"]))
	if err != nil {
		t.Fatal(err)
	}
	defer drClient.Disconnect(context.Background())
	foo := client.Database("bar").Collection("foo")
	// Capture starts at "now" the first time: markers until one reaches DR, then the markers go
	// (the delete of one DR has is intercepted and archived; verify counts it as such).
	for i := 0; ; i++ {
		if _, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: "marker"}, {Key: "i", Value: i}}); err != nil {
			if !mongo.IsDuplicateKeyError(err) {
				t.Fatal(err)
			}
		}
		if n, _ := drClient.Database("bar").Collection("foo").CountDocuments(ctx, bson.D{{Key: "_id", Value: "marker"}}); n > 0 {
			break
		}
		if _, err := foo.DeleteOne(ctx, bson.D{{Key: "_id", Value: "marker"}}); err != nil {
			t.Fatal(err)
		}
		if i > 300 {
			t.Fatalf("no write reached DR within 30s; run output:\n%s", runOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := foo.DeleteOne(ctx, bson.D{{Key: "_id", Value: "marker"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := foo.InsertOne(ctx, bson.D{{Key: "_id", Value: i}, {Key: "v", Value: int64(i) * 3}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := foo.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: 5}}}}); err != nil {
		t.Fatal(err)
	}

	// verify, as the README says, until apply has caught up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := shell("verify").CombinedOutput()
		if err == nil {
			if !strings.Contains(string(out), "RESULT") {
				t.Logf("verify:\n%s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify still fails after 60s: %v\n%s\nrun output:\n%s", err, out, runOut.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	out, err := shell("status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "scope bar") || !strings.Contains(string(out), "healthy") {
		t.Errorf("status: %v\n%s", err, out)
	}

	// Ctrl-C in terminal 2, then terminal 1.
	if err := runCmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runExited:
		if err != nil {
			t.Errorf("run after SIGINT: %v, want exit 0\n%s", err, runOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s of SIGINT")
	}
	if !strings.Contains(runOut.String(), "docdbdr run: stopped; ") {
		t.Errorf("run output:\n%s", runOut.String())
	}
	if err := stack.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}
