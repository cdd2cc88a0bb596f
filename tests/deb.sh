#!/bin/sh
# The Debian packages for real. Build them (scripts/deb.sh) and check what
# dpkg-deb shows: the files, no headers in rdvd, every /etc/rdvd/conf.d file
# a conffile, Depends made by dpkg-shlibdeps (a package for every library
# the binaries and modules need), the unit, lintian without errors. Then
# install them into a throwaway copy of this machine (an overlay over / on a
# tmpfs, in a mount namespace of its own, chrooted) and do what an operator
# does: install over an upstream hbbs package, run the node as the unit
# would (user rdvd, /var/lib/rdvd, ports moved off the defaults by editing
# the conffiles), register a peer over UDP, move upstream's key pair over as
# the postinst says, reinstall and upgrade keeping the edits, remove, purge.
# Afterwards nothing of it may be left on the machine.
# The install part needs root, unshare and overlayfs; without them it is
# skipped with "deb: SKIP" (exit 0) after the package checks.
set -eu
LC_ALL=C
export LC_ALL

passed=0
ok() { passed=$((passed + 1)); }
fail() {
  echo "deb: FAIL: $*"
  echo "deb: $passed passed, 1 failed"
  exit 1
}
# has FILE REGEX: a line of FILE matches (grep -E)
has() { grep -Eq -- "$2" "$1"; }

