package checkpoint

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"

	"github.com/docdb-dr/docdb-dr/internal/devstack/mongoserver"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func newStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	srv := mongoserver.New(mongoserver.Options{})
	if err := srv.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := docdb.Connect(ctx, docdb.Settings{URI: srv.URI(), TLS: docdb.TLSDisabled}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	clk := &clock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	return New(client.Database("docdbdr").Collection("checkpoints"), clk.now), clk
}

func token(n int) bson.Raw {
	b, _ := bson.Marshal(bson.D{{Key: "_data", Value: strings.Repeat("0", 8) + string(rune('A'+n))}})
	return b
}

func TestLeaseLifecycle(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	const scope = "bar.foo"

	// First use creates the document.
	st, err := s.Load(ctx, scope)
	if err != nil || st.Exists {
		t.Fatalf("load before first use: %+v, %v", st, err)
	}
	a, err := s.Acquire(ctx, scope, "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fence != 1 {
		t.Errorf("first fence = %d, want 1", a.Fence)
	}

	// Another owner is refused, with the holder and expiry named.
	_, err = s.Acquire(ctx, scope, "b", time.Minute)
	if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), "2024-05-01T12:01:00Z") {
		t.Fatalf("second owner: %v", err)
	}

	// The holder saves; the checkpoint and expiry move.
	clk.add(30 * time.Second)
	pos := Position{ResumeToken: token(1), ClusterTime: primitive.Timestamp{T: 100, I: 2}}
	if err := s.Save(ctx, a, pos); err != nil {
		t.Fatal(err)
	}
	st, _ = s.Load(ctx, scope)
	if !bytesEqual(st.ResumeToken, pos.ResumeToken) || st.ClusterTime != pos.ClusterTime || !st.Lease.ExpiresAt.Equal(clk.now().Add(time.Minute)) {
		t.Errorf("after save: %+v", st)
	}

	// The same owner may take its own lease again (a Lambda retry keeps its request id).
	a2, err := s.Acquire(ctx, scope, "a", time.Minute)
	if err != nil || a2.Fence != 2 {
		t.Fatalf("own lease again: %+v, %v", a2, err)
	}

	// After expiry another owner takes over; the stale holder can neither save nor release.
	clk.add(2 * time.Minute)
	b, err := s.Acquire(ctx, scope, "b", time.Minute)
	if err != nil || b.Fence != 3 {
		t.Fatalf("take over expired lease: %+v, %v", b, err)
	}
	for name, op := range map[string]func() error{
		"save":    func() error { return s.Save(ctx, a2, Position{ResumeToken: token(9)}) },
		"release": func() error { return s.Release(ctx, a2) },
	} {
		if err := op(); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("stale %s: %v", name, err)
		}
	}
	st, _ = s.Load(ctx, scope)
	if !bytesEqual(st.ResumeToken, pos.ResumeToken) {
		t.Errorf("a stale save moved the checkpoint")
	}

	// Release frees it at once.
	if err := s.Release(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, scope, "c", time.Minute); err != nil {
		t.Errorf("acquire after release: %v", err)
	}
}

