// Package scope is what one capture replicates: a database and, optionally, some of its
// collections (the WATCH_DB / WATCH_COLLECTIONS pair). Capture, bootstrap, verify, restore and
// the checkpoint all name and select a scope through this one type.
package scope

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Scope is one collection, a list of collections, or (no collections) a whole database.
type Scope struct {
	DB          string   `bson:"db" json:"db"`
	Collections []string `bson:"collections,omitempty" json:"collections,omitempty"`
}

// ID is the scope's stable name, the key of its state documents (capture's checkpoint, bootstrap's
// progress): "bar" for a whole database, else the sorted "db.coll" names joined by commas, e.g.
// "bar.foo" or "bar.foo,bar.x".
func (s Scope) ID() string {
	if len(s.Collections) == 0 {
		return s.DB
	}
	names := make([]string, len(s.Collections))
	for i, c := range s.Collections {
		names[i] = s.DB + "." + c
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// Validate reports a scope without a database.
func (s Scope) Validate() error {
	if s.DB == "" {
		return errors.New("scope has no database")
	}
	return nil
}

// Single reports whether the scope is one collection, watched with a collection-level stream.
// Lists and whole databases use a database-level stream.
func (s Scope) Single() bool { return len(s.Collections) == 1 }

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
	if s.Single() {
		coll = s.Collections[0]
	}
	return []string{fmt.Sprintf(`db.adminCommand({modifyChangeStreams: 1, database: %q, collection: %q, enable: true})`, s.DB, coll)}
}

// Resolve returns the scope's collections, sorted: the listed ones, or every collection of the
// database on client except system collections.
func (s Scope) Resolve(ctx context.Context, client *mongo.Client) ([]string, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(s.Collections) > 0 {
		c := slices.Clone(s.Collections)
		slices.Sort(c)
		return slices.Compact(c), nil
	}
	names, err := client.Database(s.DB).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("list collections of %s: %w", s.DB, err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return strings.HasPrefix(n, "system.") })
	slices.Sort(names)
	return names, nil
}

// String describes the scope for messages: "database bar", or "bar.foo, bar.x".
func (s Scope) String() string {
	if len(s.Collections) == 0 {
		return "database " + s.DB
	}
	return strings.ReplaceAll(s.ID(), ",", ", ")
}

// ParseID is the inverse of ID: "bar" is the whole database bar, "bar.foo,bar.x" the collections
// foo and x of bar. Database names cannot hold a dot, so the first dot of an item ends the
// database name; every item must name the same database.
func ParseID(id string) (Scope, error) {
	if id == "" {
		return Scope{}, errors.New("empty scope id")
	}
	if !strings.Contains(id, ".") {
		return Scope{DB: id}, nil
	}
	var s Scope
	for _, item := range strings.Split(id, ",") {
		db, coll, ok := strings.Cut(item, ".")
		switch {
		case !ok || db == "" || coll == "":
			return Scope{}, fmt.Errorf("scope id %q: %q is not db.collection", id, item)
		case s.DB != "" && db != s.DB:
			return Scope{}, fmt.Errorf("scope id %q names two databases, %s and %s", id, s.DB, db)
		}
		s.DB = db
		s.Collections = append(s.Collections, coll)
	}
	return s, nil
}

// Missing returns what the scope names that client does not hold: the database (then nothing
// else is listed), or each listed collection that does not exist in it. An empty result means
// the whole scope exists. Operator commands use it to refuse a typo rather than work on nothing.
func (s Scope) Missing(ctx context.Context, client *mongo.Client) ([]string, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	dbs, err := client.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: s.DB}})
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	if !slices.Contains(dbs, s.DB) {
		return []string{"database " + s.DB}, nil
	}
	if len(s.Collections) == 0 {
		return nil, nil
	}
	names, err := client.Database(s.DB).ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("list collections of %s: %w", s.DB, err)
	}
	var missing []string
	for _, c := range s.Collections {
		if !slices.Contains(names, c) {
			missing = append(missing, "collection "+s.DB+"."+c)
		}
	}
	return missing, nil
}

// Overlaps reports whether two scopes share a namespace: the same database, and either one
// takes the whole database or both list a collection in common. Two captures of overlapping
// scopes publish the shared namespaces' changes twice.
func (s Scope) Overlaps(o Scope) bool {
	if s.DB != o.DB {
		return false
	}
	if len(s.Collections) == 0 || len(o.Collections) == 0 {
		return true
	}
	for _, c := range s.Collections {
		if slices.Contains(o.Collections, c) {
			return true
		}
	}
	return false
}
