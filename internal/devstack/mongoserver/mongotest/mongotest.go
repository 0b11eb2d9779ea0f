// Package mongotest starts the embedded Mongo-wire server for a test, the way net/http/httptest
// starts an HTTP server: one call, and the server and its client are closed when the test ends.
package mongotest

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// Start starts a server with opts on a loopback port and connects a client to it, with retryable
// writes off as DocumentDB requires. Both are closed at the end of the test.
func Start(tb testing.TB, opts mongoserver.Options) (*mongoserver.Server, *mongo.Client) {
	tb.Helper()
	srv := mongoserver.New(opts)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		tb.Fatalf("start the embedded server: %v", err)
	}
	tb.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()).SetRetryWrites(false))
	if err != nil {
		tb.Fatalf("connect to the embedded server: %v", err)
	}
	tb.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return srv, client
}

// Client is Start for a test that only needs the client of a default server.
func Client(tb testing.TB) *mongo.Client {
	tb.Helper()
	_, client := Start(tb, mongoserver.Options{})
	return client
}
