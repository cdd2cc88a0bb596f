#!/bin/sh
# Install what the benchmark needs beyond scripts/setup.sh: the reference
# servers coturn (STUN) and haproxy (TCP proxy with splice). Idempotent: only
# missing packages are installed. Run as root on Debian bookworm. The Debian
# packages' own services are not used (the benchmark starts its own copies on
# loopback ports) and are stopped if a package started one.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
PKGS="coturn haproxy"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bench setup: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
  # Package scripts may have started the system services; they would hold
  # ports and CPU during a run. Stop them only if they are running.
  for svc in coturn haproxy; do
    if command -v service >/dev/null 2>&1 && service "$svc" status >/dev/null 2>&1; then
      service "$svc" stop >/dev/null 2>&1 || true
    fi
  done
else
  echo "bench setup: coturn and haproxy present"
fi
