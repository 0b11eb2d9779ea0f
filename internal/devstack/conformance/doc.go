// Package conformance is a test-only suite that checks a MongoDB-wire server against the
// semantics documented in the MongoDB manual and the driver specifications.
//
// The tests talk to the server only through the official Go driver (and, for a few
// protocol-robustness cases, through a raw TCP connection), so the very same suite runs
// against:
//
//   - the embedded server in internal/devstack/mongoserver (the default: one is started per suite,
//     plus dedicated ones for cases that need special server options), or
//   - a real replica-set primary, when DOCDBDR_CONFORMANCE_URI is set
//     (for example mongodb://localhost:27017/?replicaSet=rs0). Cases that need server
//     options a real deployment cannot be given (a tiny oplog, DocumentDB mode) are skipped
//     with the reason. DOCDBDR_CONFORMANCE_DOCUMENTDB_URI may point at an Amazon DocumentDB
//     cluster for the DocumentDB-specific cases.
//
// Every expectation in this package is taken from the MongoDB manual, the driver
// specifications or the Amazon DocumentDB developer guide — never from what the embedded
// server happens to do. Each test names its own database, so tests stay independent.
package conformance
