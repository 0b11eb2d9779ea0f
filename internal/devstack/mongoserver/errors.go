package mongoserver

import (
	"errors"
	"fmt"
)

// MongoDB error codes this server returns. Names are the codeName strings
// drivers and tools match on.
const (
	codeInternalError           = 1
	codeBadValue                = 2
	codeFailedToParse           = 9
	codeUnauthorized            = 13
	codeTypeMismatch            = 14
	codeOverflow                = 15
	codeAuthenticationFailed    = 18
	codeIllegalOperation        = 20
	codeNamespaceNotFound       = 26
	codeCursorNotFound          = 43
	codeNamespaceExists         = 48
	codeMaxTimeMSExpired        = 50
	codeDollarPrefixedFieldName = 52
	codeInvalidDBRef            = 55
	codeDottedFieldName         = 57
	codeCommandNotFound         = 59
	codeImmutableField          = 66
	codeInvalidOptions          = 72
	codeInvalidNamespace        = 73
	codeCappedPositionLost      = 136
	codeInvalidResumeToken      = 260
	codeChangeStreamFatalError  = 280
	codeChangeStreamHistoryLost = 286
	codeLocation40324           = 40324 // unrecognised pipeline stage
	codeDuplicateKey            = 11000
	codeBSONObjectTooLarge      = 10334
)

var codeNames = map[int32]string{
	codeInternalError:           "InternalError",
	codeBadValue:                "BadValue",
	codeFailedToParse:           "FailedToParse",
	codeUnauthorized:            "Unauthorized",
	codeTypeMismatch:            "TypeMismatch",
	codeOverflow:                "Overflow",
	codeAuthenticationFailed:    "AuthenticationFailed",
	codeIllegalOperation:        "IllegalOperation",
	codeNamespaceNotFound:       "NamespaceNotFound",
	codeCursorNotFound:          "CursorNotFound",
	codeNamespaceExists:         "NamespaceExists",
	codeMaxTimeMSExpired:        "MaxTimeMSExpired",
	codeDollarPrefixedFieldName: "DollarPrefixedFieldName",
	codeInvalidDBRef:            "InvalidDBRef",
	codeDottedFieldName:         "DottedFieldName",
	codeCommandNotFound:         "CommandNotFound",
	codeImmutableField:          "ImmutableField",
	codeInvalidOptions:          "InvalidOptions",
	codeInvalidNamespace:        "InvalidNamespace",
	codeCappedPositionLost:      "CappedPositionLost",
	codeInvalidResumeToken:      "InvalidResumeToken",
	codeChangeStreamFatalError:  "ChangeStreamFatalError",
	codeChangeStreamHistoryLost: "ChangeStreamHistoryLost",
	codeLocation40324:           "Location40324",
	codeDuplicateKey:            "DuplicateKey",
	codeBSONObjectTooLarge:      "BSONObjectTooLarge",
}

// cmdError is a command failure as MongoDB reports it: {ok: 0, errmsg, code,
// codeName}. Handlers return it (possibly wrapped); anything else becomes an
// InternalError.
type cmdError struct {
	Code int32
	Msg  string
}

func (e *cmdError) Error() string { return fmt.Sprintf("%s (%d): %s", e.codeName(), e.Code, e.Msg) }

func (e *cmdError) codeName() string {
	if n, ok := codeNames[e.Code]; ok {
		return n
	}
	return fmt.Sprintf("Location%d", e.Code)
}

// errf builds a cmdError with a formatted message.
func errf(code int32, format string, args ...interface{}) *cmdError {
	return &cmdError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// asCmdError finds the cmdError in err's chain, or wraps err as an
// InternalError (or BadValue for errors from query/update evaluation).
func asCmdError(err error, fallback int32) *cmdError {
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce
	}
	return &cmdError{Code: fallback, Msg: err.Error()}
}
