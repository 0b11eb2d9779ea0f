package capture

import (
	"fmt"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
)

// Scope is what one capture replicates: one collection, a list of collections, or (no
// collections) a whole database.
type Scope struct {
	DB          string
	Collections []string
}

// ID names the scope in the state collection, e.g. "bar", "bar.foo" or "bar.foo,bar.x".
func (s Scope) ID() string { return checkpoint.ScopeID(s.DB, s.Collections) }

// single reports whether the scope is one collection, watched with a collection-level stream.
// Lists and whole databases use a database-level stream.
func (s Scope) single() bool { return len(s.Collections) == 1 }

// Pipeline is the stage list passed to Watch. A collection stream needs no filter; a database
// stream over a list keeps only the listed collections (also as a rename target) and
// dropDatabase, so the server does not ship events capture would drop anyway.
func (s Scope) Pipeline() mongo.Pipeline {
	if len(s.Collections) < 2 {
		return mongo.Pipeline{}
	}
	colls := bson.A{}
	for _, c := range s.Collections {
		colls = append(colls, c)
	}
	return mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: colls}}}},
		bson.D{{Key: "to.coll", Value: bson.D{{Key: "$in", Value: colls}}}},
		bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"dropDatabase", "invalidate"}}}}},
	}}}}}}
}

// Contains reports whether an event belongs to the scope. Capture checks every event with it
// before publishing, whatever the server-side filter did: an out-of-scope event must never reach
// Kafka.
func (s Scope) Contains(ev *changeevent.Event) bool {
	if ev.NS.DB != s.DB {
		return false
	}
	if len(s.Collections) == 0 || ev.Operation == changeevent.DropDatabase {
		return true
	}
	if slices.Contains(s.Collections, ev.NS.Coll) {
		return true
	}
	// A rename into a watched collection replaces it: DR must hear of it.
	return ev.Operation == changeevent.Rename && ev.To != nil && ev.To.DB == s.DB && slices.Contains(s.Collections, ev.To.Coll)
}

// EnableCommands are the DocumentDB admin commands that enable change streams for the scope: the
// collection for a one-collection scope, else the database (a database-level stream needs it).
func (s Scope) EnableCommands() []string {
	coll := ""
	if s.single() {
		coll = s.Collections[0]
	}
	return []string{fmt.Sprintf(`db.adminCommand({modifyChangeStreams: 1, database: %q, collection: %q, enable: true})`, s.DB, coll)}
}

func (s Scope) String() string {
	if len(s.Collections) == 0 {
		return "database " + s.DB
	}
	return strings.ReplaceAll(s.ID(), ",", ", ")
}
