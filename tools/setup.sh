#!/usr/bin/env bash
# Installs every Debian package reqctx needs to build, test, fuzz and
# benchmark offline. Idempotent: when everything is present it only checks
# (about a second) and never runs `apt-get update`.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3
  g++                      # the C++20 compiler Bazel's toolchain uses
  libgrpc++-dev            # gRPC 1.51 C++
  protobuf-compiler-grpc   # grpc_cpp_plugin
  libprotobuf-dev          # Protobuf 3.21
  protobuf-compiler        # protoc
  libabsl-dev              # abseil 20220623
  libgtest-dev             # GoogleTest 1.12
  libgmock-dev             # GoogleMock 1.12
  libbenchmark-dev         # Google Benchmark 1.7
  golang-go                # Go's own context benchmarks, run as a peer
  clang                    # libFuzzer target
  libclang-rt-14-dev       # libFuzzer and sanitizer runtimes for clang
  python3                  # tools/count_test_cases.py, bench/run_all.sh
  libcivetweb-dev          # civetweb 1.15: the metrics HTTP endpoint
  prometheus               # a real Prometheus scrapes the echo server in tests
  postgresql               # PostgreSQL 15 server: //integrations/postgres tests, demo_postgres
  libpq-dev                # libpq: //integrations/postgres
  libcurl4-openssl-dev     # libcurl: //integrations/http
  cmake                    # the CMake build (tools/ci_cmake.sh)
  make                     # CMake's generator; the pkg-config consumer
  pkg-config               # the pkg-config consumer
  libasio-dev              # standalone asio 1.22 (//async:asio)
  valgrind                 # callgrind: bench/rpc_instructions.sh (CI's call-cost budget)
  nginx                    # grpc_pass proxy between hops (tests/multihost proxy chain)
  haproxy                  # HTTP/2 proxy between hops (tests/multihost proxy chain)
  libspdlog-dev            # spdlog 1.10: trace-carrying log lines (//logging:spdlog)
  libgoogle-glog-dev       # glog 0.6: trace-carrying log lines (//logging:glog)
  python3-grpcio           # Python gRPC 1.51 peer: stalled and non-reading stream clients
  python3-protobuf         # the Python peer's messages
  golang-google-grpc-dev   # grpc-go 1.33: the Go middle hop and client of the ledger interop test
  golang-google-genproto-dev  # google.rpc errdetails for the Go client
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: apt-get not found: reqctx needs Debian 12 (bookworm) packages: ${missing[*]}" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup: not root and no sudo: install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get update -qq; then
  echo "setup: apt-get update failed: is the Debian mirror reachable?" >&2
  exit 1
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
  echo "setup: apt-get install failed for: ${missing[*]}" >&2
  exit 1
fi
echo "setup: done" >&2
