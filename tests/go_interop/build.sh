#!/bin/sh
# tests/go_interop/build.sh MAIN_GO OUT: builds the Go interop peer
# (main.go) into OUT with Debian's Go toolchain and Go gRPC packages
# (golang-go, golang-google-grpc-dev, golang-google-genproto-dev and their
# golang/protobuf 1.3: tools/setup.sh), offline, in GOPATH mode, static.
# Without them, OUT is a script that prints one "skip: ..." line and exits 3,
# which the test reports as its skip. Used by Bazel (//tests:go_interop_peer)
# and CMake alike.
set -eu
main=$1 out=$2
gocode=/usr/share/gocode/src
missing=""
command -v go >/dev/null 2>&1 || missing="go (golang-go)"
for pkg in google.golang.org/grpc:golang-google-grpc-dev \
           google.golang.org/genproto/googleapis/rpc/errdetails:golang-google-genproto-dev \
           github.com/golang/protobuf/proto:golang-github-golang-protobuf-1-3-dev; do
  [ -d "$gocode/${pkg%%:*}" ] || missing="$missing ${pkg##*:}"
done
if [ -n "$missing" ]; then
  printf '#!/bin/sh\necho "skip: not installed: %s (tools/setup.sh installs them)"\nexit 3\n' \
    "$missing" >"$out"
  chmod +x "$out"
  exit 0
fi
tmp=$(mktemp -d -t reqctx-go-interop.XXXXXX)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
case $out in /*) abs_out=$out ;; *) abs_out=$(pwd)/$out ;; esac
mkdir -p "$tmp/gopath/src/go_interop_peer"
cp "$main" "$tmp/gopath/src/go_interop_peer/main.go"
cd "$tmp/gopath/src/go_interop_peer"
env HOME="$tmp" GOCACHE="$tmp/cache" GOPATH="$tmp/gopath:/usr/share/gocode" \
  GOTMPDIR="$tmp" GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
  GOWORK=off CGO_ENABLED=0 go build -o "$abs_out" .
