#!/bin/sh
# Install rdvd into a temporary prefix, build the example module out of tree
# against the installed headers / librdvwire / rdv-module.pc (with its unit
# tests against the installed fake core), then load that .so into the
# installed rdvd and check it answers a UDP datagram. Issue #2.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/rdv-oot-XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
pid=

cmake --install "$BUILD" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib/x86_64-linux-gnu/pkgconfig"
fakecore=$(pkg-config --variable=fakecoredir rdv-module)
echo "out-of-tree: building modules/example against $tmp/prefix"
cmake -S modules/example -B "$tmp/ex" -DRDV_FAKECORE_DIR="$fakecore" >/dev/null
cmake --build "$tmp/ex" -j2 >/dev/null
(cd "$tmp/ex" && ctest --output-on-failure)

port=$((30000 + $$ % 20000))
mkdir -p "$tmp/run/conf.d"
cat > "$tmp/run/conf.d/00-core.conf" <<CONF
core: {
  modules = [ "example" ];
  module_path = "$tmp/ex";
  admin_socket = "$tmp/run/rdvd.sock";
  listeners = ( { name = "example"; port = $port; udp = true; tcp = false; } );
};
CONF
(cd "$tmp/run" && exec "$tmp/prefix/bin/rdvd" -c conf.d) 2>"$tmp/run/log" &
pid=$!
i=0
until grep -q "ready:" "$tmp/run/log" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || { cat "$tmp/run/log"; echo "out-of-tree: rdvd did not start"; exit 1; }
  sleep 0.05
done
python3 - "$port" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.bind(("127.0.0.1", 0))
s.sendto(bytes([0xa2, 0x01, 0x00]), ("127.0.0.1", int(sys.argv[1])))  # TestNatRequest{}
data = s.recv(100)
# TestNatResponse (field 21) carrying our port as field 1 varint
assert data[:2] == bytes([0xaa, 0x01]), data.hex()
port = s.getsockname()[1]
body = data[3:]
assert body[0] == 0x08
v, shift, i = 0, 0, 1
while True:
    b = body[i]; v |= (b & 0x7f) << shift; shift += 7; i += 1
    if not b & 0x80: break
assert v == port, (v, port)
print("out-of-tree: installed rdvd + out-of-tree example module answered port", v)
PY
kill -TERM "$pid"
wait "$pid"
echo "1 passed, 0 failed"
