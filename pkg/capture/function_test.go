package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

func TestNewFunctionReportsEveryConfigurationProblem(t *testing.T) {
	env := map[string]string{"KAFKA_SASL": "plain", "MAX_EVENTS": "lots"}
	_, err := NewFunction(context.Background(), Env{Getenv: func(k string) string { return env[k] }, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: &bytes.Buffer{}})
	if err == nil {
		t.Fatal("NewFunction accepted an empty configuration")
	}
	for _, want := range []string{"PRIMARY_URI", "KAFKA_BROKERS", "ARCHIVE_BUCKET", "WATCH_DB", "KAFKA_SASL", "MAX_EVENTS"} {
		if !strings.Contains(err.Error(), want+":") {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

// TestHandlerEndToEnd runs the function's wiring (NewFunction, as functions/capture does) against the embedded server and kfake: a
// scheduled event, then a manual invoke with overrides, then a bad payload.
func TestHandlerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	srv := mongoserver.New(mongoserver.Options{DocumentDB: true})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "changevents"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	env := map[string]string{
		"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
		"PRIMARY_URI": srv.URI(), "PRIMARY_TLS": "disabled",
		"KAFKA_BROKERS": strings.Join(kc.ListenAddrs(), ","), "KAFKA_TLS": "false",
		"ARCHIVE_BUCKET": "archive", "S3_ENDPOINT": "http://127.0.0.1:1",
		"WATCH_DB": "bar", "WATCH_COLLECTIONS": "foo", "IDLE_TIMEOUT": "300ms", "MAX_AWAIT": "100ms",
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	getenv := func(k string) string { return env[k] }
	awsCfg, err := config.LoadAWS(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFunction(ctx, Env{Getenv: getenv, AWS: awsCfg, Logger: slog.New(slog.NewJSONHandler(&out, nil)), Metrics: &out})
	if err != nil {
		t.Fatal(err)
	}
	client, err := docdb.Connect(ctx, docdb.Settings{URI: srv.URI(), TLS: docdb.TLSDisabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "modifyChangeStreams", Value: 1}, {Key: "database", Value: "bar"}, {Key: "collection", Value: "foo"}, {Key: "enable", Value: true}}).Err(); err != nil {
		t.Fatal(err)
	}

	lctx := lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	scheduled, err := os.ReadFile("../../events/schedule.json") // the sample `sam local invoke -e` uses
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := f.Handle(lctx, json.RawMessage(scheduled)); err != nil || sum.Owner != "req-1" || !sum.CheckpointSaved {
		t.Fatalf("scheduled run: %+v, %v", sum, err)
	}
	var docs []any
	for i := range 5 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}})
	}
	if _, err := client.Database("bar").Collection("foo").InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	sum, err := f.Handle(lctx, json.RawMessage(`{"maxEvents": 2}`))
	if err != nil || sum.Events != 2 || sum.StopReason != StopMaxEvents {
		t.Fatalf("manual run: %+v, %v", sum, err)
	}
	if _, err := f.Handle(lctx, json.RawMessage(`{"maxEvnts": 2}`)); err == nil {
		t.Error("a misspelt override was accepted")
	}
	if !strings.Contains(out.String(), `"_aws"`) || !strings.Contains(out.String(), `"capture summary"`) {
		t.Errorf("no EMF or summary line in the output:\n%s", out.String())
	}
}

