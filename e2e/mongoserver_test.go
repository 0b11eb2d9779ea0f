package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// TestUpdateDescriptionReproducesPostImage guards a property apply relies on when a document was
// deleted before capture's updateLookup: replaying an update event's delta ($set updatedFields,
// $unset removedFields) on the pre-image gives the post-image, byte for byte. The randomized suite
// found the embedded server breaking it (seeds 12 and 20 of `go test ./e2e -seeds 20`): a $set of
// two new sibling fields was applied in command order but listed sorted in updatedFields, so DR
// got the fields in another order. Fixed in mongoserver (updatedFields in post-image order).
func TestUpdateDescriptionReproducesPostImage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	srv := mongoserver.New(mongoserver.Options{})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(ctx)
	primary := client.Database("d").Collection("primary")
	replica := client.Database("d").Collection("replica")

	pre := bson.D{{Key: "_id", Value: 1}, {Key: "nested", Value: bson.D{{Key: "a", Value: bson.D{{Key: "c", Value: 1}}}}}}
	for _, c := range []*mongo.Collection{primary, replica} {
		if _, err := c.InsertOne(ctx, pre); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := primary.Watch(ctx, mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx)
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: "nested.a.b", Value: "v9"}, {Key: "nested.a.arr", Value: bson.A{1}}}},
		{Key: "$unset", Value: bson.D{{Key: "nested.a.c", Value: ""}}},
	}
	if _, err := primary.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, update); err != nil {
		t.Fatal(err)
	}
	if !cs.Next(ctx) {
		t.Fatalf("no change event: %v", cs.Err())
	}
	var ev struct {
		UpdateDescription struct {
			UpdatedFields bson.Raw `bson:"updatedFields"`
			RemovedFields []string `bson:"removedFields"`
		} `bson:"updateDescription"`
	}
	if err := cs.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	unset := bson.D{}
	for _, f := range ev.UpdateDescription.RemovedFields {
		unset = append(unset, bson.E{Key: f, Value: ""})
	}
	delta := bson.D{{Key: "$set", Value: ev.UpdateDescription.UpdatedFields}, {Key: "$unset", Value: unset}}
	if _, err := replica.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, delta); err != nil {
		t.Fatal(err)
	}
	want, err := primary.FindOne(ctx, bson.D{}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	got, err := replica.FindOne(ctx, bson.D{}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("the event's delta replayed on the pre-image differs from the post-image:\n post-image %s\n replayed   %s\n delta      %s",
			want, got, ev.UpdateDescription.UpdatedFields)
	}
}
