package apply

import (
	"errors"
	"fmt"
	"strings"

	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
)

// Action says what apply does with one kind of destructive operation.
type Action struct {
	Apply   bool // perform it on DR
	Archive bool // write it (with the DR before-image, for deletes) to the archive
}

// The actions a policy can name.
var (
	ActionArchive         = Action{Archive: true}
	ActionApply           = Action{Apply: true}
	ActionApplyAndArchive = Action{Apply: true, Archive: true}
)

// String returns the action as written in a policy: "archive", "apply" or "apply+archive".
func (a Action) String() string {
	switch a {
	case ActionArchive:
		return "archive"
	case ActionApply:
		return "apply"
	case ActionApplyAndArchive:
		return "apply+archive"
	}
	return "none"
}

// Policy is the action for each destructive operation type (INTERCEPT_POLICY). Inserts, updates
// and replaces are always applied and are not part of a policy.
type Policy struct {
	Delete       Action
	Drop         Action
	Rename       Action
	DropDatabase Action
}

// DefaultPolicy intercepts everything destructive: DR only grows.
var DefaultPolicy = Policy{Delete: ActionArchive, Drop: ActionArchive, Rename: ActionArchive, DropDatabase: ActionArchive}

// For returns the action for op. Operations a policy does not cover are applied.
func (p Policy) For(op changeevent.OperationType) Action {
	switch op {
	case changeevent.Delete:
		return p.Delete
	case changeevent.Drop:
		return p.Drop
	case changeevent.Rename:
		return p.Rename
	case changeevent.DropDatabase:
		return p.DropDatabase
	}
	return ActionApply
}

// String renders the policy in the form ParsePolicy reads.
func (p Policy) String() string {
	return fmt.Sprintf("delete=%s,drop=%s,rename=%s,dropDatabase=%s", p.Delete, p.Drop, p.Rename, p.DropDatabase)
}

// ParsePolicy reads a policy of comma-separated op=action items, e.g.
// "delete=apply+archive,drop=archive". Operations not named keep DefaultPolicy's action; the
// empty string is DefaultPolicy. Every problem is reported, joined in one error.
func ParsePolicy(s string) (Policy, error) {
	p := DefaultPolicy
	var errs []error
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		op, act, ok := strings.Cut(item, "=")
		op, act = strings.TrimSpace(op), strings.TrimSpace(act)
		if !ok {
			errs = append(errs, fmt.Errorf("policy item %q is not op=action", item))
			continue
		}
		if seen[op] {
			errs = append(errs, fmt.Errorf("policy names %q twice", op))
			continue
		}
		seen[op] = true
		a, err := parseAction(act)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy item %q: %w", item, err))
			continue
		}
		switch changeevent.OperationType(op) {
		case changeevent.Delete:
			p.Delete = a
		case changeevent.Drop:
			p.Drop = a
		case changeevent.Rename:
			p.Rename = a
		case changeevent.DropDatabase:
			p.DropDatabase = a
		default:
			errs = append(errs, fmt.Errorf("policy item %q: operation must be delete, drop, rename or dropDatabase", item))
		}
	}
	if len(errs) > 0 {
		return Policy{}, errors.Join(errs...)
	}
	return p, nil
}

func parseAction(s string) (Action, error) {
	switch s {
	case "archive":
		return ActionArchive, nil
	case "apply":
		return ActionApply, nil
	case "apply+archive", "archive+apply":
		return ActionApplyAndArchive, nil
	}
	return Action{}, fmt.Errorf("action %q must be archive, apply or apply+archive", s)
}
