#!/usr/bin/env bash
# bench/rpc_instructions.sh: what an intercepted unary RPC costs, in
# instructions and allocations, counted instead of timed, so the figure does
# not move with the machine's load (issue 20).
#
# Runs //bench:rpc_bench's unary Echo (-c opt; one caller thread, blocking
# stub, sync-API server, minimal handler; client and server in ONE process,
# so every figure counts both sides of the call, plus gRPC's own threads)
# under valgrind's callgrind, once per mode and run: --profile_warmup_calls
# unmeasured calls, then --profile_calls measured ones, the measured loop
# alone wrapped in callgrind's START/STOP_INSTRUMENTATION (--instr-atstart=no;
# callgrind's --fair-sched=yes, which makes the thread interleaving, and so
# the count, repeatable). Instructions per RPC = callgrind's total over the
# measured loop / calls; allocations per RPC = rpc_bench's counting operator
# new over the same loop / calls (C++ allocations of every thread; gRPC
# core's own gpr_malloc calls are not operator new and are not counted).
# Lock spinning under contention only ever adds instructions, so each mode's
# figure is its least over RUNS runs.
#
# Modes: plain (no interceptors), noop (gRPC interceptors that only
# Proceed(): gRPC's own cost of having interceptors), by_hand (plain gRPC,
# deadline and traceparent set and parsed by hand: the least any propagation
# costs), reqctx (reqctx's interceptors, NewClientContext, FromServerContext),
# metrics (reqctx with EnableRpcMetrics).
#
# Usage: bench/rpc_instructions.sh [--check]
#   --check  exit 1 if reqctx over no-op exceeds the budgets below (CI).
# Knobs (environment):
#   CALLS            measured calls per run (2000)
#   WARMUP_CALLS     unmeasured calls before them (200)
#   RUNS             runs per mode; the least is reported (3)
#   MODES            modes to run (plain noop by_hand reqctx metrics)
#   RPC_BENCH        a built rpc_bench to use instead of building -c opt
#   KEEP_DIR         keep callgrind's output files there (for callgrind_annotate)
#   MAX_INSTRUCTIONS budget with --check: reqctx over no-op instructions/RPC,
#                    the target plus 10% (6600: target 6,000)
#   MAX_ALLOCATIONS  budget with --check: reqctx over no-op allocations/RPC (3)
# Output (stdout): a markdown table, then one line of JSON. Progress on
# stderr. Takes ~1 min per 1,000 calls x mode x run on a loaded 2-core VM.
set -euo pipefail

cd "$(dirname "$0")/.."
log() { echo "rpc_instructions: $*" >&2; }

check=0
for arg in "$@"; do
  case "${arg}" in
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
  esac
done

calls="${CALLS:-2000}"
warmup="${WARMUP_CALLS:-200}"
runs="${RUNS:-3}"
modes="${MODES:-plain noop by_hand reqctx metrics}"
max_instructions="${MAX_INSTRUCTIONS:-6600}"
max_allocations="${MAX_ALLOCATIONS:-3}"
for v in calls warmup runs max_instructions max_allocations; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { log "${v} must be a whole number: ${!v}"; exit 2; }
done
((calls > 0 && runs > 0)) || { log "CALLS and RUNS must be > 0"; exit 2; }
command -v valgrind >/dev/null ||
  { log "valgrind not found (Debian: valgrind; tools/setup.sh installs it)"; exit 1; }

bench="${RPC_BENCH:-}"
if [[ -z "${bench}" ]]; then
  log "building //bench:rpc_bench with -c opt"
  bazel build -c opt //bench:rpc_bench >&2
  bench="$(bazel info -c opt bazel-bin 2>/dev/null)/bench/rpc_bench"
fi
[[ -x "${bench}" ]] || { log "${bench} is not executable"; exit 1; }

work="$(mktemp -d -t reqctx-instr.XXXXXX)"
trap 'rm -rf "${work}"' EXIT
if [[ -n "${KEEP_DIR:-}" ]]; then mkdir -p "${KEEP_DIR}"; fi

