#!/usr/bin/env bash
# bench/run_all.sh: builds reqctx's benchmarks optimized and the Go side
# (Go's own context benchmarks and bench/go's cases, local toolchain, offline),
# runs them all on this machine in one run (bench/measure.sh), and prints:
# one markdown table joining the cases by name; the scaling table of the
# parallel cases at 1, 2, 4, 8 and 16 threads (Go: -cpu N) with reqctx, Go and
# std::stop_source side by side; //bench:rpc_bench's table (plain gRPC, gRPC
# with no-op interceptors, by hand, reqctx interceptors (+ metrics): QPS, latency, CPU and
# voluntary/involuntary context switches per RPC; 3-hop cancellation); the
# issues' targets checked against this run; //bench:timer_bench's tables.
#
# Usage: bench/run_all.sh            (from anywhere in the repository)
# Knobs (environment): see bench/measure.sh (BENCH_THREADS, BENCH_MIN_TIME,
# GO_BENCHTIME, BENCH_REPETITIONS, RPC_PHASE_SECONDS, RPC_ROUNDS,
# RPC_CANCEL_TRIALS, BENCH_SKIP_RPC, BENCH_OUT); the defaults keep the whole
# run to ~5 minutes on 2 cores.
# Progress goes to stderr; stdout is only the report (paste it into docs/performance.md).
# To measure on another machine with nothing installed there: bench/pack.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
log() { echo "run_all: $*" >&2; }
for tool in bazel go; do
  command -v "${tool}" >/dev/null ||
    { log "${tool} not found (Debian: bazel-bootstrap, golang-go)"; exit 1; }
done

BIN="$(mktemp -d -t reqctx-bin.XXXXXX)"
trap 'rm -rf "${BIN}"' EXIT

targets=(//bench:context_bench //bench:rpc_bench //bench:timer_bench //bench:watcher_bench)
log "building ${targets[*]} with -c opt"
bazel build -c opt "${targets[@]}" >&2
BAZEL_BIN="$(bazel info -c opt bazel-bin 2>/dev/null)"
for t in "${targets[@]}"; do
  ln -s "${BAZEL_BIN}/bench/${t#//bench:}" "${BIN}/"
done
log "building the Go side ($(go version | cut -d' ' -f3))"
bench/build_go.sh "${BIN}" >&2

bench/measure.sh "${BIN}"

# --- Sync cancel watcher (issue 10): poll pass at 10,000 in-flight calls -------------
log "running //bench:watcher_bench (poll pass at 10,000 watched sync calls)"
echo
echo "Sync cancel watcher (//bench:watcher_bench): one poll pass at 10,000"
echo "in-flight sync calls, a pass dropping 10,000 finished ones, and the"
echo "previous removal (std::find inside std::partition) for comparison."
echo
"${BIN}/watcher_bench" --benchmark_repetitions="${BENCH_REPETITIONS:-3}" \
  --benchmark_report_aggregates_only=true 2>/dev/null |
  grep -E '^(Benchmark|BM_.*_median)'
