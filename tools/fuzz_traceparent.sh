#!/usr/bin/env bash
# Fuzzes ParseTraceparent with libFuzzer for a bounded time; fails on any
# crash, sanitizer report or property violation (see
# tests/fuzz/traceparent_fuzzer.cc).
#
#   tools/fuzz_traceparent.sh [seconds]     (default 30)
#
# Bazel's toolchain is gcc, which has no libFuzzer, so this compiles the
# gRPC-free parser (interceptors/traceparent.cc) and the target with Debian's
# clang (packages clang, libclang-rt-14-dev; tools/setup.sh installs them)
# into a temporary directory, and fuzzes a copy of the seed corpus there (new
# inputs found are not written back into the tree). Exits non-zero on a
# finding; the crashing input is kept and its path printed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;;
esac

CXX=${CXX_FUZZ:-clang++}
if ! command -v "$CXX" >/dev/null 2>&1; then
  for c in clang++-14 clang++-15 clang++-16; do
    if command -v "$c" >/dev/null 2>&1; then CXX=$c; break; fi
  done
fi
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "fuzz: clang++ not found (run tools/setup.sh)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/reqctx-fuzz.XXXXXX")
keep=0
cleanup() { if [ "$keep" -eq 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

"$CXX" -std=c++20 -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I. interceptors/traceparent.cc tests/fuzz/traceparent_fuzzer.cc \
  -o "$work/traceparent_fuzzer"

mkdir -p "$work/corpus" "$work/artifacts"
cp tests/fuzz/corpus/* "$work/corpus/"

# -max_len: valid headers are 55 bytes; longer inputs still exercise the
# early size rejection. -timeout: one input taking over 5 s is a hang.
status=0
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$work/traceparent_fuzzer" "$work/corpus" \
    -max_total_time="$seconds" -max_len=256 -timeout=5 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    >"$work/fuzz.log" 2>&1 || status=$?

if [ "$status" -ne 0 ]; then
  keep=1
  tail -n 40 "$work/fuzz.log" >&2
  echo "fuzz: FAILED (exit $status); inputs in $work/artifacts, log $work/fuzz.log" >&2
  exit 1
fi
grep -E '^stat::number_of_executed_runs|^Done' "$work/fuzz.log" || true
echo "fuzz: traceparent ok for ${seconds}s"
