#!/usr/bin/env bash
# Fuzzes ParseTraceparent with libFuzzer for a bounded time (see
# tools/fuzz_target.sh and tests/fuzz/traceparent_fuzzer.cc).
#
#   tools/fuzz_traceparent.sh [seconds]     (default 30)
exec "$(dirname "$0")/fuzz_target.sh" traceparent "${1:-30}"