# ---------------------------------------------------------------------------
# Inside the chroot (tests/deb.sh --inside DIR PORTPREFIX SRCDIR): DIR holds
# the packages and is the outside's $tmp/share, so logs written there
# survive; ports 2111N become PORTPREFIX N; SRCDIR is this source tree.
if [ "${1:-}" = --inside ]; then
  S=$2
  PATH=/usr/sbin:/usr/bin:/sbin:/bin
  DEBIAN_FRONTEND=noninteractive
  export PATH DEBIAN_FRONTEND
  trap 'if [ -n "${pid:-}" ]; then kill -9 "$pid" 2>/dev/null || true; fi' EXIT
  pid=
  # What the outside reads back: the count, and a log for a failure.
  fail() {
    echo "deb: FAIL: $*"
    echo "$passed" >"$S/passed"
    exit 1
  }
  show() { echo "---- $1"; cat "$1"; echo "----"; }
  deb=$(ls "$S"/rdvd_*.deb)
  devdeb=$(ls "$S"/rdvd-dev_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  state=/var/lib/rdvd
  conf=/etc/rdvd/conf.d
  unit=/lib/systemd/system/rdvd.service

  # The unit's own settings: the server below is started from them.
  key() { sed -n "s/^$1=//p" "$unit"; }
  # start LOG: rdvd as the unit starts it (its User, WorkingDirectory,
  # LimitNOFILE and ExecStart); waits for "ready:".
  start() {
    : >"$1"
    # systemd sets LimitNOFILE as root before it drops to User=; root
    # without CAP_SYS_RESOURCE (some containers) cannot raise it.
    n=$(key LimitNOFILE)
    limit=
    rm -f "$1.nofile"
    if prlimit --nofile="$n:$n" true 2>/dev/null; then
      limit="prlimit --nofile=$n:$n --"
      : >"$1.nofile"
    fi
    (
      cd "$(key WorkingDirectory)"
      # shellcheck disable=SC2046,SC2086
      exec $limit setpriv --reuid="$(key User)" --regid="$(key Group)" --init-groups -- \
        env -i PATH=/usr/bin:/bin HOME="$state" $(key ExecStart)
    ) 2>"$1" &
    pid=$!
    i=0
    until has "$1" "ready:"; do
      i=$((i + 1))
      if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
        show "$1"
        fail "the installed rdvd did not start as the unit would"
      fi
      sleep 0.05
    done
  }
  # stop LOG: SIGTERM, and the exit status must be 0.
  stop() {
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    pid=
    [ $rc = 0 ] || { show "$1"; fail "rdvd exited $rc on SIGTERM"; }
  }
  owned() { [ "$(stat -c %U:%G "$1")" = rdvd:rdvd ] || fail "$1 is $(stat -c %U:%G "$1"), not rdvd:rdvd"; }

  # 1. An upstream hbbs install: its package (stand-in: same name, same
  # /usr/bin/hbbs) and the key pair hbbs made in /var/lib/rustdesk-server.
  dpkg -i "$S/rustdesk-server-hbbs.deb" >"$S/fake.log" 2>&1 || { show "$S/fake.log"; fail "stand-in upstream package"; }
  mkdir -p /var/lib/rustdesk-server
  cp "$S/up/id_ed25519" "$S/up/id_ed25519.pub" /var/lib/rustdesk-server/

  # 2. Install: no systemd runs here, so the unit is enabled but not started,
  # and nothing alarming is said about it.
  # As the operator would: apt (it removes the conflicting package itself).
  apt-get install -y "$deb" </dev/null >"$S/install.apt" 2>&1 || { show "$S/install.apt"; fail "apt-get install $deb"; }
  tr -d '\r' <"$S/install.apt" >"$S/install.log" # apt runs dpkg on a pty: CR LF
  ok
  if grep -Eiv "rustdesk-server-hbbs|^rdvd: /var/lib/rustdesk-server has the key pair" "$S/install.log" |
    grep -Eiq "^[EW]: |error|warn|fail|cannot|can not|unable|not found|denied|not been booted|chroot|rc\.d"; then
    show "$S/install.log"
    fail "dpkg -i said something alarming"
  fi
  ok
  [ "$(dpkg-query -W -f '${Status}' rdvd)" = "install ok installed" ] || fail "rdvd is not installed"
  case $(dpkg-query -W -f '${Status}' rustdesk-server-hbbs 2>/dev/null || true) in
    "" | *not-installed | *config-files) ;;
    *) fail "rdvd did not replace rustdesk-server-hbbs (Conflicts/Replaces)" ;;
  esac
  [ "$(readlink /usr/bin/hbbs)" = rdvd ] || fail "/usr/bin/hbbs is not rdvd's launcher"
  [ -e /var/lib/rustdesk-server/id_ed25519 ] || fail "upstream's key pair went away"
  ok
  hint=$(grep "^rdvd: /var/lib/rustdesk-server has the key pair" "$S/install.log") ||
    { show "$S/install.log"; fail "no word on moving upstream's key pair"; }
  [ ! -e "$state/id_ed25519" ] || fail "the postinst copied upstream's key pair by itself"
  ok

  # 3. The user, the state directory, the unit.
  pw=$(getent passwd rdvd) || fail "no user rdvd"
  [ "$(echo "$pw" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "rdvd's shell: $pw"
  [ "$(echo "$pw" | cut -d: -f6)" = "$state" ] || fail "rdvd's home: $pw"
  [ "$(echo "$pw" | cut -d: -f3)" -lt 1000 ] || fail "rdvd is not a system user: $pw"
  getent group rdvd >/dev/null || fail "no group rdvd"
  owned "$state"
  [ "$(stat -c %a "$state")" = 750 ] || fail "$state has mode $(stat -c %a "$state"), not 750"
  [ -L /etc/systemd/system/multi-user.target.wants/rdvd.service ] || fail "rdvd.service not enabled"
  ok
  [ "$(key User)" = rdvd ] && [ "$(key Group)" = rdvd ] && [ "$(key WorkingDirectory)" = "$state" ] &&
    [ "$(key ExecStart)" = "/usr/bin/rdvd -c $conf" ] || fail "the unit: $(grep -E '^(User|Group|WorkingDirectory|ExecStart)=' "$unit")"
  if command -v systemd-analyze >/dev/null 2>&1; then
    SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$unit" >"$S/verify.log" 2>&1 ||
      { show "$S/verify.log"; fail "systemd-analyze verify refuses the packaged unit"; }
    ok
  fi
  case $(rdvd -V) in
    "rdvd ${version%-*}" | "rdvd ${version%-*} "*) ;;
    *) fail "rdvd -V says '$(rdvd -V)', the package is $version" ;;
  esac
  ok

  # 4. The packaged conf.d passes --check as the unit's user, with the
  # modules of the package.
  runuser -u rdvd -- sh -c "cd $state && rdvd -c $conf --check" >"$S/check.log" 2>&1 ||
    { show "$S/check.log"; fail "rdvd --check refuses the packaged conf.d as user rdvd"; }
  has "$S/check.log" "modules from /usr/lib/[^ ]*/rdvd/modules\$" || { show "$S/check.log"; fail "modules not from the package"; }
  ok

  # 5. The operator moves the ports (here off the defaults, so nothing else
  # on this machine is disturbed): an edit of four conffiles.
  pfx=$3
  sed -i "s/\\b2111\\([5-9]\\)\\b/$pfx\\1/g" "$conf/00-core.conf" "$conf/30-punch-coordinator.conf" \
    "$conf/40-relay.conf" "$conf/50-websocket-transport.conf"
  cp "$conf/00-core.conf" "$S/00-core.edited"

  # 6. A full node as the unit runs it: keys and database made by rdvd in
  # its directory, a peer registers over UDP, the console answers, SIGTERM.
  start "$S/run1.log"
  for p in 5 6 7 8 9; do
    has "$S/run1.log" "listening on .*:$pfx$p\\b" || { show "$S/run1.log"; fail "not listening on $pfx$p"; }
  done
  grep -E " (WARN|ERROR) " "$S/run1.log" >"$S/warn" || true
  if [ ! -e "$S/run1.log.nofile" ]; then
    echo "deb: note: LimitNOFILE=$(key LimitNOFILE) cannot be set here (no CAP_SYS_RESOURCE): its warnings are ignored"
    grep -v "RLIMIT_NOFILE" "$S/warn" >"$S/warn2" || true
    mv "$S/warn2" "$S/warn"
  fi
  if [ -s "$S/warn" ]; then show "$S/warn"; fail "warnings at start as user rdvd"; fi
  ok
  python3 - "${pfx}6" "$S/pk.out" <<'PY' || { show "$S/run1.log"; fail "no RegisterPeer / RegisterPk answer over UDP"; }
