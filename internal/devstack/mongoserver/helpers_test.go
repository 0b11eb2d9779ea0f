package mongoserver

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// startServer starts a Server for one test and closes it afterwards.
func startServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// connect returns a driver client for s, disconnected at test end.
func connect(t testing.TB, s *Server, extra ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := append([]*options.ClientOptions{options.Client().ApplyURI(s.URI()).SetServerSelectionTimeout(5 * time.Second)}, extra...)
	cl, err := mongo.Connect(ctx, o...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

// ctx returns a context bounded for a test step.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}
