package apply

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// startS3 serves gofakes3 with one bucket "archive" and returns a store over it.
func startS3(tb testing.TB, api func(archive.S3API) archive.S3API) *archive.S3 {
	tb.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("archive"); err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	tb.Cleanup(srv.Close)
	var client archive.S3API = s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
	if api != nil {
		client = api(client)
	}
	return archive.NewS3(client, "archive")
}

// TestEndToEnd runs the original write-up's verification through the handler, the embedded
// Mongo server and S3: insert, update, delete intercepted, the deleted document kept in DR and
// archived with its before-image.
func TestEndToEnd(t *testing.T) {
	ctx := context.Background()
	client := startMongo(t)
	store := startS3(t, nil)
	nsmap, _ := ParseNamespaceMap("bar=bar_dr")
	h, err := New(NewMongoWriter(client), store, Options{NamespaceMap: nsmap, ArchivePrefix: "docdbdr/", Logger: discardLogger(), Metrics: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	id := primitive.NewObjectID()
	steps := []changeevent.Event{
		evt(t, changeevent.Insert, fooNS, id, bson.D{{Key: "x", Value: int32(1)}}),
		update(t, fooNS, id, bson.D{{Key: "x", Value: int32(2)}}, nil, nil),
		evt(t, changeevent.Delete, fooNS, id, nil),
	}
	for _, e := range steps {
		if _, err := h.Handle(ctx, batchOf(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	dr := changeevent.Namespace{DB: "bar_dr", Coll: "foo"}
	if got := extJSON(t, findRaw(t, client, dr, id)); got != `{"_id":{"$oid":"`+id.Hex()+`"},"x":2}` {
		t.Errorf("DR document after the delete: %s", got)
	}
	keys, err := store.List(ctx, archive.Layout{Prefix: "docdbdr/"}.DeletesPrefix("bar", "foo"))
	if err != nil || len(keys) != 1 {
		t.Fatalf("archive keys %v, %v", keys, err)
	}
	body, _ := store.Get(ctx, keys[0])
	lines, _ := archive.DecodeObject(body)
	if len(lines) != 1 || !strings.Contains(string(lines[0]), `"before":{"_id":{"$oid":"`+id.Hex()+`"},"x":{"$numberInt":"2"}}`) {
		t.Errorf("archived %s", lines)
	}
}
