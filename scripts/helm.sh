#!/usr/bin/env bash
# helm (Helm v4) for the test bed, built from the helm.sh/helm/v4 module by tests/helm (upstream's
# cmd/helm at one exact release, with upstream's own dependency versions and release ldflags).
#
#   scripts/helm.sh build           build (or reuse) the binary; prints its path
#   scripts/helm.sh path            print where `build` puts the binary (built or not)
#   scripts/helm.sh lint            gofmt and go vet of tests/helm
#
# The binary lives in $NODEWARD_HELM_CACHE (default ~/.cache/nodeward-helm)/KEY/bin/helm, KEY a hash
# of what decides the build; Go's caches are the ones scripts/cluster.sh uses ($NODEWARD_GOCACHE,
# $NODEWARD_GOMODCACHE). Nothing is downloaded but Go modules.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE="$ROOT/tests/helm"
CACHE=${NODEWARD_HELM_CACHE:-$HOME/.cache/nodeward-helm}
PKG=helm.sh/helm/v4

log() { printf 'helm: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# The cache key: everything that decides what `go build` makes (the module and the script's build
# functions; other edits of this script do not rebuild).
build_key() {
  { cat "$MODULE/go.mod" "$MODULE/go.sum"; declare -f cmd_build go_env; } | sha256sum | cut -c1-16
}

bin_path() { echo "$CACHE/$(build_key)/bin/helm"; }

# go_env (the caches scripts/cluster.sh uses), go_lint
. "$ROOT/scripts/go-env.sh"

cmd_lint() { go_lint "$MODULE"; }

cmd_build() {
  local out key version
  out=$(bin_path)
  if [ -x "$out" ]; then
    echo "$out"
    return
  fi
  command -v go >/dev/null || die "go is not installed (the test bed builds helm from Go modules)"
  key=$(build_key)
  go_env
  version=$(cd "$MODULE" && go list -m -f '{{.Version}}' "$PKG")
  # As upstream's Makefile builds a release tag (no cgo, -trimpath, -s -w, the tag as version, no
  # metadata), so `helm version` reports the release; the module carries no git commit.
  local ldflags="-s -w -X $PKG/internal/version.version=$version"
  ldflags+=" -X $PKG/internal/version.metadata= -X $PKG/internal/version.gitTreeState=clean"
  log "building helm $version (cold: a few minutes on 2 cores; cached in $CACHE/$key)"
  local start=$SECONDS tmp="$CACHE/$key.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  (cd "$MODULE" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/helm" "$PKG/cmd/helm")
  rm -rf "${CACHE:?}/$key"
  mv "$tmp" "$CACHE/$key"
  # Keep only this build.
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{16}' \
    ! -name "$key" -exec rm -rf {} +
  log "built in $((SECONDS - start)) s: $(du -h "$out" | cut -f1) in $out"
  echo "$out"
}

case "${1:-}" in
build) cmd_build ;;
path) bin_path ;;
lint) cmd_lint ;;
*)
  echo "usage: $0 build|path|lint" >&2
  exit 2
  ;;
esac
