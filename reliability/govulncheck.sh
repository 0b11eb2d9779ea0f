#!/bin/sh
# govulncheck.sh — scan docdb-dr and its dependencies for known vulnerabilities with govulncheck,
# installed at a pinned version.
#
#   sh reliability/govulncheck.sh
#
# Exit status: 0 when no vulnerability affects the code (or, with a line starting
# "SKIPPED: vulnerability database unreachable", when the database cannot be reached at all);
# non-zero when govulncheck finds a vulnerability, fails, or the database answers with an error.
# GOVULNDB overrides the database (default https://vuln.go.dev); a file:///dir URL reads a
# local copy in the database's layout (dir/index/db.json, dir/index/modules.json, dir/ID/*.json).
set -eu

# v1.9.0 is the newest release the module proxy serves; it needs Go >= 1.26 (go.mod's version).
VERSION=v1.9.0
DB=${GOVULNDB:-https://vuln.go.dev}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# Can the database be reached? Only "cannot resolve, cannot connect, timed out" counts as
# unreachable; an HTTP error from a reachable database is a failure, not a skip.
probe() {
	if command -v curl >/dev/null 2>&1; then
		curl -sS --max-time 20 -o /dev/null -w '%{http_code}' "$DB/index/db.json"
	else
		echo "govulncheck.sh needs curl" >&2
		return 2
	fi
}
case $DB in
file://*)
	# A local copy: nothing to reach, but it must be there.
	if [ ! -f "${DB#file://}/index/db.json" ]; then
		echo "govulncheck.sh: $DB has no index/db.json" >&2
		exit 1
	fi
	code=200
	;;
*)
	errfile=$(mktemp)
	set +e
	code=$(probe 2>"$errfile")
	rc=$?
	set -e
	why=$(cat "$errfile")
	rm -f "$errfile"
	case $rc in
	0) ;;
	5 | 6 | 7 | 28 | 35 | 56)
		# 5/6: proxy or host not resolved, 7: no connection, 28: timeout, 35/56: TLS or connection reset
		echo "SKIPPED: vulnerability database unreachable ($DB: curl exit $rc: $why); govulncheck $VERSION was not run"
		exit 0
		;;
	*)
		echo "govulncheck.sh: cannot probe $DB (curl exit $rc): $why" >&2
		exit 1
		;;
	esac
	;;
esac
if [ "$code" != "200" ]; then
	echo "govulncheck.sh: $DB/index/db.json answered HTTP $code" >&2
	exit 1
fi

# Install the pinned version into a cache directory (not the user's GOBIN), then scan every
# package of the module, test files included.
BIN=${XDG_CACHE_HOME:-$HOME/.cache}/docdb-dr/govulncheck-$VERSION
if [ ! -x "$BIN/govulncheck" ]; then
	mkdir -p "$BIN"
	GOBIN=$BIN go install "golang.org/x/vuln/cmd/govulncheck@$VERSION"
fi
cd "$ROOT"
echo "govulncheck $VERSION against $DB"
"$BIN/govulncheck" -db "$DB" -test ./...
