package main

import (
	"context"
	"fmt"
	"strings"

	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

// usageError is a refusal of the operator's input (exit status 2, like a bad flag) that says
// why; run prints the message.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Is makes errors.Is(err, errUsage) true.
func (e *usageError) Is(target error) bool { return target == errUsage }

func refusef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// refuseMissing refuses a scope that names a database or collection the cluster does not hold
// (a typo would otherwise verify, copy or reset nothing and report success). cluster names the
// cluster for the message ("the primary", "DR").
func refuseMissing(ctx context.Context, client *mongo.Client, cluster string, sc scope.Scope) error {
	missing, err := sc.Missing(ctx, client)
	if err != nil {
		return fmt.Errorf("check that %s exists in %s: %w", sc, cluster, err)
	}
	if len(missing) > 0 {
		return refusef("%s: no %s in %s (a typo? check --db and --collections, or WATCH_DB and WATCH_COLLECTIONS)",
			sc, strings.Join(missing, ", no "), cluster)
	}
	return nil
}
