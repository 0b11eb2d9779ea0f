package mongoserver

import (
	"testing"

	"go.mongodb.org/mongo-driver/bson"
)

func TestSmoke(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	var got bson.M
	if err := coll.FindOne(ctx(t), bson.D{{Key: "_id", Value: 1}}).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["a"] != "x" {
		t.Fatalf("got %v", got)
	}
}
