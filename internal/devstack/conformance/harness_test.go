package conformance

// The harness: where the server under test comes from, how a test gets a client and its own
// database, and small helpers for the assertions every file uses (error codes, BSON
// comparison, command recording).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/event"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
)

// Environment variables that point the suite at a real deployment instead of the embedded
// server.
const (
	// envURI is a MongoDB replica-set primary (change streams need a replica set).
	envURI = "DOCDBDR_CONFORMANCE_URI"
	// envDocumentDBURI is an Amazon DocumentDB cluster, used by the DocumentDB-specific cases.
	envDocumentDBURI = "DOCDBDR_CONFORMANCE_DOCUMENTDB_URI"
)

// opTimeout bounds every single test; nothing here should take more than a few seconds.
const opTimeout = 60 * time.Second

// shared is the embedded server most tests use, started on first use and closed by TestMain.
var shared struct {
	once sync.Once
	srv  *mongoserver.Server
	uri  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Close()
	}
	os.Exit(code)
}

// external reports whether the suite runs against a real MongoDB deployment.
func external() bool { return os.Getenv(envURI) != "" }

// documentDBExternal reports whether the DocumentDB cases run against a real cluster.
func documentDBExternal() bool { return os.Getenv(envDocumentDBURI) != "" }

// serverURI is the URI of the server most tests use: the real deployment when one is
// configured, otherwise the shared embedded server (plain MongoDB mode).
func serverURI(t *testing.T) string {
	t.Helper()
	if uri := os.Getenv(envURI); uri != "" {
		return uri
	}
	shared.once.Do(func() {
		srv := mongoserver.New(mongoserver.Options{})
		if err := srv.Start("127.0.0.1:0"); err != nil {
			shared.err = err
			return
		}
		shared.srv, shared.uri = srv, srv.URI()
	})
	if shared.err != nil {
		t.Fatalf("start the embedded server: %v", shared.err)
	}
	return shared.uri
}

// dedicatedServer starts an embedded server with the given options for this test alone. The
// options are ones a real deployment cannot be given on demand, so against a real deployment
// the test is skipped with reason.
func dedicatedServer(t *testing.T, opts mongoserver.Options, reason string) string {
	t.Helper()
	if external() {
		t.Skipf("needs an embedded server with special options: %s", reason)
	}
	srv := mongoserver.New(opts)
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("start a dedicated embedded server: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.URI()
}

// dedicatedServerWire starts an embedded server that reports the given maxWireVersion, for
// features the manual ties to a server version newer than the embedded default.
func dedicatedServerWire(t *testing.T, wireVersion int) string {
	t.Helper()
	return dedicatedServer(t, mongoserver.Options{WireVersion: wireVersion},
		fmt.Sprintf("maxWireVersion %d", wireVersion))
}

// documentDBURI is the URI of a server in Amazon DocumentDB mode: a real cluster when
// DOCDBDR_CONFORMANCE_DOCUMENTDB_URI is set, otherwise a dedicated embedded server started in
// DocumentDB mode. A real MongoDB (DOCDBDR_CONFORMANCE_URI alone) cannot play that part.
func documentDBURI(t *testing.T) string {
	t.Helper()
	if uri := os.Getenv(envDocumentDBURI); uri != "" {
		return uri
	}
	if external() {
		t.Skipf("needs a DocumentDB-mode server; set %s to run it against a real cluster", envDocumentDBURI)
	}
	srv := mongoserver.New(mongoserver.Options{DocumentDB: true})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("start an embedded DocumentDB-mode server: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.URI()
}

// testContext bounds a test's operations.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a client to uri that is disconnected when the test ends.
func connect(t *testing.T, uri string, extra ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	opts := append([]*options.ClientOptions{
		options.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second),
	}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	client, err := mongo.Connect(ctx, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", uri, err)
	}
	if err := client.Ping(ctx, nil); err != nil {
		t.Fatalf("ping %s: %v", uri, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Disconnect(ctx)
	})
	return client
}

// newClient connects to the server most tests use.
func newClient(t *testing.T, extra ...*options.ClientOptions) *mongo.Client {
	t.Helper()
	return connect(t, serverURI(t), extra...)
}

var unsafeNameChars = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueDBName derives a database name from the test name plus a random suffix, so tests
// never share data even when run repeatedly against the same real deployment. Database
// names are limited to 64 bytes and may not contain /\. "$ or spaces.
func uniqueDBName(t *testing.T) string {
	t.Helper()
	name := unsafeNameChars.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	return "cf_" + strings.Trim(name, "_") + "_" + hex.EncodeToString(suffix)
}

// testDB returns a fresh database for this test on client, dropped when the test ends.
func testDB(t *testing.T, client *mongo.Client) *mongo.Database {
	t.Helper()
	db := client.Database(uniqueDBName(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = db.Drop(ctx)
	})
	return db
}

// helloReply runs the handshake command on admin and returns its reply.
func helloReply(t *testing.T, ctx context.Context, client *mongo.Client) bson.Raw {
	t.Helper()
	reply, err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "isMaster", Value: 1}}).Raw()
	if err != nil {
		t.Fatalf("isMaster: %v", err)
	}
	return reply
}

