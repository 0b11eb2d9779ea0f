package mongotest

import (
	"context"
	"net"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

func TestStartServesThenCleansUp(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) {
		srv, client := Start(t, mongoserver.Options{})
		addr = srv.Addr()
		coll := client.Database("d").Collection("c")
		if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "x", Value: int32(1)}}); err != nil {
			t.Fatal(err)
		}
		if n, err := coll.CountDocuments(context.Background(), bson.D{}); err != nil || n != 1 {
			t.Fatalf("count = %d, %v", n, err)
		}
	})
	// The inner test's cleanup closed the server: its port no longer accepts connections.
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("server at %s still accepts connections after the test ended", addr)
	}
}
