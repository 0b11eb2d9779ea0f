package conformance

// Server-level commands: the handshake, ping, buildInfo, listDatabases, unknown commands and
// session cleanup on disconnect.

import (
	"errors"
	"regexp"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readpref"
)

// TestHandshake checks the hello / isMaster reply of a replica-set primary
// (manual: reference/command/hello, "Replica Sets" output fields).
func TestHandshake(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)

	cases := []struct {
		command     string
		primaryFlag string // the field that says "this node accepts writes"
	}{
		{"isMaster", "ismaster"},
		{"hello", "isWritablePrimary"},
	}
	for _, tc := range cases {
		t.Run(tc.command, func(t *testing.T) {
			reply, err := client.Database("admin").RunCommand(ctx, bson.D{{Key: tc.command, Value: 1}}).Raw()
			if err != nil {
				// hello exists since 5.0 and was backported to 4.4.2, 4.2.10, 4.0.21 and 3.6.21.
				if tc.command == "hello" && slices.Contains(errorCodes(err), 59) && maxWireVersion(t, ctx, client) < 13 {
					t.Skipf("server predates the hello command: %v", err)
				}
				t.Fatalf("%s: %v", tc.command, err)
			}

			if v, ok := reply.Lookup(tc.primaryFlag).BooleanOK(); !ok || !v {
				t.Errorf("%s = %s, want true on a primary", tc.primaryFlag, reply.Lookup(tc.primaryFlag))
			}
			if v, ok := reply.Lookup("secondary").BooleanOK(); !ok || v {
				t.Errorf("secondary = %s, want false on a primary", reply.Lookup("secondary"))
			}
			setName, ok := reply.Lookup("setName").StringValueOK()
			if !ok || setName == "" {
				t.Errorf("setName = %s, want the replica set name (change streams need a replica set)", reply.Lookup("setName"))
			}
			primary, _ := reply.Lookup("primary").StringValueOK()
			me, _ := reply.Lookup("me").StringValueOK()
			if primary == "" || primary != me {
				t.Errorf("primary = %q, me = %q: want both set and equal on the primary", primary, me)
			}
			var hosts []string
			if arr, ok := reply.Lookup("hosts").ArrayOK(); ok {
				vals, _ := arr.Values()
				for _, v := range vals {
					hosts = append(hosts, v.StringValue())
				}
			}
			if !slices.Contains(hosts, primary) {
				t.Errorf("hosts = %v, want it to list the primary %q", hosts, primary)
			}

			// The documented limits (manual: reference/limits and the hello output).
			wantInt := map[string]int64{
				"maxBsonObjectSize":   16 * 1024 * 1024,
				"maxMessageSizeBytes": 48000000,
				"maxWriteBatchSize":   100000,
			}
			for field, want := range wantInt {
				if got, ok := reply.Lookup(field).AsInt64OK(); !ok || got != want {
					t.Errorf("%s = %s, want %d", field, reply.Lookup(field), want)
				}
			}
			minWire, okMin := reply.Lookup("minWireVersion").Int32OK()
			maxWire, okMax := reply.Lookup("maxWireVersion").Int32OK()
			// The driver (1.17) supports servers with maxWireVersion >= 6 (MongoDB 3.6).
			if !okMin || !okMax || minWire > maxWire || maxWire < 6 {
				t.Errorf("wire versions min=%s max=%s, want 0 <= min <= max and max >= 6",
					reply.Lookup("minWireVersion"), reply.Lookup("maxWireVersion"))
			}
			if reply.Lookup("localTime").Type != bson.TypeDateTime {
				t.Errorf("localTime = %s, want a date", reply.Lookup("localTime"))
			}
			// Present whenever the deployment supports sessions (3.6+); drivers only use sessions then.
			if _, ok := reply.Lookup("logicalSessionTimeoutMinutes").AsInt64OK(); !ok {
				t.Errorf("logicalSessionTimeoutMinutes = %s, want a number", reply.Lookup("logicalSessionTimeoutMinutes"))
			}
			if v, ok := reply.Lookup("readOnly").BooleanOK(); ok && v {
				t.Errorf("readOnly = true, want false")
			}
			if ok, _ := reply.Lookup("ok").AsInt64OK(); ok != 1 {
				t.Errorf("ok = %s, want 1", reply.Lookup("ok"))
			}
		})
	}
}

// TestPing: ping answers {ok: 1} on any database (manual: reference/command/ping).
func TestPing(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	requireNoError(t, client.Ping(ctx, readpref.Primary()), "client.Ping")
	for _, db := range []string{"admin", uniqueDBName(t)} {
		reply, err := client.Database(db).RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Raw()
		requireNoError(t, err, "ping on "+db)
		if ok, _ := reply.Lookup("ok").AsInt64OK(); ok != 1 {
			t.Errorf("ping on %s: ok = %s, want 1", db, reply.Lookup("ok"))
		}
	}
}

