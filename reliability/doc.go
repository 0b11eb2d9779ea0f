// Package reliability holds docdb-dr's reliability and security tests. It has no production code:
// everything is in the _test.go files, run by `go test ./reliability/` (part of `make test`).
//
// What is here, file by file:
//
//   - stack_test.go: the embedded stack these tests run on — the primary and DR Mongo-wire
//     servers (internal/devstack/mongoserver, with their fault hooks DropConnections and
//     SetUnavailable), kfake behind a TCP proxy that can be slowed down or cut off
//     (proxy_test.go), and gofakes3 behind an endpoint that can be made unreachable.
//   - harness_test.go: capture and apply built only by their shipped constructors
//     (capture.NewFunction, apply.NewFunction) from environment variables (real driver, real
//     Kafka protocol, real S3 API), or capture as the real bootstrap process behind
//     internal/lambdarun, plus the local event source mapping; decorators_test.go holds the
//     wrappers that crash or stall them at a chosen boundary (installed through Env.Wrap,
//     WrapDR and WrapArchive, routed per invocation through its context), without touching
//     product code.
//   - kill_test.go: kill -9 of the real capture process at random points while writes go on.
//   - ledger_test.go: after every fault, accounts for every change event of the watched scope
//     (applied to DR, archived, or dead-lettered; lost must be 0) and compares DR with the
//     primary.
//   - faults_*_test.go: one test per fault; report_test.go turns their measurements into the
//     table of docs/reliability.md and checks that the document matches what was measured
//     (`go test ./reliability/ -run . -update`, or RELIABILITY_REPORT=1, rewrites it).
//   - soak_test.go: sustained capture and apply, with heap and goroutine counts that must stay
//     flat (SOAK_DURATION=10m for the long run).
//   - security_test.go: credentials never reach a log line, an error or a metric; TLS is
//     required for non-loopback clusters. govulncheck.sh runs govulncheck at a pinned version.
package reliability
