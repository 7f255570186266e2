#!/usr/bin/env bash
# Demo: builds nodeward, starts a private containerd + registry, runs the agent and a Job-like pod
# with a sidecar, and shows the sidecar stopped with the measured latency. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: starting containerd needs root" >&2
  exit 1
fi
echo "==> building (cargo --profile bench: optimised, no LTO)"
cargo build -q --profile bench --bin nodeward --example demo
NODEWARD_BIN="$PWD/target/release/nodeward" exec "$PWD/target/release/examples/demo"
