package mongoserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime/debug"
	"sync"

	"github.com/xdg-go/scram"
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
		reply := s.handle(cs, req)
		if req.moreToCome {
			continue
		}
		if req.legacy {
			out = appendOpReply(out[:0], req.requestID, reply)
		} else {
			out = appendOpMsgReply(out[:0], req.requestID, 0, reply)
		}
		if _, err := cs.conn.Write(out); err != nil {
			return
		}
		if cap(out) > 1<<20 {
			out = nil // do not pin a large reply buffer to an idle connection
		}
	}
}
