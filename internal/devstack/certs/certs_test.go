package certs

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
)

// TestHandshake checks that a client trusting only the generated CA completes
// a TLS handshake with the server configuration, for every requested host.
func TestHandshake(t *testing.T) {
	b, err := New("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.ServerTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, host := range []string{"127.0.0.1", "localhost"} {
		cfg := b.ClientTLS.Clone()
		cfg.ServerName = host
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Fatalf("handshake as %s: %v", host, err)
		}
		c.Close()
	}
	// An unrelated CA must not be trusted.
	other, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tls.Dial("tcp", ln.Addr().String(), other.ClientTLS); err == nil {
		c.Close()
		t.Fatal("handshake with a foreign CA succeeded")
	}
}

func TestWriteCAFile(t *testing.T) {
	b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := b.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(b.CAPEM) {
		t.Fatal("CA file content differs from CAPEM")
	}
}
