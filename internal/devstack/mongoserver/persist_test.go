package mongoserver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// restartable starts a server on dir and returns a client and a stop
// function, which disconnects the client (so it does not wait for a gone
// server at cleanup) and closes the server, writing the snapshot.
func restartable(t *testing.T, dir string, opts Options) (*mongo.Client, func() error) {
	t.Helper()
	opts.DataDir, opts.NoopInterval = dir, -1
	s := New(opts)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	cl := connect(t, s)
	return cl, func() error {
		_ = cl.Disconnect(ctx(t))
		return s.Close()
	}
}

// dumpAll returns every document of coll in _id order, as raw BSON.
func dumpAll(t *testing.T, coll *mongo.Collection) []bson.Raw {
	t.Helper()
	cur, err := coll.Find(ctx(t), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var out []bson.Raw
	if err := cur.All(ctx(t), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// drainEvents reads n events from a stream resumed after token, as raw BSON.
func drainEvents(t *testing.T, coll *mongo.Collection, token bson.Raw, n int) []bson.Raw {
	t.Helper()
	cs, err := coll.Watch(ctx(t), mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(token).SetMaxAwaitTime(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close(ctx(t))
	var out []bson.Raw
	for len(out) < n && cs.Next(ctx(t)) {
		out = append(out, append(bson.Raw(nil), cs.Current...))
	}
	if len(out) < n {
		t.Fatalf("got %d events, want %d: %v", len(out), n, cs.Err())
	}
	if cs.TryNext(ctx(t)) {
		t.Fatalf("an event beyond the %d expected: %s", n, cs.Current)
	}
	return out
}

// TestRestartKeepsEverything writes data, indexes, change-stream grants and
// history, restarts on a new port from the same DataDir, and requires the
// same documents byte for byte, the unique index still enforced, and a
// stream resumed from a token taken before the restart to deliver exactly
// the events after it, then new ones.
func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	cl, stop := restartable(t, dir, Options{DocumentDB: true})
	enableStreams(t, cl, "d", "c")
	coll := cl.Database("d").Collection("c")
	if _, err := coll.Indexes().CreateOne(ctx(t), mongo.IndexModel{Keys: bson.D{{Key: "email", Value: 1}}, Options: options.Index().SetUnique(true)}); err != nil {
		t.Fatal(err)
	}
	oid := primitive.NewObjectID()
	docs := []interface{}{
		bson.D{{Key: "_id", Value: int32(1)}, {Key: "email", Value: "a@x"}, {Key: "n", Value: 1.5}},
		bson.D{{Key: "_id", Value: "s"}, {Key: "email", Value: "b@x"}, {Key: "when", Value: primitive.NewDateTimeFromTime(time.Unix(1700000000, 0))}},
		bson.D{{Key: "_id", Value: oid}, {Key: "email", Value: "c@x"}, {Key: "bin", Value: primitive.Binary{Subtype: 0x80, Data: []byte{0, 1}}}, {Key: "min", Value: primitive.MinKey{}}},
		bson.D{{Key: "_id", Value: bson.D{{Key: "k", Value: int64(9)}}}, {Key: "email", Value: "d@x"}, {Key: "nested", Value: bson.A{bson.D{{Key: "z", Value: nil}}}}},
	}
	if _, err := coll.InsertMany(ctx(t), docs); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Database("other").Collection("o").InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}

	// The token: the stream's position after the first insert.
	cs, err := coll.Watch(ctx(t), mongo.Pipeline{}, options.ChangeStream().SetStartAtOperationTime(&primitive.Timestamp{T: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Next(ctx(t)) {
		t.Fatal(cs.Err())
	}
	token := append(bson.Raw(nil), cs.ResumeToken()...)
	_ = cs.Close(ctx(t))

	// Events after the token: the other inserts, then an update, a replace
	// and a delete.
	if _, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: int32(1)}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 2}}}, {Key: "$unset", Value: bson.D{{Key: "gone", Value: ""}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.ReplaceOne(ctx(t), bson.D{{Key: "_id", Value: "s"}}, bson.D{{Key: "email", Value: "b2@x"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx(t), bson.D{{Key: "_id", Value: oid}}); err != nil {
		t.Fatal(err)
	}
	const after = 3 + 3
	wantEvents := drainEvents(t, coll, token, after)
	wantDocs := dumpAll(t, coll)
	wantIndexes := listIndexes(t, coll)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	cl2, stop2 := restartable(t, dir, Options{DocumentDB: true})
	defer stop2()
	coll2 := cl2.Database("d").Collection("c")
	if got := dumpAll(t, coll2); !rawsEqual(got, wantDocs) {
		t.Fatalf("documents after restart:\n%v\nwant\n%v", got, wantDocs)
	}
	if got := listIndexes(t, coll2); !rawsEqual(got, wantIndexes) {
		t.Errorf("indexes after restart: %v, want %v", got, wantIndexes)
	}
	if n, err := cl2.Database("other").Collection("o").CountDocuments(ctx(t), bson.D{}); err != nil || n != 1 {
		t.Errorf("other.o after restart: %d, %v", n, err)
	}
	_, err = coll2.InsertOne(ctx(t), bson.D{{Key: "_id", Value: int32(2)}, {Key: "email", Value: "a@x"}})
	var we mongo.WriteException
	if !errors.As(err, &we) || !we.HasErrorCode(codeDuplicateKey) {
		t.Errorf("unique index after restart: insert of a duplicate email gave %v", err)
	}

	// Resuming from the pre-restart token (the grant survived, or DocumentDB
	// mode would refuse the stream) gives exactly the same events.
	if got := drainEvents(t, coll2, token, after); !rawsEqual(got, wantEvents) {
		t.Fatalf("events after restart:\n%v\nwant\n%v", got, wantEvents)
	}
	// New writes continue the history: cluster time keeps increasing.
	if _, err := coll2.InsertOne(ctx(t), bson.D{{Key: "_id", Value: int32(3)}, {Key: "email", Value: "e@x"}}); err != nil {
		t.Fatal(err)
	}
	got := drainEvents(t, coll2, token, after+1)
	last, prev := got[after].Lookup("clusterTime"), got[after-1].Lookup("clusterTime")
	lt, li := last.Timestamp()
	pt, pi := prev.Timestamp()
	if lt < pt || (lt == pt && li <= pi) {
		t.Errorf("first event after restart at %v, not after the last one before (%v)", last, prev)
	}
}

func listIndexes(t *testing.T, coll *mongo.Collection) []bson.Raw {
	t.Helper()
	cur, err := coll.Indexes().List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []bson.Raw
	if err := cur.All(ctx(t), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func rawsEqual(a, b []bson.Raw) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestSnapshotFiles: a missing snapshot is a fresh start; a damaged one
// fails Start with an error naming the file, and is left as it was.
func TestSnapshotFiles(t *testing.T) {
	// A valid snapshot to damage.
	good := t.TempDir()
	cl, stop := restartable(t, good, Options{})
	for i := 0; i < 20; i++ {
		if _, err := cl.Database("d").Collection("c").InsertOne(ctx(t), bson.D{{Key: "_id", Value: i}, {Key: "pad", Value: strings.Repeat("x", 50)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	valid, err := os.ReadFile(snapshotPath(good))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(valid)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name    string
		content []byte // nil: no file
		wantErr string // "": Start succeeds
	}{
		{"missing", nil, ""},
		{"valid", valid, ""},
		{"empty file", []byte{}, "file ends early"},
		{"truncated", valid[:len(valid)/2], "file ends early"},
		{"trailer cut", valid[:len(valid)-10], "file ends early"},
		{"byte flipped in a document", flip(len(valid) / 2), "checksum mismatch"},
		{"extra bytes", append(bytes.Clone(valid), 0), "data after the trailer"},
		{"not a snapshot", []byte("\x05\x00\x00\x00\x00"), "not a mongoserver snapshot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if tc.content != nil {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(snapshotPath(dir), tc.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := New(Options{DataDir: dir, NoopInterval: -1})
			err := s.Start("127.0.0.1:0")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(snapshotPath(dir)); err != nil {
					t.Fatalf("Close wrote no snapshot: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), snapshotPath(dir)) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Start: %v; want an error naming %s and saying %q", err, snapshotPath(dir), tc.wantErr)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if after, _ := os.ReadFile(snapshotPath(dir)); !bytes.Equal(after, tc.content) {
				t.Fatal("Close after a failed load overwrote the snapshot")
			}
		})
	}
}

// TestRestartSmallerOplogCap: a server with a smaller cap than the one that
// wrote the snapshot trims the oldest history on load, and resuming before
// the trimmed point reports lost history.
func TestRestartSmallerOplogCap(t *testing.T) {
	dir := t.TempDir()
	cl, stop := restartable(t, dir, Options{})
	coll := cl.Database("d").Collection("c")
	cs, err := coll.Watch(ctx(t), mongo.Pipeline{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	if !cs.Next(ctx(t)) {
		t.Fatal(cs.Err())
	}
	early := append(bson.Raw(nil), cs.ResumeToken()...)
	_ = cs.Close(ctx(t))
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	cl2, stop2 := restartable(t, dir, Options{OplogMaxEntries: 3})
	defer stop2()
	_, err = cl2.Database("d").Collection("c").Watch(ctx(t), mongo.Pipeline{}, options.ChangeStream().SetResumeAfter(early))
	var se mongo.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(codeChangeStreamHistoryLost) {
		t.Fatalf("resume before the trimmed history: %v, want code %d", err, codeChangeStreamHistoryLost)
	}
}
