package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/spf13/afero"
)

// startS3 starts the chosen S3 server and creates the archive bucket.
func (st *Stack) startS3(ctx context.Context, opts Options) error {
	var err error
	switch opts.S3 {
	case S3GoFakeS3:
		err = st.startGoFakeS3(opts)
	case S3VersityGW:
		err = st.startVersityGW(ctx, opts)
	default:
		return fmt.Errorf("devstack: unknown S3 server %q (want %s or %s)", opts.S3, S3GoFakeS3, S3VersityGW)
	}
	if err != nil {
		return err
	}
	return ensureBucket(ctx, NewS3Client(st.S3Endpoint), st.Bucket)
}

// NewS3Client is an S3 client for a local endpoint: path-style addressing
// and the stack's dummy credentials.
func NewS3Client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
	})
}

// ensureBucket creates the bucket unless it is there already (a data
// directory from an earlier run).
func ensureBucket(ctx context.Context, c *s3.Client, bucket string) error {
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err == nil || errors.As(err, &owned) || errors.As(err, &exists) {
		return nil
	}
	return fmt.Errorf("devstack: create bucket %s: %w", bucket, err)
}

// startGoFakeS3 serves gofakes3 from an http.Server on loopback. Objects
// live in memory, or as plain files under DataDir/s3/buckets (metadata in
// DataDir/s3/metadata) with a data directory.
func (st *Stack) startGoFakeS3(opts Options) error {
	var backend gofakes3.Backend = s3mem.New()
	if opts.DataDir != "" {
		dir := filepath.Join(opts.DataDir, "s3")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("devstack: s3 dir: %w", err)
		}
		b, err := s3afero.MultiBucket(afero.NewBasePathFs(afero.NewOsFs(), dir))
		if err != nil {
			return fmt.Errorf("devstack: s3 backend: %w", err)
		}
		backend = b
	}
	faker := gofakes3.New(backend,
		gofakes3.WithAutoBucket(false),
		gofakes3.WithLogger(gofakes3Logger{opts.Logger.With("component", "gofakes3")}),
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("devstack: s3 listen: %w", err)
	}
	var handler http.Handler = faker.Server()
	if !opts.LenientS3 {
		handler = newStrictS3(handler, opts.S3SlowDownRate, opts.S3SlowDownSeed)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			opts.Logger.Error("s3 server stopped", "err", err)
		}
	}()
	st.onClose(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	st.S3Endpoint = "http://" + ln.Addr().String()
	return nil
}

// gofakes3Logger passes gofakes3's warnings and errors to slog.
type gofakes3Logger struct{ log *slog.Logger }

func (l gofakes3Logger) Print(level gofakes3.LogLevel, v ...any) {
	switch level {
	case gofakes3.LogErr:
		l.log.Error(fmt.Sprint(v...))
	case gofakes3.LogWarn:
		l.log.Warn(fmt.Sprint(v...))
	}
}

// startVersityGW runs the versitygw binary with its posix backend as a
// child process. Objects are files under DataDir/s3 (or a temporary
// directory removed by Close).
func (st *Stack) startVersityGW(ctx context.Context, opts Options) error {
	bin, err := exec.LookPath(opts.VersityGWBinary)
	if err != nil {
		return fmt.Errorf("devstack: versitygw binary (install with `go install github.com/versity/versitygw/cmd/versitygw@v1.8.0`): %w", err)
	}
	root := filepath.Join(opts.DataDir, "s3")
	if opts.DataDir == "" {
		if root, err = os.MkdirTemp("", "docdbdr-devstack-s3-"); err != nil {
			return fmt.Errorf("devstack: s3 dir: %w", err)
		}
		st.onClose(func() error { return os.RemoveAll(root) })
	} else if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("devstack: s3 dir: %w", err)
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}

	cmd := exec.Command(bin, "--port", addr, "--region", Region, "--quiet", "posix", root)
	// Credentials through the environment keep them off the process list.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKeyID, "ROOT_SECRET_KEY="+SecretAccessKey)
	cmd.Stdout = slogWriter{opts.Logger.With("component", "versitygw")}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devstack: start versitygw: %w", err)
	}
	child := &childProcess{proc: cmd.Process, exited: make(chan struct{})}
	go func() {
		child.err = cmd.Wait()
		close(child.exited)
	}()
	st.onClose(child.stop)

	st.S3Endpoint = "http://" + addr
	return child.waitListening(ctx, addr)
}

// childProcess is a started subprocess and its exit.
type childProcess struct {
	proc   *os.Process
	exited chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before exited is closed
}

// freeLoopbackAddr picks a free port on 127.0.0.1 for a child process.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("devstack: pick a port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitListening waits until addr accepts TCP connections, the process
// exits, or 20s pass.
func (c *childProcess) waitListening(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			return conn.Close()
		}
		select {
		case <-c.exited:
			return fmt.Errorf("devstack: versitygw exited at start: %w", c.err)
		case <-ctx.Done():
			return fmt.Errorf("devstack: versitygw not listening on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopProcess sends SIGTERM, waits up to 5s, then kills.
func (c *childProcess) stop() error {
	if err := c.proc.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("devstack: stop versitygw: %w", err)
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(5 * time.Second):
		_ = c.proc.Kill()
		<-c.exited
		return errors.New("devstack: versitygw did not stop on SIGTERM; killed")
	}
}

// slogWriter logs each write of a child process's output as one line.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Info(string(p))
	return len(p), nil
}
