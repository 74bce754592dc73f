#!/usr/bin/env bash
# AfterFunc's handle is [[nodiscard]]: dropping it (which stops f at once)
# is a compile-time warning, an error with -Werror=unused-result.
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
echo "PASS: ${out%%$'\n'*}"
