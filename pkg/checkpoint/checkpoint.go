// Package checkpoint keeps capture's position in the state collection on the primary: one
// document per scope holding the resume token of the last change Kafka acknowledged, and a lease
// with a fencing counter so that only one capture runs per scope.
//
// A state document looks like
//
//	{_id: "bar.foo,bar.x", resumeToken: {...}, clusterTime: Timestamp, afterInvalidate: false,
//	 updatedAt: Date, lease: {owner, expiresAt}, fence: 7,
//	 resetBy: {who, at, startAt?}, history: [{who, at, previousToken, previousClusterTime}, ...]}
//
// Every Acquire increments fence; Save and Release only touch the document while fence still has
// the value their Acquire got. A capture that lost its lease (it stalled past the TTL and another
// took over, or an operator reset the checkpoint) can therefore never move the checkpoint again.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

var (
	// ErrLeaseHeld is returned by Acquire when another owner holds an unexpired lease (as a
	// *HeldError, which says by whom and until when).
	ErrLeaseHeld = errors.New("lease held by another capture")
	// ErrFenced is returned by Save and Release when the lease was taken over (or reset) since
	// it was acquired.
	ErrFenced = errors.New("lease lost: the checkpoint was taken over")
)

// HeldError is Acquire's error when another owner holds the lease. It matches ErrLeaseHeld.
type HeldError struct {
	Scope     string
	Owner     string    // empty when the lease was released while acquiring (retry at once)
	ExpiresAt time.Time // when the holder's lease lapses unless renewed; zero when Owner is empty
}

func (e *HeldError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("%v on %s: it was released while acquiring; retry", ErrLeaseHeld, e.Scope)
	}
	return fmt.Sprintf("%v on %s: owner %q until %s", ErrLeaseHeld, e.Scope, e.Owner, e.ExpiresAt.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrLeaseHeld }

// historyLimit bounds the reset history kept in the state document.
const historyLimit = 20

// Position is where capture resumes.
type Position struct {
	ResumeToken bson.Raw            `bson:"resumeToken,omitempty"`
	ClusterTime primitive.Timestamp `bson:"clusterTime,omitempty"`
	// AfterInvalidate says ResumeToken is an invalidate event's: the next stream must be opened
	// with startAfter (resumeAfter an invalidate is refused by the server).
	AfterInvalidate bool `bson:"afterInvalidate,omitempty"`
}

// LeaseInfo is the lease as stored.
type LeaseInfo struct {
	Owner     string    `bson:"owner"`
	ExpiresAt time.Time `bson:"expiresAt"`
}

// ResetInfo records who last moved the checkpoint by hand, and to where.
type ResetInfo struct {
	Who     string              `bson:"who"`
	At      time.Time           `bson:"at"`
	StartAt primitive.Timestamp `bson:"startAt,omitempty"` // reset to a time rather than a token
}

// HistoryEntry is one reset, with the position it replaced.
type HistoryEntry struct {
	Who                 string              `bson:"who"`
	At                  time.Time           `bson:"at"`
	PreviousToken       bson.Raw            `bson:"previousToken,omitempty"`
	PreviousClusterTime primitive.Timestamp `bson:"previousClusterTime,omitempty"`
}

// State is a scope's state document.
type State struct {
	Scope     string `bson:"_id"`
	Position  `bson:",inline"`
	StartAt   primitive.Timestamp `bson:"startAt,omitempty"` // set by Reset to a time: start there when there is no token
	UpdatedAt time.Time           `bson:"updatedAt,omitempty"`
	Lease     *LeaseInfo          `bson:"lease,omitempty"`
	Fence     int64               `bson:"fence"`
	ResetBy   *ResetInfo          `bson:"resetBy,omitempty"`
	History   []HistoryEntry      `bson:"history,omitempty"`
	Exists    bool                `bson:"-"` // false when the scope has no state document yet
}

// Lease is what Acquire hands out: the right to move one scope's checkpoint while Fence is current.
type Lease struct {
	Scope     string
	Owner     string
	Fence     int64
	TTL       time.Duration
	ExpiresAt time.Time
}

// Store reads and writes state documents in one collection.
type Store struct {
	coll *mongo.Collection
	now  func() time.Time
}

