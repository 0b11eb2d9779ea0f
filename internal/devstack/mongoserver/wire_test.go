package mongoserver

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// opMsg frames body (and optional document sequences) as an OP_MSG.
func opMsg(flags wiremessage.MsgFlag, body bsoncore.Document, seqID string, seq ...bsoncore.Document) []byte {
	idx, dst := wiremessage.AppendHeaderStart(nil, 7, 0, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, flags)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	dst = append(dst, body...)
	if seqID != "" {
		dst = wiremessage.AppendMsgSectionType(dst, wiremessage.DocumentSequence)
		sidx, out := bsoncore.ReserveLength(dst)
		out = append(out, seqID...)
		out = append(out, 0)
		for _, d := range seq {
			out = append(out, d...)
		}
		dst = bsoncore.UpdateLength(out, sidx, int32(len(out[sidx:])))
	}
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
}

func mustDoc(t testing.TB, v interface{}) bsoncore.Document {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip sends msg on a fresh connection and returns the reply body, or
// nil if the server closed the connection instead.
func roundTrip(t *testing.T, addr string, msg []byte) bsoncore.Document {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return nil
	}
	// Half-close: a message shorter than its length header then ends in EOF
	// rather than waiting for bytes that never come.
	_ = c.(*net.TCPConn).CloseWrite()
	reply, err := readMessage(c)
	if err != nil {
		if err == io.EOF || strings.Contains(err.Error(), "reset") {
			return nil
		}
		t.Fatalf("reading reply: %v", err)
	}
	_, _, _, opcode, rem, _ := wiremessage.ReadHeader(reply)
	switch opcode {
	case wiremessage.OpMsg:
		_, rem, _ = wiremessage.ReadMsgFlags(rem)
		_, rem, _ = wiremessage.ReadMsgSectionType(rem)
		doc, _, _ := wiremessage.ReadMsgSectionSingleDocument(rem)
		return doc
	case wiremessage.OpReply:
		docs, _, _ := wiremessage.ReadReplyDocuments(rem[20:])
		return docs[0]
	}
	t.Fatalf("unexpected reply opcode %v", opcode)
	return nil
}

// TestMalformedMessages: garbage closes the offending connection (or yields
// an error reply) and the server keeps serving others.
func TestMalformedMessages(t *testing.T) {
	s := startServer(t, Options{})
	ping := mustDoc(t, bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}})
	good := opMsg(0, ping, "")
	badBSON := append([]byte(nil), good...)
	badBSON[21+4] = 0x7f // an invalid element type inside the body
	lenTooBig := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(lenTooBig, 100)
	seqBad := opMsg(0, ping, "documents", bsoncore.Document{0xff, 0, 0, 0, 0})
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"length below header", []byte{4, 0, 0, 0}},
		{"length beyond limit", []byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0}},
		{"truncated body", lenTooBig},
		{"invalid BSON", badBSON},
		{"bad document sequence", seqBad},
		{"unknown opcode", func() []byte {
			m := append([]byte(nil), good...)
			binary.LittleEndian.PutUint32(m[12:], 9999)
			return m
		}()},
		{"unknown required flag", opMsg(1<<5, ping, "")},
		{"no body", func() []byte {
			idx, dst := wiremessage.AppendHeaderStart(nil, 1, 0, wiremessage.OpMsg)
			dst = wiremessage.AppendMsgFlags(dst, 0)
			return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
		}()},
		{"bad checksum", func() []byte {
			m := opMsg(wiremessage.ChecksumPresent, ping, "")
			m = append(m, 1, 2, 3, 4)
			return bsoncore.UpdateLength(m, 0, int32(len(m)))
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if reply := roundTrip(t, s.Addr(), tc.msg); reply != nil {
				if ok, _ := reply.Lookup("ok").DoubleOK(); ok != 0 {
					t.Fatalf("malformed message answered ok: %v", reply)
				}
			}
			if reply := roundTrip(t, s.Addr(), good); reply == nil || reply.Lookup("ok").Double() != 1 {
				t.Fatalf("server no longer answers ping: %v", reply)
			}
		})
	}
}

// TestWireFeatures: document sequences, moreToCome, checksums, the legacy
// OP_QUERY handshake and the 16 MiB document limit, on raw connections.
func TestWireFeatures(t *testing.T) {
	s := startServer(t, Options{})
	insert := mustDoc(t, bson.D{{Key: "insert", Value: "c"}, {Key: "$db", Value: "d"}})
	reply := roundTrip(t, s.Addr(), opMsg(0, insert, "documents", mustDoc(t, bson.D{{Key: "_id", Value: 1}}), mustDoc(t, bson.D{{Key: "_id", Value: 2}})))
	if n := reply.Lookup("n").Int32(); n != 2 {
		t.Fatalf("sequence insert: %v", reply)
	}

	// A checksummed message is accepted.
	m := opMsg(wiremessage.ChecksumPresent, mustDoc(t, bson.D{{Key: "ping", Value: 1}, {Key: "$db", Value: "admin"}}), "")
	m = append(m, 0, 0, 0, 0)
	m = bsoncore.UpdateLength(m, 0, int32(len(m)))
	binary.LittleEndian.PutUint32(m[len(m)-4:], crc32c(m[:len(m)-4]))
	if reply := roundTrip(t, s.Addr(), m); reply == nil || reply.Lookup("ok").Double() != 1 {
		t.Fatalf("checksummed ping: %v", reply)
	}

	// moreToCome: no reply, but the write happens.
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(opMsg(wiremessage.MoreToCome, insert, "documents", mustDoc(t, bson.D{{Key: "_id", Value: 3}})))
	count := mustDoc(t, bson.D{{Key: "count", Value: "c"}, {Key: "$db", Value: "d"}})
	_, _ = c.Write(opMsg(0, count, ""))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	raw, err := readMessage(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bsoncore.Document(raw[21:]).String(), `"n": {"$numberLong":"3"}`) {
		t.Fatalf("count after unacknowledged insert: %s", bsoncore.Document(raw[21:]))
	}

	// Legacy OP_QUERY isMaster.
	idx, q := wiremessage.AppendHeaderStart(nil, 9, 0, wiremessage.OpCode(2004)) // OP_QUERY, from the spec
	q = wiremessage.AppendQueryFlags(q, 0)
	q = wiremessage.AppendQueryFullCollectionName(q, "admin.$cmd")
	q = wiremessage.AppendQueryNumberToSkip(q, 0)
	q = wiremessage.AppendQueryNumberToReturn(q, -1)
	q = append(q, mustDoc(t, bson.D{{Key: "isMaster", Value: 1}})...)
	q = bsoncore.UpdateLength(q, idx, int32(len(q)))
	hello := roundTrip(t, s.Addr(), q)
	if hello == nil || !hello.Lookup("ismaster").Boolean() || hello.Lookup("setName").StringValue() != "rs0" || hello.Lookup("maxWireVersion").Int32() != 7 {
		t.Fatalf("OP_QUERY isMaster: %v", hello)
	}

	// A document over 16 MiB is refused with BSONObjectTooLarge.
	big := mustDoc(t, bson.D{{Key: "_id", Value: "big"}, {Key: "s", Value: strings.Repeat("x", maxBSONObjectSize)}})
	reply = roundTrip(t, s.Addr(), opMsg(0, insert, "documents", big))
	we, err := reply.LookupErr("writeErrors", "0", "code")
	if err != nil || we.Int32() != codeBSONObjectTooLarge {
		t.Fatalf("oversized insert: %v", reply)
	}
}
