package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/docdb-dr/docdb-dr/pkg/scope"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
)

// StartPosition is where capture must resume after a bootstrap: a point of the primary's change
// history taken before the copy read anything, so that every write the copy may have missed is
// replayed. Replaying writes the copy already saw is harmless (apply is idempotent), so an early
// position is safe and a late one loses data.
type StartPosition struct {
	// ClusterTime is the primary's operation time (startAtOperationTime); zero when the server
	// did not report one.
	ClusterTime primitive.Timestamp `bson:"clusterTime" json:"clusterTime"`
	// ResumeToken is the resume token of a change stream opened on the scope's database
	// (resumeAfter); nil when the server gave none before the first event.
	ResumeToken bson.Raw `bson:"resumeToken,omitempty" json:"resumeToken,omitempty"`
	// TakenAt is the local wall-clock time the position was taken.
	TakenAt time.Time `bson:"takenAt" json:"takenAt"`
}

// IsZero reports whether the position holds neither a cluster time nor a resume token.
func (p StartPosition) IsZero() bool {
	return p.ClusterTime.IsZero() && len(p.ResumeToken) == 0
}

// String renders the position for logs and progress output.
func (p StartPosition) String() string {
	s := "clusterTime="
	if p.ClusterTime.IsZero() {
		s += "none"
	} else {
		s += fmt.Sprintf("%d.%d (%s)", p.ClusterTime.T, p.ClusterTime.I,
			time.Unix(int64(p.ClusterTime.T), 0).UTC().Format(time.RFC3339))
	}
	if len(p.ResumeToken) > 0 {
		s += " resumeToken=" + p.ResumeToken.String()
	}
	return s
}

// TakeStartPosition reads the current position of the primary's change history for sc. It
// asks for both forms capture can start from:
//   - the operationTime the server returns for a command run in a session (MongoDB, and
//     DocumentDB clusters that report it);
//   - the resume token of a change stream opened on the scope, which a server gives
//     right away as the post-batch resume token. The stream is closed before any event is read:
//     taking the token of an event would start *after* that event and lose it.
//
// It fails when the server reports neither.
func TakeStartPosition(ctx context.Context, primary *mongo.Client, sc scope.Scope) (StartPosition, error) {
	pos := StartPosition{TakenAt: time.Now().UTC()}
	var errs []error

	sess, err := primary.StartSession()
	if err != nil {
		return StartPosition{}, fmt.Errorf("start session on the primary: %w", err)
	}
	err = mongo.WithSession(ctx, sess, func(sc mongo.SessionContext) error {
		return primary.Database("admin").RunCommand(sc, bson.D{{Key: "ping", Value: 1}}).Err()
	})
	if ot := sess.OperationTime(); err == nil && ot != nil {
		pos.ClusterTime = *ot
	} else if err != nil {
		errs = append(errs, fmt.Errorf("ping the primary: %w", err))
	}
	sess.EndSession(ctx)

	// DocumentDB only opens streams on databases or collections where change streams were enabled
	// (modifyChangeStreams): watch the scope's first collection when it lists some. A post-batch
	// token carries no collection, so it resumes a database-wide stream as well.
	var cs *mongo.ChangeStream
	if len(sc.Collections) > 0 {
		cs, err = primary.Database(sc.DB).Collection(sc.Collections[0]).Watch(ctx, mongo.Pipeline{})
	} else {
		cs, err = primary.Database(sc.DB).Watch(ctx, mongo.Pipeline{})
	}
	if err == nil {
		if tok := cs.ResumeToken(); len(tok) > 0 {
			pos.ResumeToken = append(bson.Raw(nil), tok...)
		}
		_ = cs.Close(ctx)
	} else {
		errs = append(errs, fmt.Errorf("open a change stream on %s: %w", sc.DB, err))
	}

	if pos.IsZero() {
		errs = append(errs, errors.New("the primary reported neither an operation time nor a resume token"))
		return StartPosition{}, fmt.Errorf("take the change-stream start position: %w", errors.Join(errs...))
	}
	return pos, nil
}
