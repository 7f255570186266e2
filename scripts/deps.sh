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
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
# The test bed needs the static busybox (copied into images), not a dynamic one.
if command -v busybox >/dev/null 2>&1 && ! file -L "$(command -v busybox)" 2>/dev/null | grep -q static; then
  missing+=(busybox-static)
fi
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo not found (install Rust with rustup)" >&2; exit 1; }
