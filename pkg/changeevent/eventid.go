package changeevent

import (
	"crypto/sha256"
	"encoding/hex"
)

// EventID identifies the event across every copy of it: the lowercase hex of the first 16 bytes
// of the SHA-256 of its resume token's BSON bytes. Capture republishing its tail after a crash,
// a redelivered batch and the barrier copies of a collection event all carry the same resume
// token, so they share one EventID; two different events never share a resume token. The
// archive (one line per intercepted event) and apply's ledger are keyed by it.
func (e *Event) EventID() string {
	sum := sha256.Sum256(e.ResumeToken)
	return hex.EncodeToString(sum[:16])
}
