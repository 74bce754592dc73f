#!/usr/bin/env bash
# CI for reqctx's CMake and pkg-config packages (issue 15), one step per case:
#   1. build lists: tools/check_build_lists.py (CMake mirrors Bazel exactly)
#   2. docs: tools/check_docs.py (README and docs/ examples == compiled files;
#      every relative link and anchor resolves)
#   3. CMake build of the libraries, services and tests (-j2; the build
#      directory is cached under ~/.cache/reqctx-cmake, so reruns are quick)
#   4. ctest: every test of the CMake build (one case per test)
#   5. install into a temporary prefix (static + shared libs, headers,
#      reqctxConfig.cmake, .pc files), checked file by file
#   6. examples/cmake_consumer built with find_package(reqctx 0.1) against it,
#      its server and client run (the client checks deadline propagation)
#   7. examples/pkgconfig_consumer built with pkg-config against it, run
#      (hop_server/hop_client, and metrics_scrape: a MetricsServer on a free
#      loopback port scraped once)
# Prints "ci: cmake: N passed, M failed" last; exits non-zero on any failure.
# Bazel stays the main build: this only adds to it.
set -uo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)

passed=0
failed=0
# record NAME STATUS: one case.
record() {
  if [ "$2" -eq 0 ]; then
    echo "ci: cmake: ok: $1"
    passed=$((passed + 1))
  else
    echo "ci: cmake: FAILED: $1"
    failed=$((failed + 1))
  fi
}
finish() {
  echo "ci: cmake: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

tmp=$(mktemp -d /tmp/reqctx-ci-cmake.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# 1-2. The lists, the README and docs/ agree with what is built.
/usr/bin/python3 tools/check_build_lists.py
record "build lists (Bazel == CMake)" $?
/usr/bin/python3 tools/check_docs.py
record "README and docs: examples == compiled files, links resolve" $?

# 3. Build. One cached build directory per source tree.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/reqctx-cmake
build="$cache/$(printf '%s' "$src" | md5sum | cut -c1-12)"
mkdir -p "$build"
if cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DREQCTX_BUILD_TESTS=ON -DREQCTX_BUILD_SERVICES=ON >"$tmp/configure.log" 2>&1 &&
   cmake --build "$build" -j2 >"$tmp/build.log" 2>&1; then
  record "CMake build" 0
else
  tail -40 "$tmp/configure.log" "$tmp/build.log" 2>/dev/null
  record "CMake build" 1
  finish
fi

# 4. ctest: one case per test.
ctest --test-dir "$build" -j2 --output-on-failure --output-junit "$tmp/ctest.xml" \
  >"$tmp/ctest.log" 2>&1
ctest_status=$?
counts=$(/usr/bin/python3 - "$tmp/ctest.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except Exception:
    print("0 1"); sys.exit()
p = f = 0
for c in cases:
    if c.get("status") == "run" and c.find("failure") is None: p += 1
    else: f += 1
print(p, f)
EOF
)
p=${counts% *} f=${counts#* }
if [ "$ctest_status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
[ "$f" -ne 0 ] && grep -E "Failed|\*\*\*" "$tmp/ctest.log" | head -20
echo "ci: cmake: ctest: $p passed, $f failed"
passed=$((passed + p))
failed=$((failed + f))

# 5. Install into a temporary prefix and check what is there.
prefix="$tmp/prefix"
install_ok=0
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || install_ok=1
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
for f in include/reqctx/context/context.h include/reqctx/interceptors/interceptors.h \
         include/reqctx/async/coro.h include/reqctx/async/call.h include/reqctx/async/asio.h \
         include/reqctx/metrics/metrics_server.h "$libdir/pkgconfig/reqctx-metrics-server.pc" \
         "$libdir/cmake/reqctx/reqctxConfig.cmake" "$libdir/cmake/reqctx/reqctxConfigVersion.cmake" \
         "$libdir/pkgconfig/reqctx.pc"; do
  [ -f "$prefix/$f" ] || { echo "install: missing $f"; install_ok=1; }
done
for lib in context interceptors coro grpc_call asio metrics_server; do
  for f in "libreqctx_$lib.a" "libreqctx_$lib.so"; do
    [ -e "$prefix/$libdir/$f" ] || { echo "install: missing $libdir/$f"; install_ok=1; }
  done
done
# A static link of the metrics server needs civetweb (no .pc of its own).
PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig" pkg-config --static --libs reqctx-metrics-server |
  grep -q -- -lcivetweb || { echo "install: reqctx-metrics-server.pc: no -lcivetweb for --static"; install_ok=1; }
record "install (headers, static + shared libs, CMake config, pkg-config)" $install_ok

# Runs hop_server from $1 in the background, then hop_client against it.
run_hop() {
  local bin=$1 port=
  rm -f "$tmp/port"
  "$bin/hop_server" "$tmp/port" >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do  # Up to 10 s for the server to write its port.
    [ -s "$tmp/port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  port=$(cat "$tmp/port" 2>/dev/null)
  local status=1
  if [ -n "$port" ]; then
    timeout 60 "$bin/hop_client" "127.0.0.1:$port"
    status=$?
  else
    echo "hop_server did not start:"; cat "$tmp/server.log"
  fi
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null || { echo "hop_server exited badly"; status=1; }
  server_pid=
  return $status
}

# 6. The CMake consumer, against the installed package only.
if [ "$install_ok" -eq 0 ] &&
   cmake -S examples/cmake_consumer -B "$tmp/cmake_consumer" \
     -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$tmp/cc.log" 2>&1 &&
   cmake --build "$tmp/cmake_consumer" -j2 >>"$tmp/cc.log" 2>&1; then
  run_hop "$tmp/cmake_consumer"
  record "examples/cmake_consumer: build against the install, run" $?
else
  tail -30 "$tmp/cc.log" 2>/dev/null
  record "examples/cmake_consumer: build against the install, run" 1
fi

# 7. The pkg-config consumer, against the installed package only.
if [ "$install_ok" -eq 0 ] &&
   PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig" \
     make -C examples/pkgconfig_consumer -j2 B="$tmp/pc_consumer" >"$tmp/pc.log" 2>&1; then
  run_hop "$tmp/pc_consumer"
  record "examples/pkgconfig_consumer: build against the install, run" $?
  timeout 60 "$tmp/pc_consumer/metrics_scrape"
  record "examples/pkgconfig_consumer: metrics_scrape (reqctx-metrics-server.pc)" $?
else
  tail -30 "$tmp/pc.log" 2>/dev/null
  record "examples/pkgconfig_consumer: build against the install, run" 1
  record "examples/pkgconfig_consumer: metrics_scrape (reqctx-metrics-server.pc)" 1
fi

finish
