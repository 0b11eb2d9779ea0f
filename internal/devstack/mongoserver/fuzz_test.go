package mongoserver

import (
	"hash/crc32"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// FuzzParse feeds arbitrary bytes to the message parser and, when they
// parse, to command dispatch: neither may panic or hang. Seeds live in
// testdata/fuzz/FuzzParse; more are added here from well-formed messages.
func FuzzParse(f *testing.F) {
	ping, _ := bson.Marshal(bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}})
	insert, _ := bson.Marshal(bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "d"}})
	doc, _ := bson.Marshal(bson.D{{Key: "_id", Value: 1}, {Key: "a", Value: bson.A{1, "x"}}})
	f.Add(opMsg(0, ping, ""))
	f.Add(opMsg(0, insert, "documents", doc, doc))
	f.Add(opMsg(wiremessage.MoreToCome, insert, "documents", doc))
	idx, q := wiremessage.AppendHeaderStart(nil, 1, 0, opQuery)
	q = wiremessage.AppendQueryFlags(q, 0)
	q = wiremessage.AppendQueryFullCollectionName(q, "admin.$cmd")
	q = wiremessage.AppendQueryNumberToSkip(q, 0)
	q = wiremessage.AppendQueryNumberToReturn(q, -1)
	isMaster, _ := bson.Marshal(bson.D{{Key: "isMaster", Value: 1}})
	q = append(q, isMaster...)
	f.Add(bsoncore.UpdateLength(q, idx, int32(len(q))))

	s := New(Options{NoopInterval: -1})
	cs := &connState{s: s, gone: make(chan struct{}), authenticated: true}
	f.Fuzz(func(t *testing.T, msg []byte) {
		req, err := parseMessage(msg)
		if err != nil {
			return
		}
		if req.body == nil {
			t.Fatal("parsed a message without a body")
		}
		// Only cheap, side-effect-contained commands: no awaitable hello.
		switch name := req.body.Index(0).Key(); name {
		case "insert", "find", "ping", "count", "update", "delete", "listCollections":
			_ = s.handle(cs, req, nil)
		}
	})
}
