// Package certs generates a throwaway certificate authority and a server
// certificate in memory, so the embedded stack can speak TLS the way Amazon
// DocumentDB does (a private CA the client must be told to trust).
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// Bundle is a test CA plus one server certificate signed by it.
type Bundle struct {
	// CAPEM is the CA certificate, PEM encoded: what a client's tlsCAFile holds.
	CAPEM []byte
	// ServerTLS presents the server certificate; give it to a listener.
	ServerTLS *tls.Config
	// ClientTLS trusts the CA and nothing else.
	ClientTLS *tls.Config
}

// New creates a CA and a server certificate valid for hosts (IP addresses or
// DNS names). With no hosts it covers 127.0.0.1 and localhost.
func New(hosts ...string) (*Bundle, error) {
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	now := time.Now()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate CA key: %w", err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "docdb-dr devstack test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("certs: parse CA certificate: %w", err)
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate server key: %w", err)
	}
	srvTemplate := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			srvTemplate.IPAddresses = append(srvTemplate.IPAddresses, ip)
		} else {
			srvTemplate.DNSNames = append(srvTemplate.DNSNames, h)
		}
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTemplate, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: create server certificate: %w", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &Bundle{
		CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		ServerTLS: &tls.Config{
			MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{{
				Certificate: [][]byte{srvDER, caDER},
				PrivateKey:  srvKey,
			}},
		},
		ClientTLS: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
	}, nil
}

// WriteCAFile writes the CA certificate to path (mode 0600), for clients that
// take a tlsCAFile URI option.
func (b *Bundle) WriteCAFile(path string) error {
	if err := os.WriteFile(path, b.CAPEM, 0o600); err != nil {
		return fmt.Errorf("certs: write CA file: %w", err)
	}
	return nil
}

// serial returns a random 128-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("certs: serial: %v", err))
	}
	return n
}
