package mongoserver

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/internal/devstack/certs"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// TestSCRAM: the right password authenticates, a wrong one fails with
// AuthenticationFailed, and no credentials cannot run commands.
func TestSCRAM(t *testing.T) {
	s := startServer(t, Options{Username: "app", Password: "s3cret:/@"})
	if !strings.HasPrefix(s.URI(), "mongodb://app:") {
		t.Fatalf("URI without credentials: %s", s.URI())
	}
	cl := connect(t, s)
	if _, err := cl.Database("d").Collection("c").InsertOne(ctx(t), bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatalf("authenticated insert: %v", err)
	}

	for _, tc := range []struct {
		name string
		cred *options.Credential
		code int32
	}{
		{"wrong password", &options.Credential{Username: "app", Password: "nope"}, codeAuthenticationFailed},
		{"unknown user", &options.Credential{Username: "eve", Password: "s3cret:/@"}, codeAuthenticationFailed},
		{"no credentials", nil, codeUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options.Client().ApplyURI("mongodb://" + s.Addr() + "/?replicaSet=rs0").SetServerSelectionTimeout(3 * time.Second)
			if tc.cred != nil {
				o.SetAuth(*tc.cred)
			}
			c, err := mongo.Connect(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Disconnect(context.Background())
			_, err = c.Database("d").Collection("c").InsertOne(ctx(t), bson.D{{Key: "x", Value: 2}})
			if err == nil {
				t.Fatal("write succeeded")
			}
			// Handshake failures reach the caller wrapped in the driver's
			// auth error, which names the server's codeName.
			var se mongo.ServerError
			if !(errors.As(err, &se) && se.HasErrorCode(int(tc.code))) && !strings.Contains(err.Error(), "("+codeNames[tc.code]+")") {
				t.Fatalf("want code %d, got %v", tc.code, err)
			}
		})
	}
}

// TestTLS: with a TLSConfig the server speaks TLS; a client trusting the
// test CA file connects through URI parameters, one without it cannot.
func TestTLS(t *testing.T) {
	b, err := certs.New("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Options{TLSConfig: b.ServerTLS, Username: "u", Password: "p"})
	if !strings.Contains(s.URI(), "tls=true") {
		t.Fatalf("URI lacks tls=true: %s", s.URI())
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := b.WriteCAFile(caFile); err != nil {
		t.Fatal(err)
	}
	cl, err := mongo.Connect(context.Background(), options.Client().ApplyURI(s.URI()+"&tlsCAFile="+caFile))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(context.Background())
	if err := cl.Ping(ctx(t), nil); err != nil {
		t.Fatalf("TLS ping: %v", err)
	}
	cl2 := connect(t, s, options.Client().SetTLSConfig(b.ClientTLS))
	if err := cl2.Ping(ctx(t), nil); err != nil {
		t.Fatalf("TLS ping with tls.Config: %v", err)
	}

	other, err := certs.New()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := mongo.Connect(context.Background(), options.Client().ApplyURI(s.URI()).SetTLSConfig(other.ClientTLS).SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Disconnect(context.Background())
	if err := bad.Ping(ctx(t), nil); err == nil {
		t.Fatal("connected while trusting a foreign CA")
	}
}

// TestWireVersion13 runs the basics against a DocumentDB 5.0-like server,
// where the driver uses the streaming (awaitable hello) monitor.
func TestWireVersion13(t *testing.T) {
	s := startServer(t, Options{WireVersion: 13})
	cl := connect(t, s)
	var bi bson.M
	if err := cl.Database("admin").RunCommand(ctx(t), bson.D{{Key: "buildInfo", Value: 1}}).Decode(&bi); err != nil || bi["version"] != "5.0.0" {
		t.Fatalf("buildInfo %v %v", bi, err)
	}
	coll := cl.Database("d").Collection("c")
	cs := watchColl(t, coll)
	insertIDs(t, coll, 1)
	if got := next(t, cs).label(); got != "insert d.c 1" {
		t.Fatal(got)
	}
	s.DropConnections()
	insertIDs(t, coll, 2)
	if got := next(t, cs).label(); got != "insert d.c 2" {
		t.Fatal(got)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with an awaitable hello pending", d)
	}
}
