#!/usr/bin/env bash
# bench/measure.sh: runs reqctx's benchmarks and Go's context benchmarks from
# already-built binaries, on this machine, in one run, and prints the report
# (main table, scaling table, RPC table, targets, timer service). Shared by
# bench/run_all.sh (binaries it just built) and bench/pack.sh's packed run.sh
# (binaries in the pack, run through the packed dynamic loader).
#
# Usage: bench/measure.sh BIN_DIR [LOADER LIB_DIR]
#   BIN_DIR holds context_bench, rpc_bench, timer_bench (reqctx, C++),
#   context.test (Go's `go test -c context`), bench.test (bench/go's cases)
#   and benchreport (bench/go/benchreport). With LOADER and LIB_DIR, the C++
#   binaries run as `LOADER --library-path LIB_DIR BINARY ...`.
# Knobs (environment), defaults keep the whole run to ~5 minutes on 2 cores:
#   BENCH_THREADS      thread counts of the parallel cases, and Go's -cpu
#                      list; this machine's CPU count is always added
#                      (1,2,4,8,16)
#   BENCH_MIN_TIME     Google Benchmark --benchmark_min_time, seconds (0.1)
#   GO_BENCHTIME       go test -benchtime (100ms)
#   BENCH_REPETITIONS  runs per case on both sides; the median is reported (3)
#   RPC_PHASE_SECONDS  rpc_bench seconds per throughput phase (3)
#   RPC_ROUNDS         rpc_bench rounds of plain/noop/by-hand/reqctx/metrics
#                      phases; medians reported (5)
#   RPC_CANCEL_TRIALS  rpc_bench 3-hop cancellation trials per API (1000)
#   BENCH_SKIP_RPC     1: skip rpc_bench and timer_bench (context tables only)
#   BENCH_OUT          directory for the raw outputs (default: a temp dir)
# Progress goes to stderr; stdout is only the report.
set -euo pipefail

readonly THREADS="${BENCH_THREADS:-1,2,4,8,16}"
readonly MIN_TIME="${BENCH_MIN_TIME:-0.1}"
readonly GO_BENCHTIME="${GO_BENCHTIME:-100ms}"
readonly REPS="${BENCH_REPETITIONS:-3}"
readonly RPC_PHASE_SECONDS="${RPC_PHASE_SECONDS:-3}"
readonly RPC_ROUNDS="${RPC_ROUNDS:-5}"
readonly RPC_CANCEL_TRIALS="${RPC_CANCEL_TRIALS:-1000}"
readonly SKIP_RPC="${BENCH_SKIP_RPC:-0}"

log() { echo "measure: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $# -eq 1 || $# -eq 3 ]] || die "usage: $0 BIN_DIR [LOADER LIB_DIR]"
BIN="$(cd "$1" && pwd)"
RUN=()  # Prefix for the C++ binaries.
if [[ $# -eq 3 ]]; then
  RUN=("$(cd "$(dirname "$2")" && pwd)/$(basename "$2")" --library-path "$(cd "$3" && pwd)")
fi
for b in context_bench context.test bench.test benchreport; do
  [[ -x "${BIN}/${b}" ]] || die "${BIN}/${b} missing or not executable"
done
if [[ "${SKIP_RPC}" != 1 ]]; then
  for b in rpc_bench timer_bench; do
    [[ -x "${BIN}/${b}" ]] || die "${BIN}/${b} missing (or set BENCH_SKIP_RPC=1)"
  done
fi
[[ "${THREADS}" =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  die "BENCH_THREADS must be a comma-separated list of counts: ${THREADS}"
# Go's -cpu list: the same counts as the C++ cases (which add the CPU count).
CPUS="$(printf '%s\n' ${THREADS//,/ } "$(nproc)" | sort -n | uniq | paste -sd, -)"

OUT="${BENCH_OUT:-$(mktemp -d -t reqctx-bench.XXXXXX)}"
mkdir -p "${OUT}"
log "raw outputs in ${OUT}; parallel cases at ${CPUS} threads"

# --- reqctx + std::stop_source -------------------------------------------------
log "running context_bench (min_time ${MIN_TIME}s x ${REPS})"
"${RUN[@]}" "${BIN}/context_bench" \
  --threads="${THREADS}" \
  --benchmark_min_time="${MIN_TIME}" \
  --benchmark_repetitions="${REPS}" \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="${OUT}/context_bench.json" \
  --benchmark_out_format=json >"${OUT}/context_bench.txt" 2>&1 || {
  log "context_bench failed; its output:"; cat "${OUT}/context_bench.txt" >&2; exit 1; }

# --- Go: all of context's benchmarks at the default -cpu, then the parallel
# cases (Go's and bench/go's) at every count. Test binaries, so no toolchain. --
go_bench() {  # go_bench OUTPUT BINARY ARGS...
  local out="$1" bin="$2"
  shift 2
  (cd "${OUT}" && "${BIN}/${bin}" -test.run=NONE -test.benchmem \
    -test.benchtime="${GO_BENCHTIME}" -test.count="${REPS}" "$@") \
    >"${OUT}/${out}" 2>&1 || {
    log "${bin} failed; its output:"; cat "${OUT}/${out}" >&2; exit 1; }
}
log "running Go's context benchmarks (benchtime ${GO_BENCHTIME} x ${REPS})"
go_bench go_context.txt context.test -test.bench=.
log "running the parallel Go cases at -cpu ${CPUS}"
go_bench go_scaling_context.txt context.test -test.cpu="${CPUS}" \
  -test.bench='^Benchmark(ContextCancelDone|WithTimeout|CommonParentCancel)$'
go_bench go_scaling_bench.txt bench.test -test.cpu="${CPUS}" -test.bench=.

# --- RPC benchmark: plain gRPC, no-op interceptors, by hand, reqctx (+ metrics), 3-hop cancel
rpc_args=()
if [[ "${SKIP_RPC}" != 1 ]]; then
  log "running rpc_bench (${RPC_ROUNDS} x 5 phases of ${RPC_PHASE_SECONDS}s, ${RPC_CANCEL_TRIALS} cancel trials per API)"
  "${RUN[@]}" "${BIN}/rpc_bench" \
    --phase_seconds="${RPC_PHASE_SECONDS}" \
    --rounds="${RPC_ROUNDS}" \
    --cancel_trials="${RPC_CANCEL_TRIALS}" \
    --json_out="${OUT}/rpc_bench.json" \
    >"${OUT}/rpc_bench.md" 2>"${OUT}/rpc_bench.log" || {
    log "rpc_bench failed; its log:"; cat "${OUT}/rpc_bench.log" >&2; exit 1; }
  rpc_args=(-rpc_md "${OUT}/rpc_bench.md" -rpc_json "${OUT}/rpc_bench.json")
fi

# --- The tables and the targets ------------------------------------------------------
"${BIN}/benchreport" -cc "${OUT}/context_bench.json" -go "${OUT}/go_context.txt" \
  -go_scaling "${OUT}/go_scaling_context.txt,${OUT}/go_scaling_bench.txt" \
  "${rpc_args[@]}"

# --- Timer service at scale: lateness and memory per deadline -------------------------
if [[ "${SKIP_RPC}" != 1 ]]; then
  log "running timer_bench (10,000 deadlines over 1 s; 1,000,000 live deadlines)"
  echo
  echo "Timer service (//bench:timer_bench): deadline lateness over 10,000 deadlines"
  echo "spread over 1 s, and memory per live deadline at 1,000,000."
  echo
  "${RUN[@]}" "${BIN}/timer_bench" | tee "${OUT}/timer_bench.txt"
fi
