package reliability

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy is a TCP proxy on loopback. It forwards every connection it accepts to target and
// can be told to
//   - slow down: each chunk of bytes, in either direction, waits Delay before it is forwarded
//     (SetDelay);
//   - go down: every open connection is cut and new ones are closed as soon as they are
//     accepted, as when a broker becomes unreachable (SetDown).
type faultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	delay time.Duration
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startProxy listens on 127.0.0.1 and forwards to target until Close.
func startProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p
}

// Addr is where clients connect.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// SetDelay makes every forwarded chunk wait d (0: forward at once).
func (p *faultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetDown cuts every connection and refuses new ones while down is true.
func (p *faultProxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	var open []net.Conn
	if down {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// Close stops the proxy and cuts every connection.
func (p *faultProxy) Close() {
	_ = p.ln.Close()
	p.SetDown(true)
	p.wg.Wait()
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			_ = client.Close()
			continue
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns[client] = struct{}{}
		p.conns[server] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(client, server)
		go p.pipe(server, client)
	}
}

// pipe copies from src to dst, chunk by chunk, applying the current delay; when either side
// ends, both are closed.
func (p *faultProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			delay := p.delay
			p.mu.Unlock()
			if delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				return
			}
			return
		}
	}
}

// proxiedListener is the listener kfake serves on: it accepts on a hidden loopback port but
// reports the proxy's address, so kfake advertises the proxy in its metadata and every Kafka
// client (producer, consumer group, admin) goes through the proxy.
type proxiedListener struct {
	net.Listener
	advertised net.Addr
}

func (l proxiedListener) Addr() net.Addr { return l.advertised }

// TestProxyForwardsDelaysAndCuts checks the proxy itself before the fault tests rely on it.
func TestProxyForwardsDelaysAndCuts(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	p := startProxy(t, echo.Addr().String())
	defer p.Close()

	roundTrip := func() (time.Duration, error) {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			return 0, err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return 0, err
		}
		if string(buf) != "ping" {
			return 0, errors.New("echo mismatch: " + string(buf))
		}
		return time.Since(start), nil
	}
	if _, err := roundTrip(); err != nil {
		t.Fatalf("plain forward: %v", err)
	}
	p.SetDelay(100 * time.Millisecond)
	if d, err := roundTrip(); err != nil || d < 200*time.Millisecond {
		t.Fatalf("delayed round trip took %v (%v), want at least 200ms (100ms each way)", d, err)
	}
	p.SetDelay(0)
	p.SetDown(true)
	if _, err := roundTrip(); err == nil {
		t.Fatal("a round trip through a proxy that is down succeeded")
	}
	p.SetDown(false)
	if _, err := roundTrip(); err != nil {
		t.Fatalf("after coming back up: %v", err)
	}
}
