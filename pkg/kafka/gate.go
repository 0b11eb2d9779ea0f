package kafka

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// errGateShut is what a write or a dial of an aborted publisher fails with.
var errGateShut = errors.New("kafka publisher aborted: nothing more is sent")

// gate is the publisher's dialer (sarama's Net.Proxy.Dialer): every broker connection of the
// producer goes through it, so that Abort can stop every byte from leaving at one instant, and
// then know when the requests already sent have been answered.
//
// It speaks TLS itself when the publisher uses TLS, so that the connections it wraps carry
// plain Kafka frames (a 4-byte big-endian size, then the body): it counts the request frames
// each connection wrote and the response frames it read. With acks=all every request the
// producer sends (produce, metadata, SASL) gets a response, so written - read is the number of
// requests in flight on that connection.
type gate struct {
	dialer net.Dialer
	tls    *tls.Config // nil: plain TCP

	mu    sync.RWMutex // held for reading around each write, for writing by shut
	shut  bool
	conns map[*gatedConn]struct{}
}

func newGate(dialTimeout, keepAlive time.Duration, tlsCfg *tls.Config) *gate {
	return &gate{dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlive}, tls: tlsCfg, conns: map[*gatedConn]struct{}{}}
}

// Dial connects to a broker, unless the gate is shut.
func (g *gate) Dial(network, addr string) (net.Conn, error) {
	if g.isShut() {
		return nil, errGateShut
	}
	conn, err := g.dialer.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	if g.tls != nil {
		cfg := g.tls.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), g.dialer.Timeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	gc := &gatedConn{Conn: conn, g: g}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		_ = conn.Close()
		return nil, errGateShut
	}
	g.conns[gc] = struct{}{}
	return gc, nil
}

func (g *gate) isShut() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.shut
}

// close shuts the gate: from its return, no connection writes another byte and none is dialled.
// Writes in progress are cut short by a past write deadline (a request cut in the middle is
// never complete at the broker, which discards it when the connection closes).
func (g *gate) close() {
	g.mu.RLock()
	for c := range g.conns {
		_ = c.Conn.SetWriteDeadline(time.Unix(1, 0))
	}
	g.mu.RUnlock()
	g.mu.Lock()
	g.shut = true
	g.mu.Unlock()
}

// inFlight is the number of requests written whose response has not been read, over the
// connections that can still receive one.
func (g *gate) inFlight() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n := 0
	for c := range g.conns {
		n += c.inFlight()
	}
	return n
}

// drain waits until no request is in flight, or ctx is done (then it returns how many still were).
func (g *gate) drain(ctx context.Context) (int, error) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		n := g.inFlight()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-tick.C:
		}
	}
}

// closeAll closes every connection.
func (g *gate) closeAll() {
	g.mu.Lock()
	conns := g.conns
	g.conns = map[*gatedConn]struct{}{}
	g.mu.Unlock()
	for c := range conns {
		c.close()
	}
}

// gatedConn is one broker connection behind the gate.
type gatedConn struct {
	net.Conn
	g *gate

	mu      sync.Mutex
	written frames
	read    frames
	dead    bool // closed or failed to read: no response will come on it
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.g.mu.RLock()
	defer c.g.mu.RUnlock()
	if c.g.shut {
		return 0, errGateShut
	}
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.written.feed(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.feed(p[:n])
	if err != nil {
		c.dead = true
	}
	c.mu.Unlock()
	return n, err
}

func (c *gatedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	return c.close()
}

func (c *gatedConn) close() error {
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *gatedConn) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return 0
	}
	return c.written.complete - c.read.complete
}

// frames counts complete Kafka frames (4-byte big-endian size, then that many bytes) in a byte
// stream fed in pieces of any size.
type frames struct {
	complete int
	hdr      [4]byte
	hdrN     int    // header bytes seen of the current frame
	left     uint32 // body bytes still to come of the current frame
}

func (f *frames) feed(p []byte) {
	for len(p) > 0 {
		if f.hdrN < 4 {
			k := copy(f.hdr[f.hdrN:], p)
			f.hdrN += k
			p = p[k:]
			if f.hdrN == 4 {
				f.left = binary.BigEndian.Uint32(f.hdr[:])
				if f.left == 0 {
					f.complete++
					f.hdrN = 0
				}
			}
			continue
		}
		k := min(uint32(len(p)), f.left)
		f.left -= k
		p = p[k:]
		if f.left == 0 {
			f.complete++
			f.hdrN = 0
		}
	}
}