import socket, sys
port, out = int(sys.argv[1]), sys.argv[2]
def varint(n):
    b = b""
    while True:
        if n < 0x80:
            return b + bytes([n])
        b += bytes([n & 0x7f | 0x80]); n >>= 7
def ld(tag, b):  # a length-delimited field
    return varint(tag) + varint(len(b)) + b
def ask(msg):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    for _ in range(10):
        s.sendto(msg, ("127.0.0.1", port))
        try:
            return s.recvfrom(65536)[0]
        except socket.timeout:
            pass
    sys.exit("no answer")
pid = b"debtest1"
# RendezvousMessage.register_peer (6) {id (1), serial (2) = 1}
a = ask(ld(6 << 3 | 2, ld(1 << 3 | 2, pid) + b"\x10\x01"))
# register_peer_response (7) {request_pk (2) = true}: an unknown peer
assert a == ld(7 << 3 | 2, b"\x10\x01"), a.hex()
# register_pk (15) {id (1), uuid (2), pk (3)}
a = ask(ld(15 << 3 | 2, ld(1 << 3 | 2, pid) + ld(2 << 3 | 2, b"deb-test-uuid-01") + ld(3 << 3 | 2, bytes(range(32)))))
# register_pk_response (16) {result (1) = OK (0: absent on the wire), keep_alive (2)}
assert a[:2] == varint(16 << 3 | 2) and a[2] == len(a) - 3, a.hex()
i, fields = 3, {}
while i < len(a):
    tag, i = a[i], i + 1
    assert tag & 7 == 0, a.hex()  # varints only
    v = s = 0
    while True:
        v |= (a[i] & 0x7f) << s; s += 7; i += 1
        if a[i - 1] < 0x80:
            break
    fields[tag >> 3] = v
