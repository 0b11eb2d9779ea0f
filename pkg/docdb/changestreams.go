package docdb

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// EnableChangeStreams runs DocumentDB's modifyChangeStreams on the primary for what capture
// watches: the collection of a one-collection scope, else the whole database (capture then opens
// a database-level stream). It is what an operator runs once before the first capture (the
// original write-up's first step); scope.Scope.EnableCommands prints the same command.
func EnableChangeStreams(ctx context.Context, primary *mongo.Client, sc scope.Scope) error {
	coll := ""
	if sc.Single() {
		coll = sc.Collections[0]
	}
	cmd := bson.D{
		{Key: "modifyChangeStreams", Value: 1},
		{Key: "database", Value: sc.DB},
		{Key: "collection", Value: coll},
		{Key: "enable", Value: true},
	}
	if err := primary.Database("admin").RunCommand(ctx, cmd).Err(); err != nil {
		return fmt.Errorf("enable change streams on %s (modifyChangeStreams): %w", sc, err)
	}
	return nil
}
