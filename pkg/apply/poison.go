package apply

import (
	"errors"
	"fmt"
	"strings"
)

// poison is the reason a record cannot be used. Poison records are dead-lettered and the batch
// goes on; every other error fails the batch.
type poison struct{ reason string }

func (p *poison) Error() string { return p.reason }

func poisoned(format string, args ...any) error { return &poison{reason: fmt.Sprintf(format, args...)} }

// Server error codes of a write that can never succeed, however often it is retried: the write
// itself is refused, not the moment. Every other write error (a network error, a primary stepping
// down, a write conflict, a timeout, a duplicate _id from a concurrent upsert) is transient: the
// batch fails and is redelivered.
var permanentCodes = map[int]string{
	2:     "BadValue",
	14:    "TypeMismatch",
	28:    "PathNotViable",
	40:    "ConflictingUpdateOperators",
	52:    "DollarPrefixedFieldName",
	55:    "InvalidDBRef",
	56:    "EmptyFieldName",
	57:    "DottedFieldName",
	66:    "ImmutableField",
	10334: "BSONObjectTooLarge",
	17419: "document too large after update",
	17420: "document too large",
}

// permanentWriteError reports whether a DR write error can never succeed: a *WriteError with a
// permanent code, an invalid field name ("not valid for storage", whatever the code), or a
// duplicate key on a unique index other than _id's.
func permanentWriteError(err error) (*WriteError, bool) {
	var we *WriteError
	if !errors.As(err, &we) {
		return nil, false
	}
	if _, ok := permanentCodes[we.Code]; ok {
		return we, true
	}
	if strings.Contains(we.Message, "not valid for storage") {
		return we, true
	}
	if we.Code == 11000 || we.Code == 11001 {
		// A duplicate _id is a concurrent upsert of the same document (retry); a duplicate on
		// another unique index is this document against another one (for ever).
		return we, !strings.Contains(we.Message, "index: _id_ ")
	}
	return we, false
}
