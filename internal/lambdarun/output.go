//go:build unix

package lambdarun

import (
	"bytes"
	"io"
	"sync"
)

// logStream is a function's log stream: whole lines, one Write each, one writer at a time.
type logStream struct {
	mu  sync.Mutex
	dst io.Writer
}

func (s *logStream) writeLine(line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.dst.Write(line)
}

// lineSplitter turns a process's output into whole lines on the stream.
type lineSplitter struct {
	stream *logStream
	mu     sync.Mutex
	buf    []byte
}

func (l *lineSplitter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.stream.writeLine(append([]byte(nil), l.buf[:i+1]...))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// flush writes a last line without its newline, when the process died mid-line.
func (l *lineSplitter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.stream.writeLine(append(l.buf, '\n'))
		l.buf = nil
	}
}
