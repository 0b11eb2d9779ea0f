package docdb

import (
	"context"
	"sync"

	"go.mongodb.org/mongo-driver/mongo"
)

// Lazy is a cluster connection made on first use rather than when a function starts, so that an
// unreachable cluster (or Secrets Manager) fails an invocation, which reports it with its summary
// and metrics and is retried by the next one, instead of failing every cold start. It is safe for
// concurrent use; a failed connection attempt is retried by the next call.
type Lazy struct {
	settings Settings
	secrets  SecretGetter

	mu     sync.Mutex
	client *mongo.Client
}

// NewLazy returns a Lazy connection to the cluster s describes. Nothing connects until Client.
func NewLazy(s Settings, secrets SecretGetter) *Lazy {
	return &Lazy{settings: s, secrets: secrets}
}

// NewLazyFromClient wraps a client that is already connected (tests, the local runner).
func NewLazyFromClient(c *mongo.Client) *Lazy {
	return &Lazy{client: c}
}

// Client returns the connected client, connecting (and pinging) it first if needed.
func (l *Lazy) Client(ctx context.Context) (*mongo.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client != nil {
		return l.client, nil
	}
	c, err := Connect(ctx, l.settings, l.secrets)
	if err != nil {
		return nil, err
	}
	l.client = c
	return c, nil
}

// Settings are the connection's settings, for logs (String redacts them).
func (l *Lazy) Settings() Settings { return l.settings }

// Disconnect closes the client if one was connected.
func (l *Lazy) Disconnect(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client == nil {
		return nil
	}
	err := l.client.Disconnect(ctx)
	l.client = nil
	return err
}