# One line per run: mode run instructions allocations_per_rpc
results="${work}/results"
: >"${results}"
# Rounds outside, modes inside: a spell of load on the machine touches every
# mode, not all runs of one.
for ((r = 1; r <= runs; r++)); do
  for mode in ${modes}; do
    out="${work}/${mode}.${r}.callgrind"
    log "${mode} run ${r}/${runs}: ${warmup} + ${calls} calls under callgrind"
    if ! valgrind --tool=callgrind --fair-sched=yes --instr-atstart=no \
      --callgrind-out-file="${out}" "${bench}" --profile_mode="${mode}" \
      --profile_calls="${calls}" --profile_warmup_calls="${warmup}" \
      --callers=1 --rounds=1 >"${work}/stdout" 2>"${work}/stderr"; then
      log "rpc_bench failed under valgrind (${mode}); its output:"
      cat "${work}/stdout" "${work}/stderr" >&2
      exit 1
    fi
    ir="$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "${out}")"
    allocs="$(sed -n 's/.* \([0-9.]*\) allocations\/RPC.*/\1/p' "${work}/stdout")"
    [[ -n "${ir}" && -n "${allocs}" ]] ||
      { log "no totals / allocations for ${mode}"; cat "${work}/stdout" >&2; exit 1; }
    echo "${mode} ${r} ${ir} ${allocs}" >>"${results}"
    if [[ -n "${KEEP_DIR:-}" ]]; then cp "${out}" "${KEEP_DIR}/"; fi
  done
done

CALLS="${calls}" WARMUP="${warmup}" RUNS="${runs}" CHECK="${check}" \
  MAX_INSTRUCTIONS="${max_instructions}" MAX_ALLOCATIONS="${max_allocations}" \
  python3 - "${results}" <<'EOF'
import json, os, sys

calls = int(os.environ["CALLS"])
runs = {}
for line in open(sys.argv[1]):
    mode, _, ir, allocs = line.split()
    runs.setdefault(mode, []).append((int(ir) / calls, float(allocs)))

names = {
    "plain": "plain gRPC",
    "noop": "gRPC with no-op interceptors",
    "by_hand": "by hand (deadline + traceparent, no interceptors)",
    "reqctx": "reqctx interceptors",
    "metrics": "reqctx interceptors with metrics",
}
instr = {m: min(i for i, _ in v) for m, v in runs.items()}
allocs = {m: min(a for _, a in v) for m, v in runs.items()}
spread = {m: (max(i for i, _ in v) / min(i for i, _ in v) - 1) * 100
          for m, v in runs.items()}

print(f"Unary Echo, one caller, client and server in one process (both sides "
      f"counted), {calls} measured calls after {os.environ['WARMUP']} "
      f"unmeasured; callgrind, least of {os.environ['RUNS']} runs.\n")
print("| mode | instructions/RPC | over no-op | allocations/RPC | "
      "over no-op | spread of runs |")
print("|---|---:|---:|---:|---:|---:|")
for m in runs:
    over_i = f"{instr[m] - instr['noop']:+,.0f}" if "noop" in instr else ""
    over_a = f"{allocs[m] - allocs['noop']:+.2f}" if "noop" in allocs else ""
    print(f"| {names.get(m, m)} | {instr[m]:,.0f} | {over_i} | {allocs[m]:.2f} "
          f"| {over_a} | {spread[m]:.2f}% |")
print()

out = {
    "calls": calls,
    "instructions_per_rpc": {m: round(v, 1) for m, v in instr.items()},
    "allocations_per_rpc": {m: round(v, 3) for m, v in allocs.items()},
    "runs_spread_pct": {m: round(v, 3) for m, v in spread.items()},
}
def diff(table, a, b):
    return round(table[a] - table[b], 1) if a in table and b in table else None
out["reqctx_over_noop_instructions_per_rpc"] = diff(instr, "reqctx", "noop")
out["reqctx_over_by_hand_instructions_per_rpc"] = diff(instr, "reqctx", "by_hand")
out["by_hand_over_plain_instructions_per_rpc"] = diff(instr, "by_hand", "plain")
out["noop_over_plain_instructions_per_rpc"] = diff(instr, "noop", "plain")
out["metrics_over_reqctx_instructions_per_rpc"] = diff(instr, "metrics", "reqctx")
out["reqctx_allocations_per_rpc_over_noop"] = diff(allocs, "reqctx", "noop")
out["reqctx_allocations_per_rpc_over_by_hand"] = diff(allocs, "reqctx", "by_hand")
print(json.dumps(out))

if os.environ["CHECK"] == "1":
    max_i = int(os.environ["MAX_INSTRUCTIONS"])
    max_a = int(os.environ["MAX_ALLOCATIONS"])
    over_i = out["reqctx_over_noop_instructions_per_rpc"]
    over_a = out["reqctx_allocations_per_rpc_over_noop"]
    if over_i is None or over_a is None:
        print("rpc_instructions: --check needs the noop and reqctx modes",
              file=sys.stderr)
        sys.exit(1)
    ok = True
    for what, value, budget in (("instructions", over_i, max_i),
                                ("allocations", over_a, max_a)):
        good = value <= budget
        ok = ok and good
        print(f"rpc_instructions: reqctx over no-op: {value:,.1f} {what}/RPC, "
              f"budget {budget:,}: {'ok' if good else 'OVER BUDGET'}",
              file=sys.stderr)
    sys.exit(0 if ok else 1)
EOF