// TestBuildInfo: buildInfo reports version as a string and versionArray as numbers
// (manual: reference/command/buildInfo).
func TestBuildInfo(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	reply, err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Raw()
	requireNoError(t, err, "buildInfo")

	version, ok := reply.Lookup("version").StringValueOK()
	if !ok || !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(version) {
		t.Errorf("version = %s, want a dotted version string", reply.Lookup("version"))
	}
	arr, ok := reply.Lookup("versionArray").ArrayOK()
	if !ok {
		t.Fatalf("versionArray = %s, want an array", reply.Lookup("versionArray"))
	}
	vals, _ := arr.Values()
	if len(vals) < 3 {
		t.Fatalf("versionArray = %s, want at least major, minor, patch", arr)
	}
	for i, v := range vals[:3] {
		if _, ok := v.AsInt64OK(); !ok {
			t.Errorf("versionArray[%d] = %s, want a number", i, v)
		}
	}
}

// TestListDatabases: a database with data is listed with its size, the name filter narrows
// the list, and nameOnly returns names (manual: reference/command/listDatabases).
func TestListDatabases(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	db := testDB(t, client)
	_, err := db.Collection("c").InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
	requireNoError(t, err, "insert")

	res, err := client.ListDatabases(ctx, bson.D{})
	requireNoError(t, err, "listDatabases")
	var found *mongo.DatabaseSpecification
	for i := range res.Databases {
		if res.Databases[i].Name == db.Name() {
			found = &res.Databases[i]
		}
	}
	if found == nil {
		t.Fatalf("listDatabases does not list %s", db.Name())
	}
	if found.Empty {
		t.Errorf("%s: empty = true for a database with a document", db.Name())
	}

	names, err := client.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: db.Name()}})
	requireNoError(t, err, "listDatabases with a name filter")
	requireStrings(t, names, []string{db.Name()}, "listDatabases filtered by name")

	names, err = client.ListDatabaseNames(ctx, bson.D{{Key: "name", Value: db.Name() + "_absent"}})
	requireNoError(t, err, "listDatabases with a filter matching nothing")
	requireStrings(t, names, nil, "listDatabases filtered by an absent name")

	raw, err := client.Database("admin").RunCommand(ctx, bson.D{
		{Key: "listDatabases", Value: 1},
		{Key: "filter", Value: bson.D{{Key: "name", Value: db.Name()}}},
		{Key: "nameOnly", Value: true},
	}).Raw()
	requireNoError(t, err, "listDatabases nameOnly")
	entries, _ := raw.Lookup("databases").Array().Values()
	if len(entries) != 1 {
		t.Fatalf("listDatabases nameOnly: %d entries, want 1: %s", len(entries), raw)
	}
	requireDoc(t, entries[0].Document(), bson.D{{Key: "name", Value: db.Name()}}, false, "listDatabases nameOnly entry")
}

// TestUnknownCommand: an unrecognised command fails with CommandNotFound (59)
// (manual: reference/error-codes).
func TestUnknownCommand(t *testing.T) {
	ctx := testContext(t)
	client := newClient(t)
	err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "noSuchCommandForConformance", Value: 1}}).Err()
	requireCode(t, err, "unknown command", 59)
	var cmdErr mongo.CommandError
	if errors.As(err, &cmdErr) && cmdErr.Name != "CommandNotFound" {
		t.Errorf("codeName = %q, want CommandNotFound", cmdErr.Name)
	}
}

// TestDisconnectEndsSessions: Disconnect sends endSessions for the pooled server sessions
// and the server accepts it (Driver Sessions spec, "endSessions"; manual:
// reference/command/endSessions).
func TestDisconnectEndsSessions(t *testing.T) {
	ctx := testContext(t)
	var log commandLog
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(serverURI(t)).SetMonitor(log.monitor()))
	requireNoError(t, err, "connect")
	db := testDB(t, newClient(t)) // dropped through another client: this one is disconnected below

	_, err = client.Database(db.Name()).Collection("c").InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
	requireNoError(t, err, "insert")
	inserts := log.Started("insert")
	if len(inserts) != 1 {
		t.Fatalf("saw %d insert commands, want 1", len(inserts))
	}
	_, lsid, ok := inserts[0].Lookup("lsid", "id").BinaryOK()
	if !ok {
		t.Fatalf("the insert carried no lsid: %s", inserts[0])
	}

	requireNoError(t, client.Disconnect(ctx), "disconnect")
	ended := log.Started("endSessions")
	if len(ended) == 0 {
		t.Fatalf("Disconnect sent no endSessions")
	}
	var endedIDs []string
	for _, cmd := range ended {
		vals, _ := cmd.Lookup("endSessions").Array().Values()
		for _, v := range vals {
			if _, data, ok := v.Document().Lookup("id").BinaryOK(); ok {
				endedIDs = append(endedIDs, string(data))
			}
		}
	}
	if !slices.Contains(endedIDs, string(lsid)) {
		t.Errorf("endSessions did not name the session the insert used")
	}
	if got := len(log.Succeeded("endSessions")); got != len(ended) {
		t.Errorf("%d of %d endSessions commands succeeded", got, len(ended))
	}
}
