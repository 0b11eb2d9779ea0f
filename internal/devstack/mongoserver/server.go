// Package mongoserver is an embedded, in-memory server that speaks enough of
// the MongoDB wire protocol for the official Go driver to use it unmodified as
// if it were a one-node replica set (or an Amazon DocumentDB cluster).
//
// It exists so that the whole docdb-dr pipeline (change streams, Kafka, DR
// apply) can be exercised in tests and in `docdbdr devstack` without a real
// MongoDB. It keeps data in memory: per collection an ordered index keyed by
// _id, plus an oplog from which change streams are served. With
// Options.DataDir it saves all of it on Close and loads it on Start
// (persist.go).
//
// Reading order: server.go (lifecycle, connections), wire.go (message
// framing), dispatch.go (command routing, errors), store.go (catalog and
// collections), oplog.go and changestream.go (change history), then the
// command files.
package mongoserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"
)

// Options configures a Server. The zero value is a MongoDB 4.0-compatible
// replica set "rs0" with no authentication and no TLS.
type Options struct {
	// WireVersion is the maxWireVersion reported by hello: 7 is DocumentDB 4.0
	// (the default), 13 is DocumentDB 5.0. The field names the server refuses to
	// store follow it (storage.go).
	WireVersion int
	// DocumentDB switches on DocumentDB behaviour: change streams are refused
	// until enabled with the modifyChangeStreams admin command, and a resume
	// point older than the retained history fails with code 136 instead of 286.
	DocumentDB bool
	// ReplicaSetName is the setName advertised by hello; default "rs0".
	ReplicaSetName string
	// OplogMaxEntries caps the retained change history; 0 means 1_000_000.
	OplogMaxEntries int
	// OplogMaxBytes caps the retained change history by size; 0 is unlimited.
	OplogMaxBytes int64
	// Username and Password, when set, make SCRAM-SHA-256 authentication
	// mandatory for every command except the handshake and SASL itself.
	Username, Password string
	// TLSConfig, when set, makes the listener speak TLS.
	TLSConfig *tls.Config
	// NoopInterval is how often an idle deployment writes a no-op oplog entry,
	// so that post-batch resume tokens keep advancing (MongoDB's
	// periodicNoopIntervalSecs). Default 1s; negative disables.
	NoopInterval time.Duration
	// Logger receives connection-level diagnostics; nil discards them.
	Logger *slog.Logger
	// DataDir, when set, makes the deployment survive a restart: Start loads
	// DataDir/snapshot.bson if it exists (a missing file is a fresh start, an
	// unreadable one an error), and Close writes everything back, oplog
	// included, so change-stream resume tokens stay valid. See persist.go.
	DataDir string
}

// Server is one deployment. Two Server values are two independent clusters.
type Server struct {
	opts Options
	log  *slog.Logger

	// db holds every database, collection, cursor and the oplog; see store.go.
	db *engine

	mu          sync.Mutex
	ln          net.Listener
	conns       map[*connState]struct{}
	unavailable bool
	closed      bool
	done        chan struct{} // closed by Close; stops background goroutines
	wg          sync.WaitGroup

	scramSrv scramServer

	// persist is set once Start has loaded (or found no) snapshot in
	// opts.DataDir; only then may Close write one, so a server that failed
	// to load never overwrites the file it could not read.
	persist bool
}

// New returns a Server configured by opts, with defaults filled in. It does
// not listen until Start.
func New(opts Options) *Server {
	if opts.WireVersion == 0 {
		opts.WireVersion = 7
	}
	if opts.ReplicaSetName == "" {
		opts.ReplicaSetName = "rs0"
	}
	if opts.OplogMaxEntries <= 0 {
		opts.OplogMaxEntries = 1_000_000
	}
	if opts.NoopInterval == 0 {
		opts.NoopInterval = time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		opts:  opts,
		log:   logger,
		conns: map[*connState]struct{}{},
		done:  make(chan struct{}),
	}
	s.db = newEngine(opts)
	return s
}

