package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
)

func TestRunExitStatus(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, 2},
		{"help", []string{"help"}, 0},
		{"unknown command", []string{"nope"}, 2},
		{"devstack help", []string{"devstack", "-h"}, 0},
		{"devstack bad flag", []string{"devstack", "--bogus"}, 2},
		{"devstack stray argument", []string{"devstack", "extra"}, 2},
		{"devstack zero partitions", []string{"devstack", "--partitions", "0"}, 2},
		{"devstack unknown s3", []string{"devstack", "--s3", "minio"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(context.Background(), tc.args, io.Discard, &stderr); got != tc.want {
				t.Errorf("exit %d, want %d; stderr:\n%s", got, tc.want, stderr.String())
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "'plain'"},
		{"mongodb://h:1/?replicaSet=rs0&tls=true", "'mongodb://h:1/?replicaSet=rs0&tls=true'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
	}
	for _, tc := range tests {
		if got := shellQuote(tc.in); got != tc.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestDevstackInProcess runs the subcommand in-process and checks that the
// printed variables name endpoints that answer, and that cancelling stops it.
func TestDevstackInProcess(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	exit := make(chan int, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer outW.Close()
		exit <- run(ctx, []string{"devstack", "--partitions", "2", "--data", dir, "--tls", "--auth", "--log-level", "warn"},
			outW, os.Stderr)
	}()
	// Stop the stack before t.TempDir's cleanup removes its data, also when
	// the test fails early.
	t.Cleanup(func() { cancel(); <-stopped })
	env := readExports(t, outR)
	go io.Copy(io.Discard, outR)

	checkEndpoints(t, env, 2)
	fileEnv := readExports(t, mustOpen(t, filepath.Join(dir, "env.sh")))
	for name, v := range env {
		if fileEnv[name] != v {
			t.Errorf("env.sh has %s=%q, stdout %q", name, fileEnv[name], v)
		}
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit %d after cancel, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("devstack did not stop within 20s of cancel")
	}
}

// TestDevstackSubprocess builds the binary, runs `docdbdr devstack`, has a
// real shell source the printed lines, and stops it with SIGTERM.
func TestDevstackSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "docdbdr")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "devstack", "--partitions", "4", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		_ = cmd.Process.Kill() // no-op once it has exited
	}()

	var printed bytes.Buffer
	env := readExports(t, io.TeeReader(stdout, &printed))
	go func() { _, _ = io.Copy(io.Discard, stdout); exited <- cmd.Wait() }()

	// What a shell makes of the lines must be what we parsed.
	envFile := filepath.Join(t.TempDir(), "env.sh")
	if err := os.WriteFile(envFile, printed.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `. "$1" && printf '%s\n' "$PRIMARY_URI" "$KAFKA_BROKERS" "$S3_ENDPOINT" "$ARCHIVE_PREFIX"`
	out, err := exec.Command("sh", "-c", script, "sh", envFile).Output()
	if err != nil {
		t.Fatalf("sh could not source the exports: %v", err)
	}
	want := strings.Join([]string{env["PRIMARY_URI"], env["KAFKA_BROKERS"], env["S3_ENDPOINT"], env["ARCHIVE_PREFIX"]}, "\n") + "\n"
	if string(out) != want {
		t.Errorf("shell read\n%s\nwant\n%s", out, want)
	}
	checkEndpoints(t, env, 4)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("devstack did not stop within 20s of SIGTERM")
	}
}

// readExports reads `export NAME='value'` lines up to the ready line.
func readExports(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	env := map[string]string{}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
			if sc.Text() == readyLine {
				return
			}
		}
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok || line == readyLine {
				if len(env) == 0 {
					t.Fatal("no export lines printed")
				}
				return env
			}
			name, value, ok := parseExport(line)
			if !ok {
				t.Fatalf("line %q is not export NAME='value'", line)
			}
			env[name] = value
		case <-timeout:
			t.Fatal("no ready line within 60s")
		}
	}
}

// parseExport undoes exportLines for one line.
func parseExport(line string) (name, value string, ok bool) {
	rest, ok := strings.CutPrefix(line, "export ")
	if !ok {
		return "", "", false
	}
	name, quoted, ok := strings.Cut(rest, "=")
	if !ok || len(quoted) < 2 || quoted[0] != '\'' || quoted[len(quoted)-1] != '\'' {
		return "", "", false
	}
	return name, strings.ReplaceAll(quoted[1:len(quoted)-1], `'\''`, "'"), true
}

// checkEndpoints pings both Mongo servers, reads the topic's metadata and
// checks that the bucket exists, all from the printed variables only.
func checkEndpoints(t *testing.T, env map[string]string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"PRIMARY", "DR"} {
		uri := env[name+"_URI"]
		if ca := env[name+"_TLS_CA_FILE"]; ca != "" {
			uri += "&tlsCAFile=" + url.QueryEscape(ca)
		}
		client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri).SetServerSelectionTimeout(10*time.Second))
		if err != nil {
			t.Fatalf("%s: connect: %v", name, err)
		}
		err = client.Ping(ctx, nil)
		_ = client.Disconnect(ctx)
		if err != nil {
			t.Fatalf("%s: ping: %v", name, err)
		}
	}

	client, err := sarama.NewClient(strings.Split(env["KAFKA_BROKERS"], ","), sarama.NewConfig())
	if err != nil {
		t.Fatalf("kafka: %v", err)
	}
	parts, err := client.Partitions(env["KAFKA_TOPIC"])
	client.Close()
	if err != nil || len(parts) != partitions {
		t.Errorf("topic %s has partitions %v (%v), want %d", env["KAFKA_TOPIC"], parts, err, partitions)
	}

	if env["AWS_ACCESS_KEY_ID"] == "" || env["AWS_REGION"] == "" {
		t.Errorf("AWS SDK variables missing: %v", env)
	}
	s3c := devstack.NewS3Client(env["S3_ENDPOINT"])
	if _, err := s3c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(env["ARCHIVE_BUCKET"])}); err != nil {
		t.Errorf("bucket %s: %v", env["ARCHIVE_BUCKET"], err)
	}
}

func mustOpen(t *testing.T, path string) io.Reader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(append(b, []byte(readyLine+"\n")...))
}
