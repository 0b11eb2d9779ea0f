package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readpref"
)

func TestStartServesEveryEndpoint(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		need string // executable the case needs, skipped when absent
	}{
		{name: "in memory", opts: Options{}},
		{name: "data dir and TLS", opts: Options{DataDir: "TEMP", TLS: true, Partitions: 2}},
		{name: "auth", opts: Options{Username: "dr", Password: "s3cret"}},
		{name: "MongoDB primary, wire version 13", opts: Options{PrimaryIsMongoDB: true, WireVersion: 13}},
		{name: "versitygw", opts: Options{S3: S3VersityGW, DataDir: "TEMP"}, need: "versitygw"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.need != "" {
				if _, err := exec.LookPath(tc.need); err != nil {
					t.Skipf("%s not on PATH: %v", tc.need, err)
				}
			}
			if tc.opts.DataDir == "TEMP" {
				tc.opts.DataDir = t.TempDir()
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			st, err := Start(ctx, tc.opts)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer func() {
				if err := st.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()

			for _, uri := range []string{st.PrimaryURI, st.DRURI} {
				pingMongo(ctx, t, uri, st.CAFile)
			}
			// DocumentDB refuses a change stream until modifyChangeStreams
			// enables it; MongoDB (and the DR server) opens it at once.
			if !tc.opts.TLS { // the CA is checked by pingMongo; keep this helper plain
				checkStreamsGated(ctx, t, st.PrimaryURI, !tc.opts.PrimaryIsMongoDB)
				checkStreamsGated(ctx, t, st.DRURI, false)
			}
			if tc.opts.Username != "" {
				u, _ := url.Parse(st.PrimaryURI)
				if u.User.Username() != tc.opts.Username {
					t.Errorf("primary URI has user %q, want %q", u.User.Username(), tc.opts.Username)
				}
				u.User = nil
				if err := listDatabases(ctx, u.String()); err == nil {
					t.Error("listDatabases without credentials succeeded; auth is not enforced")
				}
				if err := listDatabases(ctx, st.PrimaryURI); err != nil {
					t.Errorf("listDatabases with the URI's credentials: %v", err)
				}
			}
			wantValue := []byte("hello " + tc.name)
			produceOne(t, st.KafkaBrokers, st.Topic, wantValue)
			if got := consumeOne(t, st.KafkaBrokers, st.Topic); !bytes.Equal(got, wantValue) {
				t.Errorf("consumed %q, want %q", got, wantValue)
			}
			putObject(ctx, t, st, "docdbdr/bar/foo/one.json", wantValue)
			if got := getObject(ctx, t, st, "docdbdr/bar/foo/one.json"); !bytes.Equal(got, wantValue) {
				t.Errorf("S3 object %q, want %q", got, wantValue)
			}
		})
	}
}

// TestDataDirSurvivesRestart checks what the data directory promises: the
// Kafka log, the archive bucket and both Mongo servers' data are there after
// a restart.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	st, err := Start(ctx, Options{DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	produceOne(t, st.KafkaBrokers, st.Topic, []byte("kept"))
	putObject(ctx, t, st, "docdbdr/kept.json", []byte("archived"))
	for _, uri := range []string{st.PrimaryURI, st.DRURI} {
		mongoDo(ctx, t, uri, func(c *mongo.Collection) error {
			_, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: uri}})
			return err
		})
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = Start(ctx, Options{DataDir: dir, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := consumeOne(t, st.KafkaBrokers, st.Topic); string(got) != "kept" {
		t.Errorf("after restart the topic holds %q, want %q", got, "kept")
	}
	if got := getObject(ctx, t, st, "docdbdr/kept.json"); string(got) != "archived" {
		t.Errorf("after restart the object holds %q, want %q", got, "archived")
	}
	for _, uri := range []string{st.PrimaryURI, st.DRURI} {
		mongoDo(ctx, t, uri, func(c *mongo.Collection) error {
			n, err := c.CountDocuments(ctx, bson.D{})
			if err == nil && n != 1 {
				err = fmt.Errorf("%d documents after restart, want the 1 written before", n)
			}
			return err
		})
	}
}

// mongoDo runs fn on collection d.kept of the server at uri.
func mongoDo(ctx context.Context, t *testing.T, uri string, fn func(*mongo.Collection) error) {
	t.Helper()
	cl, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(ctx)
	if err := fn(cl.Database("d").Collection("kept")); err != nil {
		t.Fatalf("%s: %v", uri, err)
	}
}

func TestEnvNames(t *testing.T) {
	st := &Stack{PrimaryURI: "mongodb://p", DRURI: "mongodb://d", KafkaBrokers: []string{"a:1", "b:2"},
		Topic: "changevents", S3Endpoint: "http://s", Bucket: "b", Prefix: "docdbdr/"}
	tests := []struct {
		name   string
		caFile string
		want   map[string]string
	}{
		{"plain", "", map[string]string{"PRIMARY_TLS": "disabled", "DR_TLS": "disabled", "KAFKA_BROKERS": "a:1,b:2"}},
		{"tls", "/x/ca.pem", map[string]string{"PRIMARY_TLS": "required", "DR_TLS_CA_FILE": "/x/ca.pem", "PRIMARY_TLS_CA_FILE": "/x/ca.pem"}},
	}
	always := []string{"PRIMARY_URI", "DR_URI", "PRIMARY_TLS", "DR_TLS", "KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_TLS",
		"ARCHIVE_BUCKET", "ARCHIVE_PREFIX", "S3_ENDPOINT", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st.CAFile = tc.caFile
			got := map[string]string{}
			for _, kv := range st.Env() {
				name, value, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("%q is not NAME=value", kv)
				}
				got[name] = value
			}
			for _, name := range always {
				if _, ok := got[name]; !ok {
					t.Errorf("%s missing from Env", name)
				}
			}
			for name, v := range tc.want {
				if got[name] != v {
					t.Errorf("%s=%q, want %q", name, got[name], v)
				}
			}
		})
	}
}

