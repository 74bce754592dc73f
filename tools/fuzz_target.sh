#!/usr/bin/env bash
# Fuzzes one of reqctx's gRPC-free parsers with libFuzzer for a bounded time;
# fails on any crash, sanitizer report or property violation (see the
# target's source in tests/fuzz/).
#
#   tools/fuzz_target.sh traceparent|baggage [seconds]     (default 30)
#
# Bazel's toolchain is gcc, which has no libFuzzer, so this compiles the
# parser and the target with Debian's clang (packages clang,
# libclang-rt-14-dev; tools/setup.sh installs them) into a temporary
# directory, and fuzzes a copy of the seed corpus there (new inputs found are
# not written back into the tree). Exits non-zero on a finding; the crashing
# input is kept and its path printed.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-}
seconds=${2:-30}
case "$seconds" in
  ''|*[!0-9]*) echo "usage: $0 traceparent|baggage [seconds]" >&2; exit 2 ;;
esac
# Per target: sources, seed corpus, -max_len. traceparent: valid headers are
# 55 bytes, longer inputs still exercise the early size rejection. baggage:
# past the 8,192-byte limit, so the limits are exercised too.
case "$target" in
  traceparent)
    srcs=(w3c/traceparent.cc w3c/tracestate.cc w3c/header_rules.cc
          tests/fuzz/traceparent_fuzzer.cc)
    corpus=tests/fuzz/corpus
    max_len=256
    ;;
  baggage)
    srcs=(w3c/baggage.cc w3c/header_rules.cc tests/fuzz/baggage_fuzzer.cc)
    corpus=tests/fuzz/corpus_baggage
    max_len=10000
    ;;
  *) echo "usage: $0 traceparent|baggage [seconds]" >&2; exit 2 ;;
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

work=$(mktemp -d "${TMPDIR:-/tmp}/reqctx-fuzz-$target.XXXXXX")
keep=0
cleanup() { if [ "$keep" -eq 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

"$CXX" -std=c++20 -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I. "${srcs[@]}" -o "$work/fuzzer"

mkdir -p "$work/corpus" "$work/artifacts"
cp "$corpus"/* "$work/corpus/"

# -timeout: one input taking over 5 s is a hang.
status=0
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$work/fuzzer" "$work/corpus" \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=5 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    >"$work/fuzz.log" 2>&1 || status=$?

if [ "$status" -ne 0 ]; then
  keep=1
  tail -n 40 "$work/fuzz.log" >&2
  echo "fuzz: FAILED (exit $status); inputs in $work/artifacts, log $work/fuzz.log" >&2
  exit 1
fi
grep -E '^stat::number_of_executed_runs|^Done' "$work/fuzz.log" || true
echo "fuzz: $target ok for ${seconds}s"