// New returns a Store over coll. now is the clock (time.Now when nil); leases compare times from
// this clock, so every capture of a scope should use a synchronised clock (Lambda's is).
func New(coll *mongo.Collection, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{coll: coll, now: now}
}

// Namespace is the state collection, "db.collection", for messages.
func (s *Store) Namespace() string { return s.coll.Database().Name() + "." + s.coll.Name() }

// List returns every scope's state document, by scope id.
func (s *Store) List(ctx context.Context) ([]State, error) {
	cur, err := s.coll.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("list checkpoints in %s: %w", s.Namespace(), err)
	}
	var out []State
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("list checkpoints in %s: %w", s.Namespace(), err)
	}
	for i := range out {
		out[i].Exists = true
	}
	return out, nil
}

// Load returns the scope's state; State.Exists is false when there is none yet.
func (s *Store) Load(ctx context.Context, scope string) (State, error) {
	var st State
	err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: scope}}).Decode(&st)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return State{Scope: scope}, nil
	case err != nil:
		return State{}, fmt.Errorf("load checkpoint of %s: %w", scope, err)
	}
	st.Exists = true
	return st, nil
}

// Acquire takes the scope's lease for owner for ttl when it is free, expired or already owner's,
// creating the state document on first use, and increments the fencing counter. When another
// owner holds it, the error wraps ErrLeaseHeld and names the holder and expiry.
func (s *Store) Acquire(ctx context.Context, scope, owner string, ttl time.Duration) (Lease, error) {
	now := s.now().UTC().Truncate(time.Millisecond) // BSON dates have millisecond precision
	expires := now.Add(ttl)
	filter := bson.D{
		{Key: "_id", Value: scope},
		{Key: "$or", Value: bson.A{
			bson.D{{Key: "lease", Value: bson.D{{Key: "$exists", Value: false}}}},
			bson.D{{Key: "lease", Value: nil}},
			bson.D{{Key: "lease.expiresAt", Value: bson.D{{Key: "$lte", Value: now}}}},
			bson.D{{Key: "lease.owner", Value: owner}},
		}},
	}
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: "lease", Value: LeaseInfo{Owner: owner, ExpiresAt: expires}}}},
		{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
	}
	opts := options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)
	var st State
	err := s.coll.FindOneAndUpdate(ctx, filter, update, opts).Decode(&st)
	if mongo.IsDuplicateKeyError(err) {
		// The document exists and the filter did not match: someone else holds the lease.
		held, lerr := s.Load(ctx, scope)
		if lerr != nil {
			return Lease{}, fmt.Errorf("%w on %s (and reading the holder failed: %v)", ErrLeaseHeld, scope, lerr)
		}
		if held.Lease == nil {
			return Lease{}, &HeldError{Scope: scope}
		}
		return Lease{}, &HeldError{Scope: scope, Owner: held.Lease.Owner, ExpiresAt: held.Lease.ExpiresAt}
	}
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease on %s: %w", scope, err)
	}
	return Lease{Scope: scope, Owner: owner, Fence: st.Fence, TTL: ttl, ExpiresAt: expires}, nil
}

// Save moves the checkpoint to pos and extends the lease, only while the lease is current
// (else ErrFenced).
func (s *Store) Save(ctx context.Context, lease Lease, pos Position) error {
	if len(pos.ResumeToken) == 0 {
		return fmt.Errorf("save checkpoint of %s: empty resume token", lease.Scope)
	}
	now := s.now().UTC()
	set := bson.D{
		{Key: "resumeToken", Value: pos.ResumeToken},
		{Key: "clusterTime", Value: pos.ClusterTime},
		{Key: "afterInvalidate", Value: pos.AfterInvalidate},
		{Key: "updatedAt", Value: now},
		{Key: "lease.expiresAt", Value: now.Add(lease.TTL)},
	}
	update := bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: bson.D{{Key: "startAt", Value: ""}}}}
	return s.fenced(ctx, "save checkpoint", lease, update)
}

// Renew extends the lease to TTL from now, only while it is current (else ErrFenced), and
// returns it with its new expiry. A capture renews its lease on a heartbeat for as long as it
// runs, so that a dead holder blocks the scope for at most one TTL.
func (s *Store) Renew(ctx context.Context, lease Lease) (Lease, error) {
	now := s.now().UTC().Truncate(time.Millisecond)
	expires := now.Add(lease.TTL)
	update := bson.D{{Key: "$set", Value: bson.D{{Key: "lease.expiresAt", Value: expires}}}}
	if err := s.fenced(ctx, "renew lease", lease, update); err != nil {
		return lease, err
	}
	lease.ExpiresAt = expires
	return lease, nil
}

