package conformance

// Amazon DocumentDB behaviour (Amazon DocumentDB Developer Guide, "Using change streams with
// Amazon DocumentDB"): change streams are off until enabled per collection, per database or
// for the cluster with the modifyChangeStreams admin command, and a resume point older than
// the retained change stream log fails with code 136 (CappedPositionLost).

import (
	"context"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// modifyChangeStreams runs {modifyChangeStreams: 1, database, collection, enable} on admin.
// An empty collection means every collection of the database; both empty, the cluster.
func modifyChangeStreams(t *testing.T, ctx context.Context, client *mongo.Client, db, coll string, enable bool) {
	t.Helper()
	err := client.Database("admin").RunCommand(ctx, doc(
		"modifyChangeStreams", 1, "database", db, "collection", coll, "enable", enable)).Err()
	requireNoError(t, err, "modifyChangeStreams")
}

// requireChangeStreamsRefused fails unless watching w is refused with an error that says it
// is about change streams.
func requireChangeStreamsRefused(t *testing.T, w watcher, what string) {
	t.Helper()
	err := openStreamErr(t, w)
	if err == nil {
		t.Fatalf("%s: watch succeeded, want it refused until change streams are enabled", what)
	}
	// "change stream", "change streams", "modifyChangeStreams" all count as mentioning it.
	if !strings.Contains(strings.ReplaceAll(strings.ToLower(err.Error()), " ", ""), "changestream") {
		t.Fatalf("%s: error %q does not mention change streams", what, err)
	}
}

// TestDocumentDBChangeStreamOptIn: watching is refused until modifyChangeStreams enables the
// collection (or its whole database), works afterwards, stays refused elsewhere, and is
// refused again once disabled.
func TestDocumentDBChangeStreamOptIn(t *testing.T) {
	cases := []struct {
		name      string
		enableFor string // the collection to enable, "" for the whole database
		otherOpen bool   // whether a sibling collection becomes watchable too
	}{
		{name: "one collection", enableFor: "watched", otherOpen: false},
		{name: "whole database", enableFor: "", otherOpen: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			client := connect(t, documentDBURI(t))
			db := testDB(t, client)
			watched, sibling := db.Collection("watched"), db.Collection("sibling")
			_, err := watched.InsertOne(ctx, doc("_id", 0))
			requireNoError(t, err, "insert")

			requireChangeStreamsRefused(t, watched, "before modifyChangeStreams")

			modifyChangeStreams(t, ctx, client, db.Name(), tc.enableFor, true)
			cs := openStream(t, watched)
			_, err = watched.InsertOne(ctx, doc("_id", 1))
			requireNoError(t, err, "insert")
			if ev := nextEvent(t, cs); ev.summary() != "insert watched "+intKey(1) {
				t.Fatalf("event %s, want the insert into watched", ev.summary())
			}

			if tc.otherOpen {
				sib := openStream(t, sibling)
				_, err = sibling.InsertOne(ctx, doc("_id", 2))
				requireNoError(t, err, "insert into sibling")
				if ev := nextEvent(t, sib); ev.summary() != "insert sibling "+intKey(2) {
					t.Fatalf("event %s, want the insert into sibling", ev.summary())
				}
			} else {
				requireChangeStreamsRefused(t, sibling, "a collection that was not enabled")
			}

			otherDB := testDB(t, client)
			requireChangeStreamsRefused(t, otherDB.Collection("watched"), "the same collection name in another database")

			modifyChangeStreams(t, ctx, client, db.Name(), tc.enableFor, false)
			requireChangeStreamsRefused(t, watched, "after disabling")
		})
	}
}

// TestDocumentDBHistoryLost: in DocumentDB mode a resume point older than the retained
// history fails with 136 (CappedPositionLost) rather than MongoDB's 286.
func TestDocumentDBHistoryLost(t *testing.T) {
	if external() || documentDBExternal() {
		t.Skip("needs an embedded DocumentDB-mode server with a tiny change stream log")
	}
	srv := mongoserver.New(mongoserver.Options{DocumentDB: true, OplogMaxEntries: 10})
	requireNoError(t, srv.Start("127.0.0.1:0"), "start a DocumentDB-mode server")
	t.Cleanup(func() { srv.Close() })
	client := connect(t, srv.URI())
	enable := func(db, coll string) { modifyChangeStreams(t, testContext(t), client, db, coll, true) }
	requireHistoryLost(t, client, enable, 136)
}