func pingMongo(ctx context.Context, t *testing.T, uri, caFile string) {
	t.Helper()
	if caFile != "" {
		uri += "&tlsCAFile=" + url.QueryEscape(caFile)
	}
	if err := ping(ctx, uri); err != nil {
		t.Fatalf("ping %s: %v", redact(uri), err)
	}
}

// ping connects with the v1 driver and runs ping on the primary.
func ping(ctx context.Context, uri string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri).SetServerSelectionTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer client.Disconnect(context.Background())
	return client.Ping(ctx, readpref.Primary())
}

// checkStreamsGated opens a change stream on bar.foo and checks whether
// the server refused it, as DocumentDB does before modifyChangeStreams.
func checkStreamsGated(ctx context.Context, t *testing.T, uri string, wantGated bool) {
	t.Helper()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer client.Disconnect(context.Background())
	cs, err := client.Database("bar").Collection("foo").Watch(ctx, mongo.Pipeline{})
	if err == nil {
		cs.Close(ctx)
	}
	if gated := err != nil; gated != wantGated {
		t.Errorf("%s: change stream refused = %v (%v), want %v", redact(uri), gated, err, wantGated)
	}
}

// listDatabases runs a command that, unlike ping, needs authentication.
func listDatabases(ctx context.Context, uri string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri).SetServerSelectionTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer client.Disconnect(context.Background())
	_, err = client.ListDatabaseNames(ctx, bson.D{})
	return err
}

// redact hides a URI's password in test output.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "<unparseable URI>"
	}
	return u.Redacted()
}

func produceOne(t *testing.T, brokers []string, topic string, value []byte) {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(value)}); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// consumeOne reads the first record of whichever partition has one.
func consumeOne(t *testing.T, brokers []string, topic string) []byte {
	t.Helper()
	c, err := sarama.NewConsumer(brokers, sarama.NewConfig())
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer c.Close()
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatalf("partitions: %v", err)
	}
	msgs := make(chan *sarama.ConsumerMessage, len(parts))
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("consume partition %d: %v", p, err)
		}
		defer pc.Close()
		go func() {
			if m, ok := <-pc.Messages(); ok {
				msgs <- m
			}
		}()
	}
	select {
	case m := <-msgs:
		return m.Value
	case <-time.After(20 * time.Second):
		t.Fatal("no record consumed within 20s")
		return nil
	}
}

func putObject(ctx context.Context, t *testing.T, st *Stack, key string, body []byte) {
	t.Helper()
	_, err := NewS3Client(st.S3Endpoint).PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(st.Bucket), Key: aws.String(key), Body: bytes.NewReader(body),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func getObject(ctx context.Context, t *testing.T, st *Stack, key string) []byte {
	t.Helper()
	out, err := NewS3Client(st.S3Endpoint).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// TestDROplogMaxEntries checks that DROplogMaxEntries caps the DR server's change history and
// not the primary's: after 10 inserts into each, a change stream resumed from before them fails
// on DR (capped at 3) and reads all 10 on the primary.
func TestDROplogMaxEntries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := Start(ctx, Options{DROplogMaxEntries: 3, PrimaryIsMongoDB: true})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer st.Close()
	resumeAfterInserts := func(uri string) (int, error) {
		client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Disconnect(ctx)
		coll := client.Database("d").Collection("c")
		cs, err := coll.Watch(ctx, mongo.Pipeline{})
		if err != nil {
			t.Fatal(err)
		}
		token := cs.ResumeToken()
		cs.Close(ctx)
		for i := range 10 {
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Fatal(err)
			}
		}
		cs, err = coll.Watch(ctx, mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(token))
		if err != nil {
			return 0, err
		}
		defer cs.Close(ctx)
		n := 0
		for n < 10 && cs.Next(ctx) {
			n++
		}
		return n, cs.Err()
	}
	if n, err := resumeAfterInserts(st.PrimaryURI); err != nil || n != 10 {
		t.Errorf("primary: read %d of 10 changes, err %v; want all 10 (its history is not capped)", n, err)
	}
	var se mongo.ServerError
	if n, err := resumeAfterInserts(st.DRURI); !errors.As(err, &se) || !se.HasErrorCode(286) {
		t.Errorf("DR: read %d changes, err %v; want ChangeStreamHistoryLost (286): its history holds 3", n, err)
	}
}
