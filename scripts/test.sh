#!/bin/sh
# Build and run every test: the normal build, the ASan+UBSan build, bounded
# fuzzing, the out-of-tree example module against the installed headers, the
# Debian packages, and valgrind over the integration tests. Exit status is
# non-zero on any failure.
set -eu
# POSIX sh has no pipefail: fuzzer output goes to a file, not a pipe.
cd "$(dirname "$0")/.."
sh scripts/setup.sh
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

step() { printf '\n=== %s ===\n' "$*"; }

step "build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRDV_TESTS=ON >/dev/null
cmake --build build -j"$JOBS"
step "tests"
# A failing suite is run once more before it counts: the integration suites
# start real servers on a 2-core machine, where a rare timing miss is load,
# not a bug (a second failure fails the run).
(cd build && ctest --output-on-failure -j"$JOBS" --repeat until-pass:2)

step "build (ASan+UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRDV_SANITIZE=ON -DRDV_TESTS=ON >/dev/null
cmake --build build-asan -j"$JOBS"
step "tests under ASan+UBSan"
# One suite at a time: sanitized servers are ~3x slower and two of them plus
# their clients on 2 cores made timing-based assertions flaky.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j1 --repeat until-pass:3)

step "fuzz (${FUZZ_SECONDS}s per target)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DRDV_TESTS=OFF -DRDV_FUZZ=ON \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzzers
for f in build-fuzz/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  corpus="tests/fuzz/corpus/${name#fuzz_}"
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  echo "fuzzing $name"
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      LSAN_OPTIONS=suppressions="$PWD/tests/fuzz/lsan.supp":print_suppressions=0 \
      "$f" -max_total_time="$FUZZ_SECONDS" -max_len=70000 -rss_limit_mb=2048 -artifact_prefix="$work.crash-" \
      "$work" >"$work.log" 2>&1; then
    tail -n 40 "$work.log"
    echo "fuzz: $name found a failure; input: $(ls "$work".crash-* 2>/dev/null) (replay: $f <input>)"
    exit 1
  fi
  tail -n 1 "$work.log"
  rm -rf "$work" "$work.log"
done

step "out-of-tree module build against the installed headers"
sh tests/out-of-tree.sh

step "build (Release, -O3): warnings the optimiser finds only there; installed as an operator would"
# -O3 inlines further and -Werror then sees more (maybe-uninitialized,
# format-truncation): a packager's Release build must not fail.
cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DRDV_TESTS=ON >/dev/null
cmake --build build-rel -j"$JOBS"
step "build (Release, clang): compiles warning-free with the other compiler too"
CC=clang cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DRDV_TESTS=ON >/dev/null
cmake --build build-clang -j"$JOBS"

step "install layout: launchers, conf.d (kept on reinstall), systemd unit"
BUILD=build-rel sh tests/install.sh
step "Debian packages: built (build-deb), checked, installed and run in a throwaway root"
sh tests/deb.sh

step "benchmark smoke (tiny sizes; the full run is sh bench/run.sh)"
sh bench/run.sh --smoke --no-build

if [ "${RDV_SKIP_VALGRIND:-0}" != 1 ]; then
  step "integration tests under valgrind"
  (cd build && RDV_VALGRIND=1 ctest --output-on-failure -L integration --repeat until-pass:2)
fi
echo "ALL TESTS PASSED"
