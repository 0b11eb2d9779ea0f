package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// MongoWriter is the DR cluster over a MongoDB driver client.
type MongoWriter struct {
	client *mongo.Client
}

// NewMongoWriter returns a DR writer over client.
func NewMongoWriter(client *mongo.Client) *MongoWriter {
	return &MongoWriter{client: client}
}

func (m *MongoWriter) coll(ns changeevent.Namespace) *mongo.Collection {
	return m.client.Database(ns.DB).Collection(ns.Coll)
}

// BulkWrite performs writes as one ordered bulk write (the driver splits it into commands within
// the server's limits). Documents are passed to the driver as bson.Raw and reach the server
// byte for byte.
func (m *MongoWriter) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	if len(writes) == 0 {
		return BulkResult{}, nil
	}
	models := make([]mongo.WriteModel, len(writes))
	for i, w := range writes {
		filter := bson.D{{Key: "_id", Value: w.ID}}
		switch w.Kind {
		case ReplaceOne:
			models[i] = mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(w.Doc).SetUpsert(true)
		case UpdateOne:
			models[i] = mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(w.Doc)
		case DeleteOne:
			models[i] = mongo.NewDeleteOneModel().SetFilter(filter)
		default:
			return BulkResult{}, fmt.Errorf("write %d has unknown kind %d", i, w.Kind)
		}
	}
	res, err := m.coll(ns).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true))
	if err != nil {
		return BulkResult{}, err
	}
	return BulkResult{Matched: res.MatchedCount, Upserted: res.UpsertedCount, Modified: res.ModifiedCount, Deleted: res.DeletedCount}, nil
}

// FindByIDs reads the documents whose _id is in ids with one find ({_id: {$in: ids}}).
func (m *MongoWriter) FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error) {
	found := make(map[IDKey]bson.Raw, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	in := make(bson.A, len(ids))
	for i, id := range ids {
		in[i] = id
	}
	cur, err := m.coll(ns).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}},
		options.Find().SetBatchSize(int32(len(ids))))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		doc := bson.Raw(bytes.Clone(cur.Current))
		id, err := doc.LookupErr("_id")
		if err != nil {
			return nil, fmt.Errorf("document without _id in %s: %w", ns, err)
		}
		found[KeyOf(id)] = doc
	}
	return found, cur.Err()
}

// Drop drops the collection, or the database when ns.Coll is "".
func (m *MongoWriter) Drop(ctx context.Context, ns changeevent.Namespace) error {
	if ns.Coll == "" {
		return m.client.Database(ns.DB).Drop(ctx)
	}
	return m.coll(ns).Drop(ctx)
}

// codeNamespaceNotFound is the server's error for a rename whose source does not exist.
const codeNamespaceNotFound = 26

// Rename renames a collection; a source that no longer exists is taken as already renamed.
func (m *MongoWriter) Rename(ctx context.Context, from, to changeevent.Namespace) error {
	err := m.client.Database("admin").RunCommand(ctx, bson.D{
		{Key: "renameCollection", Value: from.String()},
		{Key: "to", Value: to.String()},
	}).Err()
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Code == codeNamespaceNotFound {
		return nil
	}
	return err
}
