#!/bin/sh
# rdvd benchmarks, one command (see docs/BENCHMARKS.md):
#   sh bench/run.sh            full run, at most 15 minutes on 2 cores
#   sh bench/run.sh --smoke    every measurement with tiny sizes (~30 s); part of scripts/test.sh
#   --no-build                 use rdvd's build/ as it is (the tools in build-bench/ are always brought up to date)
#   --only=udp,relay,...       run some sections only (udp, relay, memory, punch, startup)
# Installs the reference servers (bench/setup.sh), builds rdvd (build/) and
# the benchmark tools (build-bench/), then runs bench/run.py, which prints the
# tables and writes bench/results/<timestamp>.txt.
set -eu
cd "$(dirname "$0")/.."
RDV_BENCH_CMD="sh bench/run.sh $*"
export RDV_BENCH_CMD
smoke=""
only=""
build=1
for a in "$@"; do
  case "$a" in
    --smoke) smoke="--smoke" ;;
    --no-build) build=0 ;;
    --only=*) only="$a" ;;
    *) echo "usage: sh bench/run.sh [--smoke] [--no-build] [--only=SECTIONS]" >&2; exit 2 ;;
  esac
done
if ! sh bench/setup.sh; then
  # Without coturn/haproxy the smoke run still checks everything else and
  # prints SKIP for those references; a full run needs them.
  [ -n "$smoke" ] || { echo "bench: bench/setup.sh failed" >&2; exit 1; }
  echo "bench: bench/setup.sh failed; missing reference servers will be skipped" >&2
fi
JOBS=${JOBS:-2}
if [ "$build" = 1 ]; then
  [ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$JOBS"
fi
cmake -S bench -B build-bench -DCMAKE_BUILD_TYPE=Release -DRDV_BUILD_DIR="$PWD/build" >/dev/null
cmake --build build-bench -j"$JOBS"
exec python3 bench/run.py $smoke $only
