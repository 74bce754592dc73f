#!/usr/bin/env bash
# Multi-host test (issue 12, section 5): frontend -> middle -> backend echo
# servers in three network namespaces joined by veth links, a userspace TCP
# relay adding a fixed latency in front of the middle and the backend (this
# kernel has no netem), and tests/multihost/multihost_check run from the
# frontend's namespace (see that file for the checks).
#
#   tests/multihost/run.sh        # as root; prints "multihost: ..." lines
#
# Where network namespaces cannot be made (not root, no `ip`, no netns
# support) it prints one line "multihost: SKIP: <why>" and exits 0.
# Everything it starts is stopped by pid, and the namespaces (with their
# links) are deleted by name, on every exit path; the whole run is bounded
# (a watchdog ends it after $MULTIHOST_TIMEOUT seconds, default 180).
# Traffic stays inside the namespaces: each server binds its own namespace's
# veth address (--bind_address, as on separate hosts), each relay listens on
# that address too (another port) in front of it, and only these namespaces
# route to each other.
# Ends with "multihost: N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

latency_ms=${MULTIHOST_LATENCY_MS:-50}
# The reply margin covers the round trip to the next hop (see
# multihost_check.cc: gRPC's relative grpc-timeout does not carry transit).
margin_ms=${MULTIHOST_MARGIN_MS:-$((2 * latency_ms))}
min_budget_ms=600
timeout_s=${MULTIHOST_TIMEOUT:-180}

skip() {
  echo "multihost: SKIP: $*"
  exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root to make network namespaces"
command -v ip >/dev/null 2>&1 || skip "no 'ip' command (iproute2)"

tag="rqmh$$"
ns_f="${tag}f"
ns_m="${tag}m"
ns_b="${tag}b"
# veth names are at most 15 characters.
v_fm="v${$}fm"
v_mf="v${$}mf"
v_mb="v${$}mb"
v_bm="v${$}bm"
tmp=$(mktemp -d /tmp/reqctx-multihost.XXXXXX)
pids=()
watchdog=

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    # Bounded: a server that ignores SIGTERM for 5 s is killed.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "$ns_f" "$ns_m" "$ns_b"; do ip netns del "$ns" 2>/dev/null; done
  for v in "$v_fm" "$v_mb"; do ip link del "$v" 2>/dev/null; done
  if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "multihost: FAILED: timed out after ${timeout_s} s"; exit 1' USR1
# The watchdog's own sleep is stopped with it (a plain `sleep; kill` subshell
# would keep the EXIT trap's wait blocked until the sleep ends).
( sleep "$timeout_s" & s=$!; trap 'kill $s; exit 0' TERM; wait $s; kill -USR1 $$ ) &
watchdog=$!

if ! ip netns add "$ns_f" 2>"$tmp/netns.err"; then
  skip "cannot make network namespaces ($(head -1 "$tmp/netns.err"))"
fi
ip netns add "$ns_m" && ip netns add "$ns_b" || { echo "multihost: FAILED: ip netns add"; exit 1; }

# Build what runs (plain config), then take the binaries from bazel-bin.
if ! bazel build //services/echo:server //tests/multihost:latency_relay \
       //tests/multihost:multihost_check >"$tmp/build.log" 2>&1; then
  tail -20 "$tmp/build.log"
  echo "multihost: FAILED: build"
  exit 1
fi
bin=$(bazel info bazel-bin 2>/dev/null)
server="$bin/services/echo/server"
relay="$bin/tests/multihost/latency_relay"
check="$bin/tests/multihost/multihost_check"

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
set -e
ip link add "$v_fm" type veth peer name "$v_mf"
ip link set "$v_fm" netns "$ns_f"
ip link set "$v_mf" netns "$ns_m"
ip link add "$v_mb" type veth peer name "$v_bm"
ip link set "$v_mb" netns "$ns_m"
ip link set "$v_bm" netns "$ns_b"
in_ns "$ns_f" ip addr add 10.231.1.1/24 dev "$v_fm"
in_ns "$ns_m" ip addr add 10.231.1.2/24 dev "$v_mf"
in_ns "$ns_m" ip addr add 10.231.2.1/24 dev "$v_mb"
in_ns "$ns_b" ip addr add 10.231.2.2/24 dev "$v_bm"
for ns in "$ns_f" "$ns_m" "$ns_b"; do in_ns "$ns" ip link set lo up; done
in_ns "$ns_f" ip link set "$v_fm" up
in_ns "$ns_m" ip link set "$v_mf" up
in_ns "$ns_m" ip link set "$v_mb" up
in_ns "$ns_b" ip link set "$v_bm" up
# The frontend's namespace reaches the backend's through the middle's (for
# the backend's Stats); nothing routes outside these three.
in_ns "$ns_m" sysctl -q -w net.ipv4.ip_forward=1
in_ns "$ns_f" ip route add 10.231.2.0/24 via 10.231.1.2
in_ns "$ns_b" ip route add 10.231.1.0/24 via 10.231.2.1
set +e

# start NAME NS CMD...: runs CMD in NS, output in $tmp/NAME.out; waits
# (bounded) for its "listening on" line.
start() {
  local name=$1 ns=$2
  shift 2
  ip netns exec "$ns" "$@" >"$tmp/$name.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    grep -q "listening on" "$tmp/$name.out" 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "multihost: FAILED: $name did not start:"
  cat "$tmp/$name.out"
  exit 1
}
policy=(--reply_margin_ms="$margin_ms")
start backend "$ns_b" "$server" --name=backend --bind_address=10.231.2.2 \
  --port=7300 "${policy[@]}" --min_budget_ms="$min_budget_ms"
start backend_relay "$ns_b" "$relay" --listen=10.231.2.2:7301 \
  --upstream=10.231.2.2:7300 --latency_ms="$latency_ms"
start middle "$ns_m" "$server" --name=middle --bind_address=10.231.1.2 \
  --port=7200 --next=10.231.2.2:7301 "${policy[@]}"
start middle_relay "$ns_m" "$relay" --listen=10.231.1.2:7201 \
  --upstream=10.231.1.2:7200 --latency_ms="$latency_ms"
start frontend "$ns_f" "$server" --name=frontend --bind_address=10.231.1.1 \
  --port=7100 --next=10.231.1.2:7201 "${policy[@]}"
# Each server says where it listens: its namespace's address.
for hop in "frontend 10.231.1.1:7100" "middle 10.231.1.2:7200" \
           "backend 10.231.2.2:7300"; do
  set -- $hop
  if ! grep -q "$1 listening on $2\$" "$tmp/$1.out"; then
    echo "multihost: FAILED: $1 is not listening on $2: $(head -1 "$tmp/$1.out")"
    exit 1
  fi
done

in_ns "$ns_f" timeout 120 "$check" --frontend=10.231.1.1:7100 \
  --middle_stats=10.231.1.2:7201 --backend_stats=10.231.2.2:7301 \
  --latency_ms="$latency_ms" --margin_ms="$margin_ms" \
  --backend_min_budget_ms="$min_budget_ms" | tee "$tmp/check.out"
status=${PIPESTATUS[0]}
passed=$(grep -c '^multihost: ok:' "$tmp/check.out")
failed=$(grep -c '^multihost: FAILED:' "$tmp/check.out")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$failed" -ne 0 ]; then
  for f in frontend middle backend; do echo "--- $f"; tail -5 "$tmp/$f.out"; done
fi
echo "multihost: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
