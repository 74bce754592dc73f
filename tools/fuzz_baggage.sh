#!/usr/bin/env bash
# Fuzzes ParseBaggage/FormatBaggage with libFuzzer for a bounded time (see
# tools/fuzz_target.sh and tests/fuzz/baggage_fuzzer.cc).
#
#   tools/fuzz_baggage.sh [seconds]     (default 30)
exec "$(dirname "$0")/fuzz_target.sh" baggage "${1:-30}"
