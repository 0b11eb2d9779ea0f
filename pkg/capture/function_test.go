package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
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