// Release frees the lease so that the next capture need not wait for it to expire.
func (s *Store) Release(ctx context.Context, lease Lease) error {
	return s.fenced(ctx, "release lease", lease, bson.D{{Key: "$unset", Value: bson.D{{Key: "lease", Value: ""}}}})
}

func (s *Store) fenced(ctx context.Context, what string, lease Lease, update bson.D) error {
	filter := bson.D{{Key: "_id", Value: lease.Scope}, {Key: "fence", Value: lease.Fence}}
	res, err := s.coll.UpdateOne(ctx, filter, update)
	if err != nil {
		return fmt.Errorf("%s of %s: %w", what, lease.Scope, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("%s of %s: %w (fence %d is stale%s)", what, lease.Scope, ErrFenced, lease.Fence, s.holder(ctx, lease.Scope))
	}
	return nil
}

// holder describes the current lease holder for an error message, best effort.
func (s *Store) holder(ctx context.Context, scope string) string {
	st, err := s.Load(ctx, scope)
	switch {
	case err != nil || !st.Exists:
		return ""
	case st.Lease != nil:
		return fmt.Sprintf("; now fence %d held by %q until %s", st.Fence, st.Lease.Owner, st.Lease.ExpiresAt.UTC().Format(time.RFC3339))
	case st.ResetBy != nil:
		return fmt.Sprintf("; now fence %d, reset by %q at %s", st.Fence, st.ResetBy.Who, st.ResetBy.At.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("; now fence %d", st.Fence)
}

// ResetTo is where an operator moves a checkpoint: a resume token, or a time to start at.
type ResetTo struct {
	ResumeToken     bson.Raw
	AfterInvalidate bool
	StartAt         time.Time // used when ResumeToken is empty
}

// Reset moves the scope's checkpoint by hand (the operator tool, after bootstrap or history
// loss), recording who and when and the position it replaced. It also fences and frees the lease:
// a capture running now cannot overwrite the reset.
func (s *Store) Reset(ctx context.Context, scope string, to ResetTo, who string) error {
	if who == "" {
		return errors.New("reset checkpoint: say who resets it")
	}
	if len(to.ResumeToken) == 0 && to.StartAt.IsZero() {
		return errors.New("reset checkpoint: give a resume token or a start time")
	}
	prev, err := s.Load(ctx, scope)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	reset := ResetInfo{Who: who, At: now}
	set := bson.D{{Key: "updatedAt", Value: now}}
	unset := bson.D{{Key: "lease", Value: ""}}
	if len(to.ResumeToken) > 0 {
		set = append(set, bson.E{Key: "resumeToken", Value: to.ResumeToken}, bson.E{Key: "afterInvalidate", Value: to.AfterInvalidate})
		unset = append(unset, bson.E{Key: "startAt", Value: ""}, bson.E{Key: "clusterTime", Value: ""})
	} else {
		reset.StartAt = primitive.Timestamp{T: uint32(to.StartAt.Unix())}
		set = append(set, bson.E{Key: "startAt", Value: reset.StartAt})
		unset = append(unset, bson.E{Key: "resumeToken", Value: ""}, bson.E{Key: "clusterTime", Value: ""}, bson.E{Key: "afterInvalidate", Value: ""})
	}
	set = append(set, bson.E{Key: "resetBy", Value: reset})
	entry := HistoryEntry{Who: who, At: now, PreviousToken: prev.ResumeToken, PreviousClusterTime: prev.ClusterTime}
	update := bson.D{
		{Key: "$set", Value: set},
		{Key: "$unset", Value: unset},
		{Key: "$inc", Value: bson.D{{Key: "fence", Value: int64(1)}}},
		{Key: "$push", Value: bson.D{{Key: "history", Value: bson.D{
			{Key: "$each", Value: bson.A{entry}},
			{Key: "$slice", Value: -historyLimit},
		}}}},
	}
	_, err = s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: scope}}, update, options.Update().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("reset checkpoint of %s: %w", scope, err)
	}
	return nil
}
