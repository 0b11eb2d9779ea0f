package mongoserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"sync"

	"github.com/xdg-go/scram"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
)

// connState is one client connection and its per-connection session state
// (authentication). Commands on a connection run one at a time, in order.
type connState struct {
	s    *Server
	conn net.Conn
	gone chan struct{} // closed when the connection is being torn down
	once sync.Once

	authenticated bool
	sasl          *scram.ServerConversation
	saslID        int32
}

func newConnState(s *Server, c net.Conn) *connState {
	return &connState{s: s, conn: c, gone: make(chan struct{}), authenticated: s.opts.Username == ""}
}

// kill closes the connection and wakes any command waiting on its behalf
// (an awaitable hello, a change stream getMore).
func (cs *connState) kill() {
	cs.once.Do(func() {
		close(cs.gone)
		cs.conn.Close()
	})
}

// serveConn reads messages and answers them until the client goes away or
// sends something unparseable. A panic ends only this connection.
func (s *Server) serveConn(cs *connState) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("mongoserver connection panic", "remote", cs.conn.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
		}
	}()
	br := bufio.NewReaderSize(cs.conn, 64*1024)
	var out []byte
	for {
		msg, err := readMessage(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("mongoserver read", "remote", cs.conn.RemoteAddr().String(), "err", err)
			}
			return
		}
		req, err := parseMessage(msg)
		if err != nil {
			s.log.Warn("mongoserver closing connection on malformed message", "remote", cs.conn.RemoteAddr().String(), "err", err)
			return
		}
		// The reply is built in place after its message header, in a
		// buffer reused across requests, so a large batch is not copied or
		// regrown on every getMore.
		var idx int32
		if req.legacy {
			idx, out = startOpReply(out[:0], req.requestID)
		} else {
			idx, out = startOpMsgReply(out[:0], req.requestID)
		}
		out = s.handle(cs, req, out)
		if req.moreToCome {
			continue
		}
		out = bsoncore.UpdateLength(out, idx, int32(len(out[idx:])))
		if _, err := cs.conn.Write(out); err != nil {
			return
		}
		if cap(out) > 4<<20 {
			out = nil // do not pin a very large buffer to an idle connection
		}
	}
}