assert fields.get(1, 0) == 0, "RegisterPk result %d" % fields[1]
open(out, "w").write(a.hex())
PY
  ok
  k=$(sed -n 's/.*Key: //p' "$S/run1.log")
  [ -n "$k" ] || fail "no Key: line"
  (cd / && rdvctl cmd key) >"$S/ctl.out" 2>&1 || { show "$S/ctl.out"; fail "rdvctl cmd key (socket in $state)"; }
  grep -qxF "$k" "$S/ctl.out" || { show "$S/ctl.out"; fail "rdvctl's key is not the log's $k"; }
  ok
  stop "$S/run1.log"
  for f in id_ed25519 id_ed25519.pub db_v2.sqlite3; do
    [ -f "$state/$f" ] || fail "rdvd made no $state/$f"
    owned "$state/$f"
  done
  [ "$(stat -c %a "$state/id_ed25519")" = 600 ] || fail "id_ed25519 has mode $(stat -c %a "$state/id_ed25519")"
  [ "$(cat "$state/id_ed25519.pub")" = "$k" ] || fail "id_ed25519.pub is not the Key logged"
  [ ! -e "$state/rdvd.sock" ] || fail "the admin socket is left after a clean stop"
  python3 -c "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute(\"select count(*) from peer where id='debtest1'\").fetchone()[0]; sys.exit(r!=1)" \
    "$state/db_v2.sqlite3" || fail "the registered peer is not in db_v2.sqlite3"
  ok

  # 7. Moving upstream's key pair over as the postinst said (its command
  # without the systemctl around it): rdvd then hands out upstream's Key.
  mv=$(echo "$hint" | sed -n 's/.*systemctl stop rdvd && \(.*\) && systemctl start rdvd$/\1/p')
  [ -n "$mv" ] || fail "cannot read the command in: $hint"
  sh -c "$mv" || fail "the postinst's command failed: $mv"
  start "$S/run2.log"
  grep -qF "Key: $(cat "$S/up/id_ed25519.pub")" "$S/run2.log" || { show "$S/run2.log"; fail "rdvd does not use upstream's key pair"; }
  stop "$S/run2.log"
  owned "$state/id_ed25519"
  sum=$(md5sum <"$state/id_ed25519")
  ok

  # 8. Reinstalling the same package: the edited conffiles stay as they
  # are, silently (the package's versions did not change), and the state.
  dpkg -i "$deb" </dev/null >"$S/reinstall.log" 2>&1 || { show "$S/reinstall.log"; fail "reinstall"; }
  cmp -s "$conf/00-core.conf" "$S/00-core.edited" || fail "a reinstall changed the edited 00-core.conf"
  if has "$S/reinstall.log" "onfiguration file"; then show "$S/reinstall.log"; fail "a reinstall asked about conffiles"; fi
  [ "$(md5sum <"$state/id_ed25519")" = "$sum" ] || fail "a reinstall changed the key pair"
  if has "$S/reinstall.log" "has the key pair of an hbbs"; then fail "the move hint again, with a key pair in place"; fi
  ok

  # 9. The development package: an out-of-tree module builds against it
  # (pkg-config, headers, librdvwire) and the installed rdvd loads it.
  dpkg -i "$devdeb" </dev/null >"$S/dev.log" 2>&1 || { show "$S/dev.log"; fail "dpkg -i $devdeb"; }
  [ "$(pkg-config --modversion rdv-module)" = "${version%-*}" ] || fail "pkg-config rdv-module"
  [ "$(pkg-config --variable=moduledir rdv-module)" = "$(dirname "$(ls /usr/lib/*/rdvd/modules/keys.so)")" ] ||
    fail "rdv-module.pc's moduledir is not where the modules are"
  ex=/tmp/rdv-example
  { cmake -S "$4/modules/example" -B "$ex" && cmake --build "$ex"; } >"$S/example.log" 2>&1 ||
    { show "$S/example.log"; fail "modules/example does not build against rdvd-dev"; }
  mkdir -p /tmp/rdv-exconf
  printf 'core: { modules = [ "example" ]; module_path = "%s";\n  listeners = ( { name = "example"; port = %s; udp = true; } ); };\n' \
    "$ex" "${pfx}5" >/tmp/rdv-exconf/00-core.conf
  (cd /tmp && rdvd -c /tmp/rdv-exconf --check) >"$S/excheck.log" 2>&1 || { show "$S/excheck.log"; fail "rdvd does not load the example module"; }
  dpkg -r rdvd-dev >"$S/devrm.log" 2>&1 || { show "$S/devrm.log"; fail "dpkg -r rdvd-dev"; }
  [ ! -e /usr/include/rdv ] || fail "dpkg -r rdvd-dev left /usr/include/rdv"
  ok

  # 10. An upgrade whose 00-core.conf (edited here) and 20-registry.conf
  # (not) changed: with --force-confold the edit stays and the new file
  # lands beside it, the untouched one is replaced; rdvd ignores the
  # .dpkg-dist file and starts on the edited settings.
  dpkg -i --force-confold "$S/rdvd-upgrade.deb" </dev/null >"$S/upgrade.log" 2>&1 || { show "$S/upgrade.log"; fail "upgrade"; }
  [ "$(dpkg-query -W -f '${Version}' rdvd)" != "$version" ] || fail "the upgrade did not happen"
  cmp -s "$conf/00-core.conf" "$S/00-core.edited" || fail "the upgrade replaced the edited 00-core.conf"
  has "$conf/00-core.conf.dpkg-dist" "changed by the upgrade test" || fail "no 00-core.conf.dpkg-dist"
  has "$conf/20-registry.conf" "changed by the upgrade test" || fail "the unedited 20-registry.conf was not upgraded"
  [ "$(md5sum <"$state/id_ed25519")" = "$sum" ] || fail "the upgrade changed the key pair"
  runuser -u rdvd -- sh -c "cd $state && rdvd -c $conf --check" >"$S/check2.log" 2>&1 ||
    { show "$S/check2.log"; fail "--check after the upgrade (a .dpkg-dist file in conf.d)"; }
  start "$S/run3.log"
  has "$S/run3.log" "listening on .*:${pfx}6\\b" || { show "$S/run3.log"; fail "the upgrade lost the ports"; }
  stop "$S/run3.log"
  ok

  # 11. remove keeps the settings and the state; purge deletes both.
  dpkg -r rdvd >"$S/remove.log" 2>&1 || { show "$S/remove.log"; fail "dpkg -r rdvd"; }
  [ ! -e /usr/bin/rdvd ] && [ ! -e "$unit" ] && [ ! -e /usr/bin/hbbs ] || fail "dpkg -r left the programs"
  cmp -s "$conf/00-core.conf" "$S/00-core.edited" || fail "dpkg -r lost the edited conf.d"
  [ "$(md5sum <"$state/id_ed25519")" = "$sum" ] && [ -f "$state/db_v2.sqlite3" ] || fail "dpkg -r lost the state"
  ok
  dpkg -P rdvd >"$S/purge.log" 2>&1 || { show "$S/purge.log"; fail "dpkg -P rdvd"; }
  [ ! -e /etc/rdvd ] || fail "dpkg -P left /etc/rdvd: $(find /etc/rdvd)"
  [ ! -e "$state" ] || fail "dpkg -P left $state: $(find "$state")"
  [ ! -e /etc/systemd/system/multi-user.target.wants/rdvd.service ] || fail "dpkg -P left the unit enabled"
  if dpkg-query -W -f '${Status}' rdvd >/dev/null 2>&1; then fail "dpkg still knows rdvd: $(dpkg-query -W -f '${Status}' rdvd)"; fi
  ok
  echo "$passed" >"$S/passed"
  exit 0
fi

# ---------------------------------------------------------------------------
# Outside.
cd "$(dirname "$0")/.."
src=$PWD
BUILD=${BUILD_DEB:-build-deb}
command -v dpkg-deb >/dev/null 2>&1 && command -v dpkg-buildflags >/dev/null 2>&1 ||
  { echo "deb: SKIP: no dpkg-deb / dpkg-buildflags (not Debian?)"; exit 0; }
tmp=$(mktemp -d /tmp/rdv-deb-XXXXXX)
# Before anything: what the machine has, to prove afterwards nothing leaked.
before() {
  for p in /etc/rdvd /var/lib/rdvd /lib/systemd/system/rdvd.service /usr/bin/rdvd \
    /etc/systemd/system/multi-user.target.wants/rdvd.service; do
    [ -e "$p" ] && echo "exists $p"
  done
  getent passwd rdvd || true
  getent group rdvd || true
  dpkg-query -W -f '${Package} ${Status}\n' rdvd rdvd-dev rustdesk-server-hbbs 2>/dev/null || true
}
before >"$tmp/before"
# RDV_DEB_KEEP=1 keeps the packages and the logs of the run in $tmp.
trap 'if [ "${RDV_DEB_KEEP:-0}" = 1 ]; then echo "deb: kept $tmp"; else rm -rf "$tmp"; fi' EXIT

sh scripts/deb.sh >"$tmp/built" || fail "scripts/deb.sh"
deb=$(grep '/rdvd_[^/]*\.deb$' "$tmp/built")
devdeb=$(grep '/rdvd-dev_[^/]*\.deb$' "$tmp/built")
echo "deb: built $deb $devdeb"

# --- the packages as dpkg-deb shows them
dpkg-deb -f "$deb" >"$tmp/control"
dpkg-deb -c "$deb" | awk '{ print $6 ($7 ? " " $7 " " $8 : "") }' | sed 's|^\./|/|' >"$tmp/contents"
dpkg-deb -c "$devdeb" | awk '{ print $6 ($7 ? " " $7 " " $8 : "") }' | sed 's|^\./|/|' >"$tmp/devcontents"
dpkg-deb -x "$deb" "$tmp/x"
dpkg-deb -e "$deb" "$tmp/x/DEBIAN"
version=$(dpkg-deb -f "$deb" Version)
arch=$(dpkg --print-architecture)
[ "$(dpkg-deb -f "$deb" Package)" = rdvd ] && [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "control: $(cat "$tmp/control")"
[ "$(basename "$deb")" = "rdvd_${version}_$arch.deb" ] || fail "file name $(basename "$deb") for $version"
# everything root's, whoever built it
for d in "$deb" "$devdeb"; do
  dpkg-deb -c "$d" >"$tmp/c" || fail "dpkg-deb -c $d"
  if awk '$2 != "root/root"' "$tmp/c" | grep .; then fail "files of $d not owned by root/root"; fi
done
ok

for f in /usr/bin/rdvd /usr/bin/rdvctl "/usr/bin/hbbs -> rdvd" "/usr/bin/hbbr -> rdvd" /lib/systemd/system/rdvd.service \
  /usr/share/doc/rdvd/copyright /usr/share/doc/rdvd/changelog.Debian.gz /usr/share/doc/rdvd/OPERATIONS.md \
  /usr/share/doc/rdvd/README.md; do
  grep -qxF "$f" "$tmp/contents" || fail "rdvd lacks $f"
done
# manual pages (help2man): each one names its program and has its options
for m in rdvd:conf rdvctl:genkeypair hbbs:must hbbr:PORT; do
  name=${m%%:*} word=${m#*:}
  f=/usr/share/man/man8/$name.8.gz
  grep -qxF "$f" "$tmp/contents" || fail "rdvd lacks $f"
  gzip -dc "$tmp/x$f" >"$tmp/page" || fail "$f is not gzip"
  up=$(echo "$name" | tr a-z A-Z)
  grep -q "^\.TH $up \"8\"" "$tmp/page" && grep -q "$word" "$tmp/page" && grep -q "OPERATIONS.md" "$tmp/page" ||
    { head -20 "$tmp/page"; fail "$f: not the manual page of $name"; }
done
grep -Eq "^/usr/lib/[^/]+/librdvwire\.so\.1 -> " "$tmp/contents" || fail "rdvd lacks librdvwire.so.1"
multi=$(sed -n 's|^/usr/lib/\([^/]*\)/librdvwire\.so\.1 -> .*|\1|p' "$tmp/contents")
[ "$multi" = "$(dpkg-architecture -qDEB_HOST_MULTIARCH)" ] || fail "librdvwire not in the multiarch directory: $multi"
for m in "$BUILD"/modules/*.so; do
  grep -qxF "/usr/lib/$multi/rdvd/modules/$(basename "$m")" "$tmp/contents" || fail "rdvd lacks module $(basename "$m")"
done
for f in $(cd conf.d && find . -type f | sed 's|^\./||' | sort); do
  grep -qxF "/etc/rdvd/conf.d/$f" "$tmp/contents" || fail "rdvd lacks /etc/rdvd/conf.d/$f"
  grep -qxF "/usr/share/rdvd/conf.d/$f" "$tmp/contents" || fail "rdvd lacks /usr/share/rdvd/conf.d/$f"
done
diff -r conf.d "$tmp/x/etc/rdvd/conf.d" >/dev/null || fail "/etc/rdvd/conf.d differs from conf.d/"
ok
# a runtime package carries no development files
if grep -E '^/usr/include|\.h$|\.pc$|/cmake/|librdvwire\.so ->|/fakecore' "$tmp/contents"; then
  fail "development files in rdvd"
fi
for f in /usr/include/rdv/module.h /usr/include/rdv/proto/rendezvous.pb-c.h /usr/lib/$multi/pkgconfig/rdv-module.pc \
  /usr/lib/$multi/cmake/rdv/RdvModule.cmake "/usr/lib/$multi/librdvwire.so -> librdvwire.so.1" \
  /usr/share/rdvd/fakecore/fakecore.c /usr/share/doc/rdvd-dev/copyright; do
  grep -qxF "$f" "$tmp/devcontents" || fail "rdvd-dev lacks $f"
done
if grep -E '^/usr/bin|/modules/|^[^ ]*\.so\.[0-9]' "$tmp/devcontents"; then fail "runtime files in rdvd-dev"; fi
dpkg-deb -f "$devdeb" Depends | grep -qF "rdvd (= $version)" || fail "rdvd-dev does not depend on rdvd (= $version)"
ok

# conffiles: exactly the files under /etc
sort "$tmp/x/DEBIAN/conffiles" >"$tmp/conffiles"
(cd "$tmp/x" && find etc -type f | sed 's|^|/|' | sort) >"$tmp/etcfiles"
cmp -s "$tmp/conffiles" "$tmp/etcfiles" || { diff "$tmp/conffiles" "$tmp/etcfiles"; fail "conffiles is not every file in /etc"; }
[ -s "$tmp/conffiles" ] || fail "no conffiles"
ok

# Depends: generated by dpkg-shlibdeps (a versioned libc6, which nobody
# writes by hand) and naming the package of every library any ELF file of
# rdvd needs, modules included; plus adduser for the postinst.
depends=$(dpkg-deb -f "$deb" Depends)
echo "$depends" | grep -q "libc6 (>= " || fail "Depends not from dpkg-shlibdeps: $depends"
echo "$depends" | grep -qw adduser || fail "Depends lacks adduser: $depends"
find "$tmp/x" -type f \( -name '*.so*' -o -path '*/bin/*' \) | while read -r f; do
  readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
done | sort -u | grep -v '^librdvwire\.so' >"$tmp/needed"
[ "$(wc -l <"$tmp/needed")" -ge 8 ] || fail "too few NEEDED libraries: $(cat "$tmp/needed")"
while read -r so; do
  p=$(dpkg -S "*/$so" 2>/dev/null | sed -n "s|^\([^:]*\)\(:[^:]*\)*: .*/$so\$|\1|p" | head -n 1)
  [ -n "$p" ] || fail "no package has $so"
  echo "$depends" | grep -Eq "(^|, )$p( |,|\$)" || fail "Depends lacks $p (for $so): $depends"
done <"$tmp/needed"
echo "$(dpkg-deb -f "$deb" Conflicts) / $(dpkg-deb -f "$deb" Replaces)" |
  grep -q "rustdesk-server-hbbs, rustdesk-server-hbbr / rustdesk-server-hbbs, rustdesk-server-hbbr" ||
  fail "Conflicts/Replaces of upstream's packages"
ok

# The binaries: stripped, no build directory in a RUNPATH.
find "$tmp/x" -type f \( -name '*.so*' -o -path '*/bin/*' \) | while read -r f; do
  file "$f" | grep -q ', stripped' || echo "not stripped: $f"
  # shellcheck disable=SC2016
  readelf -d "$f" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p' | tr : '\n' | grep -v '^\$ORIGIN' | sed "s|^|RUNPATH of $f: |"
done >"$tmp/elf"
[ ! -s "$tmp/elf" ] || fail "$(cat "$tmp/elf")"
ok

# The unit, the changelog, the maintainer scripts.
u="$tmp/x/lib/systemd/system/rdvd.service"
for l in "User=rdvd" "Group=rdvd" "WorkingDirectory=/var/lib/rdvd" "StateDirectory=rdvd" "StateDirectoryMode=0750" \
  "ExecStart=/usr/bin/rdvd -c /etc/rdvd/conf.d" "LimitNOFILE=1000000" "NoNewPrivileges=yes" "ProtectSystem=strict" \
  "ProtectHome=yes" "PrivateTmp=yes"; do
  grep -qxF "$l" "$u" || fail "the packaged unit lacks $l"
done
zcat "$tmp/x/usr/share/doc/rdvd/changelog.Debian.gz" | head -n 1 | grep -q "^rdvd ($version) " ||
  fail "changelog.Debian.gz does not start with $version"
for s in postinst prerm postrm; do
  f="$tmp/x/DEBIAN/$s"
  [ "$(head -n 1 "$f")" = "#!/bin/sh" ] && grep -qx "set -e" "$f" && sh -n "$f" || fail "$s: not a POSIX sh script with set -e"
  if command -v checkbashisms >/dev/null 2>&1; then checkbashisms "$f" || fail "$s has bashisms"; fi
done
grep -qx "activate-noawait ldconfig" "$tmp/x/DEBIAN/triggers" || fail "no ldconfig trigger"
ok

# lintian: errors fail; warnings are shown (deliberate ones are overridden
# in the package, with the reason: scripts/deb/lintian-overrides*).
if command -v lintian >/dev/null 2>&1; then
  lintian "$deb" "$devdeb" >"$tmp/lintian" 2>&1 || true
  grep -v "running with root privileges" "$tmp/lintian" | sed 's/^/deb: lintian: /'
  if grep -q "^E: " "$tmp/lintian"; then fail "lintian errors"; fi
  grep -q "^[EW]: " "$tmp/lintian" || echo "deb: lintian: no errors, no warnings"
  ok
else
  echo "deb: lintian not installed (sh scripts/setup.sh installs it): not run"
fi

# --- installed, in a throwaway copy of this machine
skip() {
  echo "deb: SKIP installing the packages: $*"
  echo "deb: package checks: $passed passed, 0 failed (install not run)"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i, chroot)"
command -v unshare >/dev/null 2>&1 && command -v chroot >/dev/null 2>&1 || skip "no unshare or chroot"
mkdir "$tmp/U" "$tmp/M" "$tmp/share"
# shellcheck disable=SC2016
unshare -m sh -c 'mount -t tmpfs tmpfs "$1" && mkdir "$1/u" "$1/w" &&
  mount -t overlay overlay -o lowerdir=/,upperdir="$1/u",workdir="$1/w" "$2"' sh "$tmp/U" "$tmp/M" 2>"$tmp/probe" ||
  skip "no overlay of / in a mount namespace here: $(cat "$tmp/probe")"

# A stand-in for upstream's rustdesk-server-hbbs package (the same name and
# /usr/bin/hbbs), and a key pair as its hbbs would have made.
fk="$tmp/fake"
mkdir -p "$fk/DEBIAN" "$fk/usr/bin"
printf '#!/bin/sh\necho "stand-in for upstream hbbs"\n' >"$fk/usr/bin/hbbs"
chmod 755 "$fk/usr/bin/hbbs"
cat >"$fk/DEBIAN/control" <<EOF
Package: rustdesk-server-hbbs
Version: 1.1.14
Architecture: all
Maintainer: rdvd tests <dev@rdvd.invalid>
Description: stand-in for upstream's hbbs package (tests/deb.sh)
EOF
dpkg-deb --root-owner-group -b "$fk" "$tmp/share/rustdesk-server-hbbs.deb" >/dev/null
mkdir "$tmp/share/up"
"$BUILD/rdvctl" genkeypair >"$tmp/kp"
printf '%s' "$(sed -n 's/^Public Key: *//p' "$tmp/kp")" >"$tmp/share/up/id_ed25519.pub"
printf '%s' "$(sed -n 's/^Secret Key: *//p' "$tmp/kp")" >"$tmp/share/up/id_ed25519"
chmod 600 "$tmp/share/up/id_ed25519"

# The upgrade: the same package as a later version whose 00-core.conf and
# 20-registry.conf changed.
up="$tmp/upgrade"
dpkg-deb -R "$deb" "$up"
sed -i "s/^Version: .*/Version: $version+upgradetest1/" "$up/DEBIAN/control"
for f in 00-core.conf 20-registry.conf; do
  echo "# changed by the upgrade test" >>"$up/etc/rdvd/conf.d/$f"
done
(cd "$up" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum >DEBIAN/md5sums)
dpkg-deb --root-owner-group -b "$up" "$tmp/share/rdvd-upgrade.deb" >/dev/null
cp "$deb" "$devdeb" tests/deb.sh "$tmp/share/"

# Ports: 5 numbers off the defaults (2111N -> PPPPN), below the ephemeral range.
pfx=$((1100 + $$ % 2100))
start=$(date +%s)
# /run is an empty tmpfs inside: no systemd to reach from the chroot.
# shellcheck disable=SC2016
unshare -m sh -c 'set -e
  mount -t tmpfs -o size=1g tmpfs "$1"
  mkdir "$1/u" "$1/w"
  mount -t overlay overlay -o lowerdir=/,upperdir="$1/u",workdir="$1/w" "$2"
  mount --bind /proc "$2/proc"
  mount --bind /dev "$2/dev"
  mount --bind /dev/pts "$2/dev/pts"
  mount -t tmpfs tmpfs "$2/run"
  mkdir -p "$2/rdvd-test"
  mount --bind "$3" "$2/rdvd-test"
  exec chroot "$2" /bin/sh /rdvd-test/deb.sh --inside /rdvd-test "$4" "$5"' \
  sh "$tmp/U" "$tmp/M" "$tmp/share" "$pfx" "$src" >"$tmp/inside" 2>&1 || inside_rc=$?
cat "$tmp/inside"
inner=$(cat "$tmp/share/passed" 2>/dev/null || echo 0)
passed=$((passed + inner))
[ "${inside_rc:-0}" = 0 ] || fail "in the throwaway root (above)"
echo "deb: installed, ran, reinstalled, upgraded, removed and purged in a throwaway root in $(($(date +%s) - start)) s"

# Nothing of it on the machine itself.
before >"$tmp/after"
cmp -s "$tmp/before" "$tmp/after" || { diff "$tmp/before" "$tmp/after"; fail "the install leaked onto this machine"; }
if grep -q " $tmp/M \| $tmp/U " /proc/mounts; then fail "a mount leaked"; fi
ok
echo "deb: package contents, conffiles, Depends, unit, lintian; install over upstream, full node as rdvd, upgrade, purge: $passed passed, 0 failed"
