package apply

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/config"
)

// TestSampleEventThroughHandler feeds events/msk.json (the sample for `sam local invoke -e`: an
// insert, an update, a replace and a delete of one bar.foo document) through the function's own
// constructor and handler (NewFunction, as functions/apply does), against the embedded DR server and S3: DR keeps the replaced document and
// the archive holds the intercepted delete with that document as its before-image.
func TestNewFunctionReportsEveryConfigurationProblem(t *testing.T) {
	env := map[string]string{
		"DR_URI":           "mongodb://127.0.0.1:1/",
		"DR_TLS":           "disabled",
		"ARCHIVE_BUCKET":   "archive",
		"KAFKA_TOPIC":      "changevents",
		"INTERCEPT_POLICY": "delete=keep",
		"NAMESPACE_MAP":    "bar=bar_dr.foo",
	}
	_, err := NewFunction(context.Background(), Env{Getenv: func(k string) string { return env[k] }, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: io.Discard})
	if err == nil {
		t.Fatal("NewFunction accepted a bad policy and namespace map")
	}
	for _, want := range []string{"INTERCEPT_POLICY", "NAMESPACE_MAP"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestSampleEventThroughHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	env := map[string]string{}
	for _, kv := range st.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	getenv := func(k string) string { return env[k] }
	awsCfg, err := config.LoadAWS(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewFunction(ctx, Env{Getenv: getenv, AWS: awsCfg, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../events/msk.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev events.KafkaEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	sum, err := h.Handle(ctx, ev)
	if err != nil {
		t.Fatalf("handler failed on the sample event: %v", err)
	}
	if sum.Records != 4 {
		t.Errorf("summary counts %d records, the sample has 4", sum.Records)
	}

	dr, err := mongo.Connect(ctx, options.Client().ApplyURI(st.DRURI))
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Disconnect(ctx)
	var got bson.M
	if err := dr.Database("bar").Collection("foo").FindOne(ctx, bson.D{}).Decode(&got); err != nil {
		t.Fatalf("the intercepted delete removed the document from DR: %v", err)
	}
	if got["x"] != int32(3) || got["y"] != "z" {
		t.Errorf("DR holds %v, want the replaced document {x: 3, y: z}", got)
	}

	ar := archive.NewS3(devstack.NewS3Client(st.S3Endpoint), st.Bucket)
	keys, err := ar.List(ctx, st.Prefix+"deletes/db=bar/coll=foo/")
	if err != nil || len(keys) != 1 {
		t.Fatalf("archive objects %v (%v), want exactly one", keys, err)
	}
	obj, err := ar.Get(ctx, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	lines, err := archive.DecodeObject(obj)
	if err != nil || len(lines) != 1 {
		t.Fatalf("archive lines %d (%v), want the one delete", len(lines), err)
	}
	rec, err := archive.ParseLine(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if rec.Operation != "delete" || rec.DB != "bar" || rec.Coll != "foo" || !strings.Contains(string(rec.Before), `"y":"z"`) {
		t.Errorf("archive line %s", lines[0])
	}
}