// Start loads the snapshot in Options.DataDir, if any, then listens on addr
// (for example "127.0.0.1:0") and serves connections in background
// goroutines until Close.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	if s.closed || s.ln != nil {
		s.mu.Unlock()
		return errors.New("mongoserver: Start called twice or after Close")
	}
	s.mu.Unlock()
	if s.opts.DataDir != "" {
		loaded, err := s.db.loadSnapshot(s.opts.DataDir)
		if err != nil {
			return fmt.Errorf("mongoserver: %w", err)
		}
		s.mu.Lock()
		s.persist = true
		s.mu.Unlock()
		if loaded {
			s.log.Info("mongoserver loaded snapshot", "path", snapshotPath(s.opts.DataDir))
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mongoserver: listen %s: %w", addr, err)
	}
	if s.opts.TLSConfig != nil {
		ln = tls.NewListener(ln, s.opts.TLSConfig)
	}
	s.mu.Lock()
	if s.closed || s.ln != nil {
		s.mu.Unlock()
		ln.Close()
		return errors.New("mongoserver: Start called twice or after Close")
	}
	s.ln = ln
	s.mu.Unlock()
	s.db.setAddr(ln.Addr().String())

	s.wg.Add(1)
	go s.acceptLoop(ln)
	if s.opts.NoopInterval > 0 {
		s.wg.Add(1)
		go s.noopLoop(s.opts.NoopInterval)
	}
	s.wg.Add(1)
	go s.reapLoop()
	s.log.Info("mongoserver listening", "addr", ln.Addr().String(), "tls", s.opts.TLSConfig != nil)
	return nil
}

// Addr is the host:port actually bound, or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URI is a connection string the v1 Go driver can use as is. With TLS the
// caller still has to add tlsCAFile (or a tls.Config) to trust the CA.
func (s *Server) URI() string {
	u := url.URL{Scheme: "mongodb", Host: s.Addr(), Path: "/"}
	if s.opts.Username != "" {
		u.User = url.UserPassword(s.opts.Username, s.opts.Password)
	}
	q := "replicaSet=" + url.QueryEscape(s.opts.ReplicaSetName)
	if s.opts.TLSConfig != nil {
		q += "&tls=true"
	}
	u.RawQuery = q
	return u.String()
}

// DropConnections closes every open client connection, as a network failure
// would. Drivers are expected to reconnect and change streams to resume.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]*connState, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

// SetUnavailable simulates the cluster being down: while true, open
// connections are dropped and new ones are closed as soon as accepted.
func (s *Server) SetUnavailable(down bool) {
	s.mu.Lock()
	s.unavailable = down
	s.mu.Unlock()
	if down {
		s.DropConnections()
	}
}

// Snapshot writes the deployment to Options.DataDir now (Close does it too),
// for callers that want a save point without stopping the server.
func (s *Server) Snapshot() error {
	if s.opts.DataDir == "" {
		return errors.New("mongoserver: Snapshot needs Options.DataDir")
	}
	if !s.persisting() {
		return errors.New("mongoserver: Snapshot before a successful Start would overwrite data it did not load")
	}
	if err := s.db.writeSnapshot(s.opts.DataDir); err != nil {
		return fmt.Errorf("mongoserver: %w", err)
	}
	return nil
}

// Close stops listening, closes every connection and waits for the
// background goroutines to finish. With Options.DataDir it then writes the
// snapshot that the next Start loads; without, data is discarded.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	ln := s.ln
	s.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	s.DropConnections()
	s.db.close()
	s.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		err = fmt.Errorf("mongoserver: close listener: %w", err)
	} else {
		err = nil
	}
	if s.persisting() {
		err = errors.Join(err, s.Snapshot())
	}
	return err
}

func (s *Server) persisting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.persist
}

// acceptLoop accepts connections until the listener is closed.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			s.log.Warn("mongoserver accept", "err", err)
			return
		}
		s.mu.Lock()
		if s.unavailable || s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		cs := newConnState(s, c)
		s.conns[cs] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, cs)
				s.mu.Unlock()
				cs.kill()
			}()
			s.serveConn(cs)
		}()
	}
}

// reapLoop closes idle cursors once a minute.
func (s *Server) reapLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.db.cursors.reap(now)
		}
	}
}

// noopLoop writes a no-op oplog entry whenever nothing else was written for
// a whole interval, so an idle change stream's resume token still advances.
func (s *Server) noopLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.db.noopIfIdle(every)
		}
	}
}
