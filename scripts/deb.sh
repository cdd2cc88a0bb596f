#!/bin/sh
# Build the Debian packages rdvd and rdvd-dev (cmake/RdvDeb.cmake) from a
# Release build of their own, build-deb: prefix /usr (so /etc/rdvd and the
# multiarch library directory), Debian's build flags with every hardening
# option, no tests. Prints the two .deb paths. Then, as root:
#   apt install ./build-deb/rdvd_<version>_<arch>.deb
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD_DEB:-build-deb}
JOBS=${JOBS:-2}

# What dpkg-buildpackage would hand the compiler. Given on the command line,
# not through the environment, so a reconfigure applies them too.
flags() { DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$1"; }
cflags="$(flags CFLAGS) $(flags CPPFLAGS)"
ldflags=$(flags LDFLAGS)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DRDV_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr \
  -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
  -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" -DCMAKE_MODULE_LINKER_FLAGS="$ldflags" >/dev/null
cmake --build "$BUILD" -j"$JOBS" >"$BUILD/build.log" 2>&1 || { cat "$BUILD/build.log"; exit 1; }
rm -f "$BUILD"/*.deb
# cpack's log is long (and warns that modules have no SONAME, which they
# need not): shown only when it fails.
(cd "$BUILD" && cpack -G DEB) >"$BUILD/cpack.log" 2>&1 || { cat "$BUILD/cpack.log"; exit 1; }
ls "$BUILD"/rdvd_*.deb "$BUILD"/rdvd-dev_*.deb
