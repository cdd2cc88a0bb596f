#!/bin/sh
# Set up, build and run rdvd with the default conf.d/ (full node).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRDV_TESTS=OFF >/dev/null
cmake --build build -j"${JOBS:-2}"
mkdir -p var
cd var
exec ../build/rdvd -c ../conf.d "$@"
