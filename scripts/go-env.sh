# Sourced by scripts/cluster.sh and scripts/helm.sh (not run): the environment every Go module
# of the test bed builds in (the shared module and build caches, no cgo, the go.sum as written),
# and their lint. The caller defines `die`.

go_env() {
  export GOMODCACHE=${NODEWARD_GOMODCACHE:-$HOME/.cache/go-mod}
  export GOCACHE=${NODEWARD_GOCACHE:-$HOME/.cache/go-build}
  export GOFLAGS=-mod=readonly CGO_ENABLED=0
}

# go_lint DIR: gofmt and go vet of the module in DIR.
go_lint() {
  local unformatted
  go_env
  unformatted=$(gofmt -l "$1")
  [ -z "$unformatted" ] || die "gofmt: $unformatted"
  (cd "$1" && go vet ./...)
}
