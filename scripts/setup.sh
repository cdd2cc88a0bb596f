#!/bin/sh
# Install the Debian packages rdvd needs to build, run and test. Idempotent:
# only missing packages are installed. Run as root on Debian bookworm.
set -eu
PKGS="build-essential cmake pkg-config git
libev-dev libprotobuf-c-dev protobuf-c-compiler libsodium-dev libconfig-dev
libsqlite3-dev uthash-dev libwslay-dev libmd-dev libcriterion-dev libcurl4-openssl-dev libjwt-dev
clang libclang-rt-14-dev valgrind socat python3 python3-websockets python3-prometheus-client python3-yaml sqlite3
libhttp-parser-dev chromium
file lintian adduser help2man"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
else
  echo "setup: all packages present"
fi
