#!/bin/sh
# The version history's cost (docs/apply.md#what-the-history-costs): BenchmarkHistory10k with
# the history off and on, interleaved (off, on, off, on, ...) for ROUNDS rounds, each case a
# fresh process on the same binary. Prints the raw lines; summarise with min/median/max.
set -eu
ROUNDS=${ROUNDS:-3}
cd "$(dirname "$0")/.."
go test -c -o /tmp/apply-history.test ./pkg/apply
echo "commit $(git rev-parse --short HEAD), $(nproc) CPUs, load: $(uptime | sed 's/.*load average: //')"
for r in $(seq "$ROUNDS"); do
	for kind in updates replaces; do
		for h in false true; do
			/tmp/apply-history.test -test.run x -test.bench "History10k/$kind/history=$h\$" -test.benchtime 3x | grep '^Benchmark'
		done
	done
done
echo "load after: $(uptime | sed 's/.*load average: //')"

# The time to restore 100,000 documents (BenchmarkRestoreAsOf100k): dry run, in place, and the
# raw replaces of the same documents, interleaved.
if [ "${RESTORE:-1}" = 1 ]; then
	go test -c -o /tmp/restore-history.test ./pkg/restore
	for r in $(seq "$ROUNDS"); do
		for c in dryRun inPlace rawReplaces; do
			/tmp/restore-history.test -test.run x -test.bench "RestoreAsOf100k/$c\$" -test.benchtime 1x | grep '^Benchmark'
		done
	done
	echo "load after: $(uptime | sed 's/.*load average: //')"
fi
