#!/usr/bin/env bash
# Build the .deb and .rpm, install/remove the .deb on this machine, inspect and install the .rpm into a
# scratch rpm database, lint the .deb and verify the unit. Skip with NODEWARD_SKIP_PACKAGE_TEST=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${NODEWARD_TOOLS:-$HOME/.cache/nodeward-tools}/bin:$PATH"
scratch=$(mktemp -d)
cleanup() {
  dpkg -s nodeward >/dev/null 2>&1 && dpkg -P nodeward >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "package-test: $*" >&2; exit 1; }

# A static musl binary: the packages run on any x86_64 Linux (RHEL 8, Debian 11 and older).
target=x86_64-unknown-linux-musl
cargo build --release --target "$target" --bin nodeward
bin="target/$target/release/nodeward"
kind=$(file -b "$bin")
grep -q 'static' <<<"$kind" || fail "$bin is not statically linked: $kind"
deb=$(cargo deb --no-build --no-strip --target "$target" 2>/dev/null | tail -n1)
[ -f "$deb" ] || fail "cargo deb produced no package"
cargo generate-rpm --target "$target"
rpm=$(ls -t target/"$target"/generate-rpm/nodeward-*.rpm | head -n1)
[ -f "$rpm" ] || fail "cargo generate-rpm produced no package"
echo "package-test: built $deb ($(stat -c %s "$deb") B), $rpm ($(stat -c %s "$rpm") B)"
echo "package-test: binary: $kind"

# .deb: contents, conffiles, install, run from the installed path, remove.
# (Listings are captured first: `cmd | grep -q` fails under pipefail when grep exits early.)
listing=$(dpkg -c "$deb")
grep -q ' ./usr/bin/nodeward$' <<<"$listing" || fail ".deb lacks /usr/bin/nodeward"
conffiles=$(dpkg -I "$deb" conffiles)
grep -qx /etc/nodeward/agent.toml <<<"$conffiles" || fail "agent.toml is not a conffile"
dpkg -i "$deb" >/dev/null
version=$(/usr/bin/nodeward --version)
[ "$version" = "nodeward $(cargo pkgid | sed 's/.*[#@]//')" ] || fail "unexpected version: $version"
/usr/bin/nodeward agent --check-config --standalone >/dev/null || fail "check-config fails on the shipped config"
systemd-analyze verify /usr/lib/systemd/system/nodeward-agent.service ||
  fail "systemd-analyze verify failed"
dpkg -r nodeward >/dev/null
[ ! -e /usr/bin/nodeward ] || fail "dpkg -r left /usr/bin/nodeward"
dpkg -P nodeward >/dev/null
echo "package-test: .deb installed, ran '$version', removed"

lintian --fail-on error --suppress-tags no-manual-page "$deb" || fail "lintian reported errors"

# .rpm: listing and an install into a scratch root with its own database.
files=$(rpm -qpl "$rpm")
grep -qx /usr/bin/nodeward <<<"$files" || fail ".rpm lacks /usr/bin/nodeward"
configs=$(rpm -qpc "$rpm")
grep -qx /etc/nodeward/agent.toml <<<"$configs" || fail "agent.toml is not %config in the .rpm"
rpm --root "$scratch/root" --dbpath /var/lib/rpm --initdb
rpm --root "$scratch/root" --dbpath /var/lib/rpm -i --nodeps --noscripts "$rpm"
rpm --root "$scratch/root" --dbpath /var/lib/rpm -q nodeward >/dev/null || fail "rpm database lacks nodeward"
"$scratch/root/usr/bin/nodeward" --version >/dev/null
rpm --root "$scratch/root" --dbpath /var/lib/rpm -e --nodeps --noscripts nodeward
echo "package-test: .rpm listed, installed into and erased from a scratch rpm database"
echo "package-test: ok"
