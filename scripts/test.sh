#!/usr/bin/env bash
# The one test command: installs what is missing, then fmt, clippy -D warnings, cargo deny, gofmt and go vet
# (the cluster's and helm's Go modules), builds helm,
# and every test: the integration tests against a real containerd started by the tests
# themselves, and tests/real_cluster.rs on the real single-node Kubernetes of scripts/cluster.sh
# (built from Go modules, cached in ~/.cache/nodeward-cluster), which this script starts and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the real-runtime tests start containerd and need root" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Licenses, banned/duplicate crates and sources (deny.toml), offline; advisories need the
# RustSec database from GitHub, which this machine cannot reach. cargo deny reads every crate of
# Cargo.lock, also those only other platforms build (a fresh registry lacks them): fetch first.
cargo fetch --locked
PATH="${NODEWARD_TOOLS:-$HOME/.cache/nodeward-tools}/bin:$PATH" cargo deny --offline -L error check licenses bans sources
./scripts/cluster.sh lint
./scripts/helm.sh lint
# helm (for tests/chart.rs and the chart on the real cluster), built from its Go module once.
./scripts/helm.sh build >/dev/null
# A cluster that cannot start fails here with its reason (never a skipped test).
trap './scripts/cluster.sh down' EXIT
./scripts/cluster.sh up
cargo test --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}"
./scripts/cluster.sh down
trap - EXIT
# Test beds tear themselves down from a guard process when a test binary exits; wait for them.
for _ in $(seq 1 300); do
  pgrep -f nodeward-testbed-guard >/dev/null || break
  sleep 0.1
done
if grep -q nodeward-tb- /proc/self/mountinfo; then
  echo "test.sh: mounts left behind:" >&2
  grep nodeward-tb- /proc/self/mountinfo >&2
  exit 1
fi
if [ "${NODEWARD_SKIP_PACKAGE_TEST:-0}" = 1 ]; then
  echo "test.sh: package test skipped (NODEWARD_SKIP_PACKAGE_TEST=1)"
else
  ./scripts/package-test.sh
fi
echo "test.sh: all checks passed"