func TestResetFencesAndRecords(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	const scope = "bar"
	l, err := s.Acquire(ctx, scope, "capture-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, l, Position{ResumeToken: token(1), ClusterTime: primitive.Timestamp{T: 50}}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		to    ResetTo
		check func(State) error
	}{
		{"to a time", ResetTo{StartAt: time.Unix(1700000000, 0)}, func(st State) error {
			if st.ResumeToken != nil || st.StartAt.T != 1700000000 || st.ResetBy.StartAt.T != 1700000000 {
				return errors.New("start time not recorded in place of the token")
			}
			return nil
		}},
		{"to a token", ResetTo{ResumeToken: token(2), AfterInvalidate: true}, func(st State) error {
			if !bytesEqual(st.ResumeToken, token(2)) || !st.AfterInvalidate || st.StartAt.T != 0 {
				return errors.New("token not set")
			}
			return nil
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.add(time.Second)
			if err := s.Reset(ctx, scope, tt.to, "alice"); err != nil {
				t.Fatal(err)
			}
			st, _ := s.Load(ctx, scope)
			if err := tt.check(st); err != nil {
				t.Error(err)
			}
			if st.ResetBy == nil || st.ResetBy.Who != "alice" || !st.ResetBy.At.Equal(clk.now()) || st.Lease != nil {
				t.Errorf("reset not recorded or lease kept: %+v", st)
			}
			if len(st.History) != i+1 {
				t.Errorf("history has %d entries, want %d", len(st.History), i+1)
			}
		})
	}
	// The capture that held the lease before the reset is fenced.
	if err := s.Save(ctx, l, Position{ResumeToken: token(3)}); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "alice") {
		t.Errorf("save after reset: %v", err)
	}
}

func TestHistoryBounded(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := 0; i < historyLimit+5; i++ {
		if err := s.Reset(ctx, "bar", ResetTo{ResumeToken: token(i % 20)}, "op"); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := s.Load(ctx, "bar")
	if len(st.History) != historyLimit {
		t.Errorf("history has %d entries, want %d", len(st.History), historyLimit)
	}
}

func TestConcurrentAcquireOneWinner(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Acquire(ctx, "bar.foo", string(rune('a'+i)), time.Minute)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrLeaseHeld):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d owners acquired the lease, want 1", won)
	}
}

func bytesEqual(a, b bson.Raw) bool { return string(a) == string(b) }

// TestRenew: a heartbeat renewal pushes the expiry to TTL from now, so the lease outlives its
// first TTL while its holder lives, and lapses one TTL after the last renewal; a renewal of a
// lease taken over (or reset) is fenced; Acquire's refusal says until when the lease is held.
func TestRenew(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	const scope = "bar.foo"
	a, err := s.Acquire(ctx, scope, "a", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 { // four renewals 20 s apart: the lease lives on past its first 30 s
		clk.add(20 * time.Second)
		if a, err = s.Renew(ctx, a); err != nil {
			t.Fatal(err)
		}
		if want := clk.now().Add(30 * time.Second); !a.ExpiresAt.Equal(want) {
			t.Fatalf("renewed lease expires %v, want %v", a.ExpiresAt, want)
		}
		var held *HeldError
		if _, err := s.Acquire(ctx, scope, "b", 30*time.Second); !errors.As(err, &held) || held.Owner != "a" || !held.ExpiresAt.Equal(a.ExpiresAt) {
			t.Fatalf("acquire while a renews: %v (%+v)", err, held)
		}
	}
	st, _ := s.Load(ctx, scope)
	if !st.Lease.ExpiresAt.Equal(a.ExpiresAt) {
		t.Errorf("stored expiry %v, renewal said %v", st.Lease.ExpiresAt, a.ExpiresAt)
	}
	// The holder dies: one TTL after its last renewal the lease lapses and b takes over.
	clk.add(30 * time.Second)
	b, err := s.Acquire(ctx, scope, "b", 30*time.Second)
	if err != nil {
		t.Fatalf("take over a lapsed lease: %v", err)
	}
	if _, err := s.Renew(ctx, a); !errors.Is(err, ErrFenced) {
		t.Errorf("stale renewal: %v, want ErrFenced", err)
	}
	if st, _ := s.Load(ctx, scope); st.Lease.Owner != "b" || !st.Lease.ExpiresAt.Equal(b.ExpiresAt) {
		t.Errorf("a stale renewal touched b's lease: %+v", st.Lease)
	}
	if err := s.Reset(ctx, scope, ResetTo{StartAt: time.Unix(1700000000, 0)}, "op"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Renew(ctx, b); !errors.Is(err, ErrFenced) {
		t.Errorf("renewal after a reset: %v, want ErrFenced", err)
	}
}
