package mongoserver

import (
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
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

func TestSmokeChangeStream(t *testing.T) {
	s := startServer(t, Options{})
	cl := connect(t, s)
	coll := cl.Database("d").Collection("c")
	cs, err := coll.Watch(ctx(t), mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx(t))
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 2}}}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if !cs.Next(ctx(t)) {
			t.Fatal(cs.Err())
		}
		t.Log(cs.Current)
	}
}
