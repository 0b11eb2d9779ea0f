package conformance

// Wire-protocol robustness, below the driver: malformed messages on a raw TCP connection
// must neither crash nor stall the server. A message is a 16-byte header (messageLength,
// requestID, responseTo, opCode, all little-endian int32) followed by the body; messageLength
// counts the header and may not exceed maxMessageSizeBytes (48000000). OP_MSG (opCode 2013)
// is flagBits (uint32) then sections; a kind-0 section is one BSON document
// (manual: reference/mongodb-wire-protocol).

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/readpref"
	"go.mongodb.org/mongo-driver/x/mongo/driver/connstring"
)

const opMsg = 2013

// rawAddr is host:port of the server under test; raw tests need plain TCP.
func rawAddr(t *testing.T) string {
	t.Helper()
	cs, err := connstring.ParseAndValidate(serverURI(t))
	requireNoError(t, err, "parse the server URI")
	if cs.SSL || len(cs.Hosts) == 0 {
		t.Skip("raw protocol tests need a plain TCP server address")
	}
	return cs.Hosts[0]
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	requireNoError(t, err, "dial "+addr)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// header builds a message header.
func header(length, requestID, responseTo, opCode int32) []byte {
	h := make([]byte, 16)
	binary.LittleEndian.PutUint32(h[0:], uint32(length))
	binary.LittleEndian.PutUint32(h[4:], uint32(requestID))
	binary.LittleEndian.PutUint32(h[8:], uint32(responseTo))
	binary.LittleEndian.PutUint32(h[12:], uint32(opCode))
	return h
}

// opMsgBytes builds a complete OP_MSG with one kind-0 section holding body.
func opMsgBytes(requestID int32, body []byte) []byte {
	payload := append([]byte{0, 0, 0, 0, 0}, body...) // flagBits, section kind 0
	return append(header(int32(16+len(payload)), requestID, 0, opMsg), payload...)
}

// rawCommand sends cmd as an OP_MSG on conn and returns the reply's kind-0 document.
func rawCommand(t *testing.T, conn net.Conn, requestID int32, cmd bson.D) bson.Raw {
	t.Helper()
	requireNoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)), "deadline")
	_, err := conn.Write(opMsgBytes(requestID, toRaw(t, cmd)))
	requireNoError(t, err, "write OP_MSG")

	h := make([]byte, 16)
	_, err = io.ReadFull(conn, h)
	requireNoError(t, err, "read reply header")
	length := int32(binary.LittleEndian.Uint32(h[0:]))
	responseTo := int32(binary.LittleEndian.Uint32(h[8:]))
	opCode := int32(binary.LittleEndian.Uint32(h[12:]))
	if responseTo != requestID || opCode != opMsg {
		t.Fatalf("reply header responseTo=%d opCode=%d, want %d and %d", responseTo, opCode, requestID, opMsg)
	}
	if length < 16+5 || length > 48000000 {
		t.Fatalf("reply messageLength %d is out of range", length)
	}
	body := make([]byte, length-16)
	_, err = io.ReadFull(conn, body)
	requireNoError(t, err, "read reply body")
	if body[4] != 0 {
		t.Fatalf("reply section kind %d, want 0", body[4])
	}
	doc := bson.Raw(body[5:])
	requireNoError(t, doc.Validate(), "reply document")
	return doc
}

// requireServerAlive checks that the server still answers: a raw ping on a new connection
// and a ping through a driver client.
func requireServerAlive(t *testing.T, addr string) {
	t.Helper()
	reply := rawCommand(t, dial(t, addr), 42, doc("ping", 1, "$db", "admin"))
	if ok, _ := reply.Lookup("ok").AsInt64OK(); ok != 1 {
		t.Fatalf("raw ping reply %s, want ok: 1", reply)
	}
	ctx := testContext(t)
	requireNoError(t, newClient(t).Ping(ctx, readpref.Primary()), "driver ping")
}

// requireClosed waits for the server to close conn (EOF or reset) without it answering.
func requireClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	requireNoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)), "deadline")
	buf := make([]byte, 1024)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue // an error reply before closing is acceptable
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server kept the connection open 10s after an invalid message")
		}
		return
	}
}

// TestWireValidMessage is the positive control for the raw tests: a well-formed OP_MSG ping
// gets an OP_MSG reply to the same requestID with ok: 1, and the connection stays usable.
func TestWireValidMessage(t *testing.T) {
	conn := dial(t, rawAddr(t))
	for id := int32(1); id <= 2; id++ {
		reply := rawCommand(t, conn, id, doc("ping", 1, "$db", "admin"))
		if ok, _ := reply.Lookup("ok").AsInt64OK(); ok != 1 {
			t.Fatalf("ping %d: reply %s, want ok: 1", id, reply)
		}
	}
}

// TestWireMalformedMessages: each malformed input is sent on its own connection, which is
// held open while the server is checked for liveness. Inputs whose messageLength is
// impossible (below the header size, negative, above maxMessageSizeBytes) leave the server
// no way to find the next message, so it must close that connection.
func TestWireMalformedMessages(t *testing.T) {
	addr := rawAddr(t)
	cases := []struct {
		name       string
		data       []byte
		wantClosed bool
	}{
		{"text instead of a header", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), true},
		{"messageLength below the header size", append(header(8, 1, 0, opMsg), 0, 0, 0, 0), true},
		{"negative messageLength", header(-1, 1, 0, opMsg), true},
		{"messageLength above maxMessageSizeBytes", header(48000001, 1, 0, opMsg), true},
		{"truncated header", []byte{0x20, 0, 0, 0, 1, 0, 0}, false},
		{"messageLength beyond the data sent", append(header(1000, 1, 0, opMsg), make([]byte, 100)...), false},
		{"unknown opCode", append(header(16+8, 1, 0, 9999), make([]byte, 8)...), false},
		{"OP_MSG whose document overruns the message", func() []byte {
			body := []byte{0, 0, 0, 0, 0, 0xe8, 0x03, 0, 0, 0x10, 'a', 0}
			return append(header(int32(16+len(body)), 1, 0, opMsg), body...)
		}(), false},
		{"OP_MSG with an unknown section kind", func() []byte {
			body := append([]byte{0, 0, 0, 0, 7}, toRaw(t, doc("ping", 1, "$db", "admin"))...)
			return append(header(int32(16+len(body)), 1, 0, opMsg), body...)
		}(), false},
		{"OP_MSG without $db", opMsgBytes(1, toRaw(t, doc("ping", 1))), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, addr)
			requireNoError(t, conn.SetWriteDeadline(time.Now().Add(5*time.Second)), "deadline")
			_, err := conn.Write(tc.data)
			requireNoError(t, err, "write")

			requireServerAlive(t, addr) // while the bad connection is still open
			if tc.wantClosed {
				requireClosed(t, conn)
			}
		})
	}
}

// TestWireAbruptDisconnects: many clients that vanish mid-message do not disturb the server.
func TestWireAbruptDisconnects(t *testing.T) {
	addr := rawAddr(t)
	msg := opMsgBytes(1, toRaw(t, doc("ping", 1, "$db", "admin")))
	for i := 0; i < 50; i++ {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		requireNoError(t, err, "dial")
		_, _ = conn.Write(msg[:i%len(msg)])
		if tcp, ok := conn.(*net.TCPConn); ok && i%2 == 0 {
			_ = tcp.SetLinger(0) // reset instead of a clean close
		}
		conn.Close()
	}
	requireServerAlive(t, addr)
}
