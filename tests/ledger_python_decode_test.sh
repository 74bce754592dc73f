#!/bin/sh
# The ledger a reqctx hop sends, decoded by Debian's python3-protobuf from the
# documented schema alone (tests/ledger_python_decode.py).
#   ledger_python_decode_test.sh SAMPLE DESCRIPTOR_SET DECODER
set -eu
sample=$1 fds=$2 decoder=$3
if ! /usr/bin/python3 -c "import google.protobuf" 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 has no google.protobuf (python3-protobuf)"
  exit 0
fi
dir=${TEST_TMPDIR:-$(mktemp -d)}
"$sample" "$dir/details.bin" "$dir/line.txt"
/usr/bin/python3 "$decoder" "$fds" "$dir/details.bin" "$dir/line.txt"
