package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver/mongotest"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// TestPoisonOnTheEmbeddedServer: records the DR server refuses for ever are dead-lettered with
// the server's own error, and the records behind them are applied in order; a document the
// primary accepted with a top-level $-prefixed field is written in the form DR accepts.
func TestPoisonOnTheEmbeddedServer(t *testing.T) {
	ctx := context.Background()
	big := strings.Repeat("x", 9<<20)
	tests := []struct {
		name   string
		wire   int // DR's maxWireVersion; 0: 7, DocumentDB 4.0
		setup  func(t *testing.T, c *mongo.Collection)
		bad    func(t *testing.T) changeevent.Event
		reason string // "" when the record is applied
		want   string // the bad record's document in DR afterwards, Extended JSON
	}{
		{
			name: "top-level $-prefixed field: delete then insert",
			wire: 13, // MongoDB 5.0 stores top-level $ fields on insert
			bad: func(t *testing.T) changeevent.Event {
				return evt(t, changeevent.Replace, fooNS, int32(2), bson.D{{Key: "$price", Value: 50}, {Key: "q", Value: 30}})
			},
			want: `{"_id":2,"$price":50,"q":30}`,
		},
		{
			// A 4.0 server stores no top-level $ field in any form: the record is dead-lettered and
			// DR keeps the version it held (the delete of the delete+insert pair is undone).
			name: "top-level $-prefixed field on a server that cannot store it",
			bad: func(t *testing.T) changeevent.Event {
				return evt(t, changeevent.Replace, fooNS, int32(2), bson.D{{Key: "$price", Value: 50}, {Key: "q", Value: 30}})
			},
			reason: "refused the replacement",
			want:   `{"_id":2,"v":0}`,
		},
		{
			name: "duplicate key on a unique secondary index",
			setup: func(t *testing.T, c *mongo.Collection) {
				for _, id := range []int32{1, 2, 3} {
					if _, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "email", Value: "e" + string(rune('0'+id))}}}}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "email", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: 9}, {Key: "email", Value: "a@x"}}); err != nil {
					t.Fatal(err)
				}
			},
			bad: func(t *testing.T) changeevent.Event {
				return evt(t, changeevent.Insert, fooNS, int32(2), bson.D{{Key: "email", Value: "a@x"}})
			},
			reason: "duplicate key",
			want:   `{"_id":2,"v":0,"email":"e2"}`,
		},
		{
			name: "document too large after an update",
			setup: func(t *testing.T, c *mongo.Collection) {
				if _, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: 2}}, bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: big}}}}); err != nil {
					t.Fatal(err)
				}
			},
			bad: func(t *testing.T) changeevent.Event {
				return update(t, fooNS, int32(2), bson.D{{Key: "b", Value: big}}, nil, nil)
			},
			reason: "10334",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nextOffset.Store(100)
			_, client := mongotest.Start(t, mongoserver.Options{WireVersion: tt.wire})
			c := client.Database(fooNS.DB).Collection(fooNS.Coll)
			for _, id := range []int32{1, 2, 3} {
				if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: 0}}); err != nil {
					t.Fatal(err)
				}
			}
			if tt.setup != nil {
				tt.setup(t, c)
			}
			ar := newFakeArchive()
			h, err := New(NewMongoWriter(client), ar, Options{Logger: discardLogger(), ArchivePrefix: "docdbdr/"})
			if err != nil {
				t.Fatal(err)
			}
			sum, err := h.Handle(ctx, batchOf(t,
				update(t, fooNS, int32(1), bson.D{{Key: "v", Value: 1}}, nil, nil),
				tt.bad(t),
				update(t, fooNS, int32(3), bson.D{{Key: "v", Value: 1}}, nil, nil),
				update(t, fooNS, int32(1), bson.D{{Key: "v", Value: 2}}, nil, nil),
			))
			if err != nil {
				t.Fatal(err)
			}
			if v1, v3 := findRaw(t, client, fooNS, int32(1)).Lookup("v"), findRaw(t, client, fooNS, int32(3)).Lookup("v"); v1.AsInt64() != 2 || v3.AsInt64() != 1 {
				t.Errorf("the records around the bad one were not applied in order: v1 %s, v3 %s", v1, v3)
			}
			keys := ar.keys("docdbdr/deadletter/")
			if tt.reason == "" {
				if len(keys) != 0 || sum.DeadLettered != 0 {
					t.Errorf("dead letters %v", keys)
				}
			} else {
				if len(keys) != 1 || sum.DeadLettered != 1 {
					t.Fatalf("dead letters %v, summary %+v", keys, sum)
				}
				var dl archive.DeadLetter
				if err := json.Unmarshal(ar.objects[keys[0]], &dl); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(dl.Reason, tt.reason) || !strings.HasSuffix(keys[0], "-101.json") {
					t.Errorf("dead letter %s: %q", keys[0], dl.Reason)
				}
				t.Logf("reason: %.200s", dl.Reason)
			}
			if tt.want != "" {
				if got := extJSON(t, findRaw(t, client, fooNS, int32(2))); got != tt.want {
					t.Errorf("document 2: %s, want %s", got, tt.want)
				}
			}
			if tt.name == "top-level $-prefixed field: delete then insert" {
				ev := tt.bad(t)
				if got := findRaw(t, client, fooNS, int32(2)); !bytes.Equal(got, ev.FullDocument) {
					t.Errorf("bytes differ: %s", extJSON(t, got))
				}
			}
		})
	}
}
