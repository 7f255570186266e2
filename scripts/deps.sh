#!/usr/bin/env bash
# Install the Debian packages nodeward's build, tests, benchmarks and demo need (idempotent).
set -euo pipefail

declare -A pkg_for=(
  [containerd]=containerd
  [runc]=runc
  [umoci]=umoci
  [skopeo]=skopeo
  [docker-registry]=docker-registry
  [protoc]=protobuf-compiler
  [busybox]=busybox-static
  [curl]=curl
  [setpriv]=util-linux
  [rpm]=rpm
  [lintian]=lintian
  [systemd-analyze]=systemd
  [objdump]=binutils
  [python3]=python3-venv
  [musl-gcc]=musl-tools
  [file]=file
  [iptables]=iptables
  [openssl]=openssl
  [ip]=iproute2
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
# The test bed needs the static busybox (copied into images), not a dynamic one.
if command -v busybox >/dev/null 2>&1 && ! file -L "$(command -v busybox)" 2>/dev/null | grep -q static; then
  missing+=(busybox-static)
fi
# The real cluster's pod network (scripts/cluster.sh): bridge, host-local, portmap, loopback.
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
# runc for the real cluster is built with cgo against libseccomp (scripts/cluster.sh build).
[ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo not found (install Rust with rustup)" >&2; exit 1; }
# The real cluster is built from Go modules (scripts/cluster.sh build).
command -v go >/dev/null || { echo "deps: go not found (the real cluster is built with Go >= 1.24)" >&2; exit 1; }
# The packages carry a static musl binary (scripts/package-test.sh).
rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
  rustup target add x86_64-unknown-linux-musl
# Packaging tools (scripts/package-test.sh) and cargo-deny (scripts/test.sh), cached outside the
# worktree so reruns are fast.
tools="${NODEWARD_TOOLS:-$HOME/.cache/nodeward-tools}"
for tool in cargo-deb cargo-generate-rpm cargo-deny; do
  [ -x "$tools/bin/$tool" ] || cargo install --locked --quiet --root "$tools" "$tool"
done
# Offline Kubernetes schema validation of packaging/kubernetes (tests/manifests.rs).
venv="${NODEWARD_VENV:-$HOME/.cache/nodeward-venv}"
[ -x "$venv/bin/kubernetes-validate" ] || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate
}