// maxWireVersion is the server's maxWireVersion: features are gated on it the way the
// manual gates them on server versions (7 = 4.0, 8 = 4.2, 9 = 4.4, 13 = 5.0, 17 = 6.0).
func maxWireVersion(t *testing.T, ctx context.Context, client *mongo.Client) int32 {
	t.Helper()
	v, ok := helloReply(t, ctx, client).Lookup("maxWireVersion").Int32OK()
	if !ok {
		t.Fatalf("isMaster reply has no int32 maxWireVersion")
	}
	return v
}

// ---- errors ----

// errorCodes lists every server error code err carries: the command error's code, each
// write error's code and the write concern error's code.
func errorCodes(err error) []int {
	var codes []int
	var cmdErr mongo.CommandError
	if errors.As(err, &cmdErr) {
		codes = append(codes, int(cmdErr.Code))
	}
	var writeExc mongo.WriteException
	if errors.As(err, &writeExc) {
		for _, we := range writeExc.WriteErrors {
			codes = append(codes, we.Code)
		}
		if writeExc.WriteConcernError != nil {
			codes = append(codes, writeExc.WriteConcernError.Code)
		}
	}
	var bulkExc mongo.BulkWriteException
	if errors.As(err, &bulkExc) {
		for _, we := range bulkExc.WriteErrors {
			codes = append(codes, we.Code)
		}
		if bulkExc.WriteConcernError != nil {
			codes = append(codes, bulkExc.WriteConcernError.Code)
		}
	}
	return codes
}

// requireCode fails the test unless err carries one of the wanted server error codes.
func requireCode(t *testing.T, err error, what string, want ...int) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want server error code %v", what, want)
	}
	for _, got := range errorCodes(err) {
		for _, w := range want {
			if got == w {
				return
			}
		}
	}
	t.Fatalf("%s: got error %v (codes %v), want server error code %v", what, err, errorCodes(err), want)
}

// requireNoError fails the test with context when err is not nil.
func requireNoError(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// ---- BSON ----

// toRaw marshals a Go value (usually a bson.D) into a BSON document.
func toRaw(t *testing.T, v any) bson.Raw {
	t.Helper()
	raw, err := bson.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	return raw
}

// diffDocs compares two BSON documents and describes the first difference, or returns "".
// Values must have the same BSON type (an int32 is not an int64). Field order is ignored
// in documents unless ordered is set; array order always matters.
func diffDocs(got, want bson.Raw, ordered bool) string {
	return diffDocAt("", got, want, ordered)
}

func diffDocAt(path string, got, want bson.Raw, ordered bool) string {
	gotElems, err := got.Elements()
	if err != nil {
		return fmt.Sprintf("%s: invalid document: %v", orRoot(path), err)
	}
	wantElems, err := want.Elements()
	if err != nil {
		return fmt.Sprintf("%s: invalid expected document: %v", orRoot(path), err)
	}
	if ordered {
		gotKeys, wantKeys := keysOf(gotElems), keysOf(wantElems)
		if strings.Join(gotKeys, ",") != strings.Join(wantKeys, ",") {
			return fmt.Sprintf("%s: field order %v, want %v", orRoot(path), gotKeys, wantKeys)
		}
	}
	gotByKey := map[string]bson.RawValue{}
	for _, e := range gotElems {
		gotByKey[e.Key()] = e.Value()
	}
	wantKeys := map[string]bool{}
	for _, e := range wantElems {
		wantKeys[e.Key()] = true
		g, ok := gotByKey[e.Key()]
		if !ok {
			return fmt.Sprintf("%s: missing field %q (got %s)", orRoot(path), e.Key(), got)
		}
		if d := diffValue(join(path, e.Key()), g, e.Value(), ordered); d != "" {
			return d
		}
	}
	for _, e := range gotElems {
		if !wantKeys[e.Key()] {
			return fmt.Sprintf("%s: unexpected field %q (got %s)", orRoot(path), e.Key(), got)
		}
	}
	return ""
}

func diffValue(path string, got, want bson.RawValue, ordered bool) string {
	if got.Type != want.Type {
		return fmt.Sprintf("%s: BSON type %s (%s), want %s (%s)", path, got.Type, got, want.Type, want)
	}
	switch want.Type {
	case bson.TypeEmbeddedDocument:
		return diffDocAt(path, got.Document(), want.Document(), ordered)
	case bson.TypeArray:
		gotVals, _ := got.Array().Values()
		wantVals, _ := want.Array().Values()
		if len(gotVals) != len(wantVals) {
			return fmt.Sprintf("%s: array %s, want %s", path, got, want)
		}
		for i := range wantVals {
			if d := diffValue(fmt.Sprintf("%s.%d", path, i), gotVals[i], wantVals[i], ordered); d != "" {
				return d
			}
		}
		return ""
	default:
		if !bytes.Equal(got.Value, want.Value) {
			return fmt.Sprintf("%s: %s, want %s", path, got, want)
		}
		return ""
	}
}

func keysOf(elems []bson.RawElement) []string {
	keys := make([]string, len(elems))
	for i, e := range elems {
		keys[i] = e.Key()
	}
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "document"
	}
	return path
}

