#!/usr/bin/env bash
# bench/compare_rev.sh: is the context core slower than it was at an earlier
# commit? Builds //bench:context_bench (-c opt) at BASE in a temporary git
# worktree and at the working tree, runs the two binaries alternately on this
# machine (ROUNDS rounds each, so a burst of load hits both), and prints one
# markdown table: case, BASE CPU ns/op, now CPU ns/op, now/BASE, every case more
# than 10% slower marked. Comparing against a table measured on another day
# mixes machine drift into the ratio (on this 2-core VM the same binary moves
# by up to 2x between days); two binaries in one run do not.
#
# Usage: bench/compare_rev.sh BASE [FILTER]
#   BASE    a commit (e.g. 16f9afa, the 2026-11-23 table's commit)
#   FILTER  --benchmark_filter regex (default: the single-threaded Go cases)
# Knobs (environment): ROUNDS (default 5), BENCH_MIN_TIME (default 0.2).
# Only cases present in both binaries are compared. Progress goes to stderr;
# stdout is only the table.
set -euo pipefail

cd "$(dirname "$0")/.."
log() { echo "compare_rev: $*" >&2; }
[[ $# -ge 1 ]] || { echo "usage: $0 BASE [FILTER]" >&2; exit 2; }
base="$(git rev-parse --short "$1^{commit}")"
filter="${2:-^Benchmark(CommonParentCancel|CancelTree|CheckCanceled|DeepValueSameGoRoutine|WithTimeout)[^:]*$}"
rounds="${ROUNDS:-5}"
min_time="${BENCH_MIN_TIME:-0.2}"

work="$(mktemp -d -t reqctx-compare.XXXXXX)"
tree="${work}/base"
cleanup() {
  git worktree remove --force "${tree}" >/dev/null 2>&1 || true
  rm -rf "${work}"
}
trap cleanup EXIT

log "building //bench:context_bench at ${base} (temporary worktree) and now"
git worktree add -q --detach "${tree}" "${base}"
(cd "${tree}" && bazel build -c opt //bench:context_bench >&2 &&
  cp "$(bazel info -c opt bazel-bin 2>/dev/null)/bench/context_bench" "${work}/base_bench" &&
  bazel shutdown >/dev/null 2>&1)
bazel build -c opt //bench:context_bench >&2
cp "$(bazel info -c opt bazel-bin 2>/dev/null)/bench/context_bench" "${work}/now_bench"

for ((r = 1; r <= rounds; r++)); do
  for side in base now; do
    log "round ${r}/${rounds}: ${side}"
    "${work}/${side}_bench" --benchmark_filter="${filter}" \
      --benchmark_min_time="${min_time}" --benchmark_format=csv 2>/dev/null |
      awk -F, -v side="${side}" '
        # Google Benchmark CSV: name,iterations,real_time,cpu_time,time_unit,...
        NR > 1 && $1 !~ /^"?StopSource/ {
          gsub(/"/, "", $1); t = $4  # cpu_time: load from other processes inflates real time, not CPU time
          if ($5 == "us") t *= 1e3; else if ($5 == "ms") t *= 1e6
          print side, $1, t
        }' >>"${work}/samples"
  done
done

echo "Context core at ${base} vs now ($(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')), $(date -u +%F), $(nproc) cores, median of ${rounds} alternating rounds; CPU time per op (single-threaded cases: CPU time is what load from other processes does not inflate)."
echo
echo "| case | ${base} CPU ns/op | now CPU ns/op | now/${base} |"
echo "|---|---:|---:|---:|"
sort -k2,2 -k1,1 -k3,3g "${work}/samples" | awk '
  function median(side,   n, i) {
    n = cnt[side]; if (n == 0) return -1
    return n % 2 ? v[side, (n + 1) / 2] : (v[side, n / 2] + v[side, n / 2 + 1]) / 2
  }
  function flush() {
    if (name != "" && cnt["base"] > 0 && cnt["now"] > 0) {
      b = median("base"); w = median("now"); ratio = w / b
      printf "| %s | %.4g | %.4g | %.2f%s |\n", name, b, w, ratio, (ratio > 1.10 ? " (slower)" : "")
    }
    delete cnt; delete v
  }
  $2 != name { flush(); name = $2 }
  { cnt[$1]++; v[$1, cnt[$1]] = $3 }
  END { flush() }'
