#!/usr/bin/env bash
# bench/build_go.sh DEST: builds the Go side of the benchmarks into DEST with
# the local Go toolchain, offline, static (CGO_ENABLED=0), with a throwaway
# build cache:
#   context.test  Go's own context benchmarks (`go test -c context`)
#   bench.test    bench/go's cases (ServerShaped, CheckCanceledParallel)
#   benchreport   the report that joins all outputs (bench/go/benchreport)
# Used by bench/run_all.sh and bench/pack.sh.
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 DEST" >&2; exit 2; }
command -v go >/dev/null || { echo "build_go: go not found (Debian: golang-go)" >&2; exit 1; }
mkdir -p "$1"
DEST="$(cd "$1" && pwd)"
GO_TMP="$(mktemp -d -t reqctx-go.XXXXXX)"
trap 'chmod -R u+w "${GO_TMP}" 2>/dev/null; rm -rf "${GO_TMP}"' EXIT
go_offline() {
  env GOCACHE="${GO_TMP}/cache" GOPATH="${GO_TMP}/gopath" GOTMPDIR="${GO_TMP}" \
    GOFLAGS= GOPROXY=off GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 go "$@"
}
# Outside any module, `context` is the standard library's.
(cd "${GO_TMP}" && go_offline test -c -o "${DEST}/context.test" context)
cd "$(dirname "$0")/go"
go_offline test -c -o "${DEST}/bench.test" .
go_offline test -count=1 ./benchreport >&2  # The report's parsers, checked.
go_offline build -o "${DEST}/benchreport" ./benchreport