// requireDoc fails the test when got differs from want (see diffDocs).
func requireDoc(t *testing.T, got bson.Raw, want any, ordered bool, what string) {
	t.Helper()
	if d := diffDocs(got, toRaw(t, want), ordered); d != "" {
		t.Fatalf("%s: %s", what, d)
	}
}

// findAll returns every document of coll matching filter, sorted by _id.
func findAll(t *testing.T, ctx context.Context, coll *mongo.Collection, filter any) []bson.Raw {
	t.Helper()
	cur, err := coll.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	requireNoError(t, err, "find")
	var docs []bson.Raw
	for cur.Next(ctx) {
		docs = append(docs, append(bson.Raw(nil), cur.Current...))
	}
	requireNoError(t, cur.Err(), "iterate")
	requireNoError(t, cur.Close(ctx), "close cursor")
	return docs
}

// ids extracts the _id of each document, rendered as relaxed extended JSON for messages.
func ids(docs []bson.Raw) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.Lookup("_id").String()
	}
	return out
}

// intIDs renders integer _id values the same way ids does, for comparisons.
func intIDs(values ...int32) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = bson.RawValue{Type: bson.TypeInt32, Value: bsoncore.AppendInt32(nil, v)}.String()
	}
	return out
}

// requireStrings fails the test unless got equals want element by element.
func requireStrings(t *testing.T, got, want []string, what string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// sortedStrings returns a sorted copy.
func sortedStrings(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

// ---- command recording ----

// commandLog records the commands a client sends and the replies it gets, through the
// driver's command monitoring (the Command Logging and Monitoring spec).
type commandLog struct {
	mu        sync.Mutex
	started   []recordedCommand
	succeeded []recordedCommand
}

type recordedCommand struct {
	name string
	doc  bson.Raw // the command for started events, the reply for succeeded ones
}

func (l *commandLog) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.started = append(l.started, recordedCommand{e.CommandName, append(bson.Raw(nil), e.Command...)})
		},
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.succeeded = append(l.succeeded, recordedCommand{e.CommandName, append(bson.Raw(nil), e.Reply...)})
		},
	}
}

// Started returns the commands named name that were sent.
func (l *commandLog) Started(name string) []bson.Raw { return l.filter(&l.started, name) }

// Succeeded returns the replies of the successful commands named name.
func (l *commandLog) Succeeded(name string) []bson.Raw { return l.filter(&l.succeeded, name) }

func (l *commandLog) filter(list *[]recordedCommand, name string) []bson.Raw {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []bson.Raw
	for _, c := range *list {
		if c.name == name {
			out = append(out, c.doc)
		}
	}
	return out
}

// Reset forgets everything recorded so far.
func (l *commandLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started, l.succeeded = nil, nil
}
