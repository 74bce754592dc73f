#!/usr/bin/env bash
# Runs `bazel run //services/echo:demo_postgres` as a test: it must exit 0 by
# itself (bounded here to 120 s) and report that all three scenarios behaved.
set -uo pipefail
demo="$1"
out=$(timeout 120 "$demo" 2>&1)
status=$?
echo "$out"
if [ "$status" -ne 0 ]; then
  echo "demo_postgres_test: the demo exited $status" >&2
  exit 1
fi
grep -q "all three behaved as described" <<<"$out" || {
  echo "demo_postgres_test: missing the success line" >&2
  exit 1
}
