#!/usr/bin/env bash
# Compile-time contracts of the core API:
#  1. AfterFunc's handle is [[nodiscard]]: dropping it (which stops f at
#     once) is a warning, an error with -Werror=unused-result.
#  2. The DoneRef that Context::Done() returns cannot be kept in a variable
#     and used later (it does not own the context): only DoneSignal can.
set -uo pipefail
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
src="${root}/tests/compile/discarded_after_func.cc"
out=$(g++ -std=c++20 -fsyntax-only -Werror=unused-result -I"${root}" "${src}" 2>&1)
status=$?
if [ "${status}" -eq 0 ]; then
  echo "FAIL: dropping AfterFunc's handle compiled without a diagnostic"
  exit 1
fi
if ! grep -q "nodiscard\|unused-result\|ignoring return value" <<<"${out}"; then
  echo "FAIL: compile failed for another reason:"
  echo "${out}"
  exit 1
fi
echo "PASS 1: ${out%%$'\n'*}"

src2="${root}/tests/compile/kept_done_ref.cc"
out=$(g++ -std=c++20 -fsyntax-only -I"${root}" "${src2}" 2>&1)
if [ $? -eq 0 ]; then
  echo "FAIL: a DoneRef kept in a variable compiled"
  exit 1
fi
if ! grep -q "DoneRef" <<<"${out}"; then
  echo "FAIL: kept_done_ref.cc failed for another reason:"
  echo "${out}"
  exit 1
fi
echo "PASS 2: kept DoneRef rejected"