// TestFlushTimeoutAbortsTheProducer: through the shipped wiring (NewFunction, its publisher
// slot), a run whose flush times out against a slow broker aborts and discards its producer.
// Checked at the broker: no produce request of that run arrives after its flush timed out, none
// is appended after the run returned, so the messages the producer still buffered never reach
// Kafka; the next run, on a fresh producer, republishes from the checkpoint and nothing is lost.
func TestFlushTimeoutAbortsTheProducer(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	srv := mongoserver.New(mongoserver.Options{DocumentDB: true})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "changevents"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var delay atomic.Int64
	type produced struct{ arrived, appended time.Time }
	var mu sync.Mutex
	var seen []produced
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		arrived := time.Now()
		if d := time.Duration(delay.Load()); d > 0 {
			kc.SleepControl(func() { time.Sleep(d) })
		}
		mu.Lock()
		seen = append(seen, produced{arrived, time.Now()})
		mu.Unlock()
		return nil, nil, false
	})
	env := map[string]string{
		"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
		"PRIMARY_URI": srv.URI(), "PRIMARY_TLS": "disabled",
		"KAFKA_BROKERS": strings.Join(kc.ListenAddrs(), ","), "KAFKA_TLS": "false",
		"ARCHIVE_BUCKET": "archive", "S3_ENDPOINT": "http://127.0.0.1:1",
		"WATCH_DB": "bar", "WATCH_COLLECTIONS": "foo", "IDLE_TIMEOUT": "200ms", "MAX_AWAIT": "100ms",
		"DEADLINE_MARGIN": "2s",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	getenv := func(k string) string { return env[k] }
	awsCfg, err := config.LoadAWS(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	f, err := NewFunction(ctx, Env{Getenv: getenv, AWS: awsCfg, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	client, err := docdb.Connect(ctx, docdb.Settings{URI: srv.URI(), TLS: docdb.TLSDisabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "modifyChangeStreams", Value: 1}, {Key: "database", Value: "bar"}, {Key: "collection", Value: "foo"}, {Key: "enable", Value: true}}).Err(); err != nil {
		t.Fatal(err)
	}
	invoke := func(id string, timeout time.Duration) (Summary, error) {
		ictx, cancel := context.WithTimeout(lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: id}), timeout)
		defer cancel()
		return f.Handle(ictx, json.RawMessage(`{}`))
	}
	if _, err := invoke("req-0", 30*time.Second); err != nil { // pins the start position, connects the producer
		t.Fatal(err)
	}
	var docs []any
	for i := range 200 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: strings.Repeat("x", 200)}})
	}
	if _, err := client.Database("bar").Collection("foo").InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}

	// Timeout 4 s: reads stop at 2 s, the flush gives up at 3 s (deadline - DEADLINE_MARGIN/2),
	// the broker answers the request it holds after 3.2 s, within the 4 s the abort may wait.
	delay.Store(int64(3200 * time.Millisecond))
	start := time.Now()
	flushGaveUp := start.Add(3 * time.Second)
	sum, err := invoke("req-1", 4*time.Second)
	ended := time.Now()
	if !errors.Is(err, kafka.ErrNotAcknowledged) || sum.CheckpointSaved && sum.Acknowledged == sum.Events {
		t.Fatalf("run against the slow broker: %+v, %v; want ErrNotAcknowledged", sum, err)
	}
	if !strings.Contains(logs.String(), "aborted and discarded the kafka producer") {
		t.Errorf("the producer was not aborted:\n%s", logs.String())
	}
	delay.Store(0)
	time.Sleep(4 * time.Second) // anything the slow run left behind would arrive by now
	nextStart := time.Now()
	mu.Lock()
	for _, r := range seen {
		if r.arrived.After(flushGaveUp.Add(50*time.Millisecond)) && r.arrived.Before(nextStart) {
			t.Errorf("a produce request arrived %v after the flush gave up", r.arrived.Sub(flushGaveUp))
		}
		if r.appended.After(ended) && r.arrived.Before(nextStart) {
			t.Errorf("a produce request of the slow run was appended %v after the run ended", r.appended.Sub(ended))
		}
	}
	mu.Unlock()
	t.Logf("slow run: %d events read, %d acknowledged, ended %v after it started (%v after the flush gave up)",
		sum.Events, sum.Acknowledged, ended.Sub(start).Round(time.Millisecond), ended.Sub(flushGaveUp).Round(time.Millisecond))

	// The next invocation connects a fresh producer and republishes the unacknowledged tail.
	next, err := invoke("req-2", 30*time.Second)
	if err != nil || next.Events == 0 {
		t.Fatalf("run after the slow one: %+v, %v", next, err)
	}
	got := map[string]bool{}
	for _, r := range consumeAll(t, kc.ListenAddrs(), 200) {
		got[string(r.Key)] = true
	}
	if len(got) != 200 {
		t.Errorf("%d of 200 documents in Kafka after the recovery run", len(got))
	}
}

// consumeAll reads at least n records from the start of the topic with an independent client.
func consumeAll(t *testing.T, addrs []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics("changevents"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// TestCaptureMainOnlyWires: functions/capture/main.go stays a few lines that build the function
// with NewFunction and hand it to the Lambda runtime; everything else (configuration, clients,
// the publisher's lifecycle) lives in Function, where it is tested.
func TestCaptureMainOnlyWires(t *testing.T) {
	src, err := os.ReadFile("../../functions/capture/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(src, []byte("\n")); n >= 40 {
		t.Errorf("functions/capture/main.go has %d lines, want under 40", n)
	}
	for _, want := range []string{"capture.NewFunction(", "lambda.StartWithOptions(f.Handle, lambda.WithEnableSIGTERM(f.Close))"} {
		if !bytes.Contains(src, []byte(want)) {
			t.Errorf("functions/capture/main.go does not call %s", want)
		}
	}
	for _, banned := range []string{"kafka.", "sarama", "docdb.", "checkpoint."} {
		if bytes.Contains(src, []byte(banned)) {
			t.Errorf("functions/capture/main.go builds %s itself: wiring belongs in capture.NewFunction", banned)
		}
	}
}
