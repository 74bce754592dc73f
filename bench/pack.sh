#!/usr/bin/env bash
# bench/pack.sh: builds a self-contained benchmark pack, a folder and its
# tarball, to measure reqctx against Go's context and std::stop_source on
# another x86-64 Linux machine (e.g. one with many cores) with nothing
# installed there but bash and coreutils:
#   bin/   context_bench, rpc_bench, timer_bench (-c opt); Go's context test
#          binary and bench/go's (CGO_ENABLED=0, static); benchreport
#   lib/   every shared library the C++ binaries load (ldd) and the dynamic
#          loader they were linked against, which runs them
#          (`lib/ld-linux-x86-64.so.2 --library-path lib bin/...`), so the
#          target's own libraries are never used
#   run.sh runs them all (bench/measure.sh, the same knobs as run_all.sh)
#          and prints the tables and targets; measure.sh is that script
#
# Usage: bench/pack.sh [DIR]     (default DIR: ./reqctx-bench-pack)
# Writes DIR (replacing it) and DIR.tar.gz; prints the tarball's path. On the
# target: tar xzf reqctx-bench-pack.tar.gz && reqctx-bench-pack/run.sh
set -euo pipefail

readonly REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-reqctx-bench-pack}"
log() { echo "pack: $*" >&2; }
die() { log "$*"; exit 1; }
for tool in bazel go ldd tar; do
  command -v "${tool}" >/dev/null || die "${tool} not found"
done
[[ "$(uname -m)" == x86_64 ]] || die "packs only for x86-64 (this is $(uname -m))"

mkdir -p "${DIR}"
DIR="$(cd "${DIR}" && pwd)"
[[ "${DIR}" != / && "${DIR}" != "${REPO}" ]] || die "refusing to replace ${DIR}"
rm -rf "${DIR:?}"/{bin,lib,run.sh,measure.sh,README.txt}
mkdir -p "${DIR}/bin" "${DIR}/lib"

# --- C++ binaries, optimized -----------------------------------------------------
targets=(context_bench rpc_bench timer_bench)
log "building ${targets[*]} with -c opt"
(cd "${REPO}" && bazel build -c opt "${targets[@]/#///bench:}" >&2)
BAZEL_BIN="$(cd "${REPO}" && bazel info -c opt bazel-bin 2>/dev/null)"
for t in "${targets[@]}"; do
  cp -L "${BAZEL_BIN}/bench/${t}" "${DIR}/bin/"
  chmod u+w,a+rx "${DIR}/bin/${t}"
done

# --- Their shared libraries and the dynamic loader (ldd's view on this machine) ----
# ldd lines: "libX.so.N => /path/libX.so.N (0x...)", "/lib64/ld-linux-x86-64.so.2
# (0x...)", "linux-vdso.so.1 (0x...)" (in the kernel: nothing to copy).
loader=""
for t in "${targets[@]}"; do
  while read -r line; do
    case "${line}" in
      *"not found"*) die "${t}: a library is missing here: ${line}" ;;
      *" => /"*)
        path="${line#* => }"; path="${path%% (*}"
        cp -L "${path}" "${DIR}/lib/$(basename "${path}")" ;;
      /*ld-linux*)
        path="${line%% (*}"
        loader="$(basename "${path}")"
        cp -L "${path}" "${DIR}/lib/${loader}" ;;
    esac
  done < <(ldd "${DIR}/bin/${t}")
done
[[ -n "${loader}" ]] || die "no dynamic loader in ldd's output"
chmod a+rx "${DIR}/lib/${loader}"

# --- Go: context.test, bench.test, benchreport (static) -------------------------------
log "building the Go side ($(go version | cut -d' ' -f3), CGO_ENABLED=0)"
"${REPO}/bench/build_go.sh" "${DIR}/bin" >&2

# --- The scripts ---------------------------------------------------------------------
cp "${REPO}/bench/measure.sh" "${DIR}/measure.sh"
cat >"${DIR}/run.sh" <<RUN
#!/usr/bin/env bash
# Runs reqctx's benchmarks, Go's context benchmarks and std::stop_source's,
# all from this folder, and prints the tables (main, scaling at 1, 2, 4, 8, 16
# threads and this machine's CPU count, RPC, timer) and the targets to stdout;
# progress to stderr. Knobs (environment): see measure.sh, e.g.
#   BENCH_THREADS=1,2,4,8,16,32,64 BENCH_SKIP_RPC=1 ./run.sh
set -euo pipefail
here="\$(cd "\$(dirname "\$0")" && pwd)"
exec "\${here}/measure.sh" "\${here}/bin" "\${here}/lib/${loader}" "\${here}/lib"
RUN
chmod a+rx "${DIR}/run.sh" "${DIR}/measure.sh"
commit="$(cd "${REPO}" && git describe --always --dirty 2>/dev/null || echo unknown)"
cat >"${DIR}/README.txt" <<TXT
reqctx benchmark pack for x86-64 Linux: reqctx ${commit}, built $(date -u +%Y-%m-%d)
on $(. /etc/os-release && echo "${PRETTY_NAME}").
Run ./run.sh (about 5 minutes on 2 cores; more threads take longer); it prints
markdown tables and the targets to stdout. Knobs are listed in measure.sh.
The C++ binaries run through lib/${loader} with the libraries in lib/; the Go
binaries are static. Nothing is installed or written outside a temp directory
(BENCH_OUT chooses it). rpc_bench serves on 127.0.0.1 only.
TXT

tar -C "$(dirname "${DIR}")" -czf "${DIR}.tar.gz" "$(basename "${DIR}")"
log "$(du -sh "${DIR}" | cut -f1) in ${DIR}"
echo "${DIR}.tar.gz"
