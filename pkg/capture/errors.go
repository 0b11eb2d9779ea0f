package capture

import (
	"errors"
	"fmt"
	"strings"

	"github.com/docdb-dr/docdb-dr/pkg/scope"
	"go.mongodb.org/mongo-driver/mongo"
)

// Server error codes that mean the resume point is gone.
const (
	codeChangeStreamHistoryLost = 286 // MongoDB
	codeCappedPositionLost      = 136 // DocumentDB (and old MongoDB)
)

// ErrHistoryLost means the saved resume point is older than the change stream history the
// cluster keeps: changes were lost to DR. Capture never skips ahead by itself.
var ErrHistoryLost = errors.New("change stream history lost")

// ErrStreamsNotEnabled means DocumentDB change streams are not enabled for the scope.
var ErrStreamsNotEnabled = errors.New("change streams are not enabled")

// classify turns a change stream error into an actionable one when it is history loss or
// streams not being enabled, and returns other errors wrapped as they are.
func classify(err error, sc scope.Scope, from string) error {
	if err == nil {
		return nil
	}
	msg := strings.ToLower(err.Error())
	code := serverCode(err)
	switch {
	case strings.Contains(msg, "modifychangestreams") || strings.Contains(msg, "not enabled"):
		return fmt.Errorf("%w for %s: run %s on the primary, then invoke capture again (server said: %v)",
			ErrStreamsNotEnabled, sc, strings.Join(sc.EnableCommands(), " and "), err)
	case code == codeChangeStreamHistoryLost || code == codeCappedPositionLost ||
		strings.Contains(msg, "resume point may no longer be in the oplog") || strings.Contains(msg, "history lost") ||
		strings.Contains(msg, "capped position"):
		return fmt.Errorf("%w for %s: the checkpoint (%s) is older than the cluster's change stream retention, so changes "+
			"between it and now are gone from the stream. The checkpoint was left unchanged. Re-seed DR with `docdbdr bootstrap` "+
			"(copies the scope, then resets the checkpoint), or accept the gap with `docdbdr reset-checkpoint` "+
			"(server said: %v)", ErrHistoryLost, sc, from, err)
	}
	return fmt.Errorf("change stream on %s: %w", sc, err)
}

// serverCode extracts the server error code, 0 when there is none.
func serverCode(err error) int {
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, c := range []int{codeChangeStreamHistoryLost, codeCappedPositionLost} {
			if se.HasErrorCode(c) {
				return c
			}
		}
	}
	return 0
}
