package bootstrap

import (
	"context"
	"testing"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// TestTakeStartPosition checks the position on a MongoDB-like server and on a DocumentDB-like
// one, where a change stream only opens once enabled for the collection.
func TestTakeStartPosition(t *testing.T) {
	tests := []struct {
		name       string
		documentDB bool
		enable     bool
		wantToken  bool
	}{
		{name: "MongoDB", wantToken: true},
		{name: "DocumentDB, change streams enabled", documentDB: true, enable: true, wantToken: true},
		{name: "DocumentDB, change streams not enabled", documentDB: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			srv := mongoserver.New(mongoserver.Options{DocumentDB: tt.documentDB})
			if err := srv.Start("127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c, err := mongo.Connect(ctx, options.Client().ApplyURI(srv.URI()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Disconnect(ctx)
			if _, err := c.Database("bar").Collection("foo").InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
				t.Fatal(err)
			}
			if tt.enable {
				err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "modifyChangeStreams", Value: 1},
					{Key: "database", Value: "bar"}, {Key: "collection", Value: "foo"}, {Key: "enable", Value: true}}).Err()
				if err != nil {
					t.Fatal(err)
				}
			}
			pos, err := TakeStartPosition(ctx, c, scope.Scope{DB: "bar", Collections: []string{"foo"}})
			if err != nil {
				t.Fatal(err)
			}
			if pos.ClusterTime.IsZero() {
				t.Errorf("no cluster time: %s", pos)
			}
			if got := len(pos.ResumeToken) > 0; got != tt.wantToken {
				t.Errorf("resume token present = %v, want %v (%s)", got, tt.wantToken, pos)
			}
		})
	}
}

// TestCheckpointStoreSetsCaptureStart runs a bootstrap with the real checkpoint store and reads
// back what capture will see.
func TestCheckpointStoreSetsCaptureStart(t *testing.T) {
	ctx := context.Background()
	primary, dr := newCluster(t), newCluster(t)
	seed(t, primary.Database("bar").Collection("foo"), 10, func(i int) any { return int32(i) })
	store := checkpoint.New(primary.Database("docdbdr").Collection("checkpoints"), nil)
	sc := scope.Scope{DB: "bar", Collections: []string{"foo"}}
	res, err := Run(ctx, Options{Primary: primary, DR: dr, Scope: sc, Checkpoint: CheckpointStore{Store: store}, Who: "ops@example"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Load(ctx, "bar.foo")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exists || st.StartAt.T != res.Start.ClusterTime.T || st.ResetBy == nil || st.ResetBy.Who != "ops@example" {
		t.Errorf("checkpoint state = %+v, start %s", st, res.Start)
	}
}
