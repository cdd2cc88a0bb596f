#!/bin/sh
# Install into a temporary prefix as an operator would (cmake --install) and
# check what they get: rdvd, rdvctl and the hbbs/hbbr launchers in the
# prefix's bin (not elsewhere), conf.d under etc/rdvd that the installed rdvd
# accepts with the installed modules, a second install that keeps an edited
# conf.d, and a systemd unit that starts the installed binary on that conf.d
# (checked with systemd-analyze verify where it is available).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/rdv-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
p="$tmp/prefix"
fail() { echo "install: $*"; exit 1; }

cmake --install "$BUILD" --prefix "$p" >"$tmp/log1"
for f in rdvd rdvctl hbbs hbbr; do
  [ -x "$p/bin/$f" ] || fail "$p/bin/$f missing"
done
[ "$(readlink "$p/bin/hbbs")" = rdvd ] || fail "hbbs is not a link to rdvd"
"$p/bin/hbbr" -V >/dev/null || fail "installed hbbr does not run"
for m in keys storage-sqlite registry relay websocket-transport; do
  [ -f "$p/lib/rdvd/modules/$m.so" ] || ls "$p"/lib/*/rdvd/modules/"$m.so" >/dev/null 2>&1 ||
    fail "module $m not installed"
done
moddir=$(dirname "$(ls "$p"/lib/rdvd/modules/keys.so "$p"/lib/*/rdvd/modules/keys.so 2>/dev/null | head -n 1)")
conf="$p/etc/rdvd/conf.d"
[ -f "$conf/00-core.conf" ] || fail "$conf/00-core.conf missing"
[ -f "$p/share/rdvd/conf.d/00-core.conf" ] || fail "pristine conf.d missing under share/"
# No core.module_path: an installed rdvd finds the modules of its own
# prefix (installed with --prefix elsewhere than configured), never the
# build tree's.
(cd "$tmp" && "$p/bin/rdvd" -c "$conf" --check) >"$tmp/check" 2>&1 ||
  { cat "$tmp/check"; fail "the installed rdvd refuses the installed conf.d"; }
grep -q "modules from $moddir\$" "$tmp/check" ||
  { cat "$tmp/check"; fail "the installed rdvd did not load the modules of its prefix ($moddir)"; }

# an operator's edit survives a second install (an upgrade)
echo "# edited by the operator" >>"$conf/20-registry.conf"
cmake --install "$BUILD" --prefix "$p" >"$tmp/log2"
grep -q "edited by the operator" "$conf/20-registry.conf" || fail "a reinstall overwrote conf.d"
grep -q "Keeping: $conf" "$tmp/log2" || fail "a reinstall did not say it kept conf.d"

unit="$p/lib/systemd/system/rdvd.service"
[ -f "$unit" ] || fail "$unit missing"
grep -qx "ExecStart=$p/bin/rdvd -c $conf" "$unit" || { grep ExecStart "$unit"; fail "ExecStart does not name the installed rdvd and conf.d"; }
grep -q "^LimitNOFILE=" "$unit" || fail "no LimitNOFILE in the unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify prints problems and exits non-zero on them; "man:" pages that
  # are not installed are no problem of the unit.
  if ! SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$unit" >"$tmp/verify" 2>&1; then
    cat "$tmp/verify"; fail "systemd-analyze verify refuses $unit"
  fi
  echo "install: systemd-analyze verify accepts the unit"
fi
echo "install: prefix layout, conf.d check, reinstall and unit: 1 passed, 0 failed"
