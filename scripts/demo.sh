#!/usr/bin/env bash
# Demo, as root on a fresh Debian machine; cleans up after itself.
#   ./scripts/demo.sh           builds nodeward, starts a private containerd + registry, runs the
#                               agent and a Job-like pod with a sidecar, and shows the sidecar
#                               stopped with the measured latency.
#   ./scripts/demo.sh cluster   the same on a real single-node Kubernetes (scripts/cluster.sh; the
#                               first run builds Kubernetes from Go modules): nodeward deployed
#                               from packaging/kubernetes, a real Job with a sidecar, the sidecar
#                               stopped and the Job Complete, with the latency.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: starting containerd needs root" >&2
  exit 1
fi
if [ "${1:-}" != cluster ]; then
  echo "==> building (cargo --profile bench: optimised, no LTO)"
  cargo build -q --profile bench --bin nodeward --example demo
  NODEWARD_BIN="$PWD/target/release/nodeward" exec "$PWD/target/release/examples/demo"
fi

echo "==> starting the real single-node Kubernetes (scripts/cluster.sh up)"
trap './scripts/cluster.sh down' EXIT
./scripts/cluster.sh up
eval "$(./scripts/cluster.sh env)"
echo "==> building the static agent and deploying packaging/kubernetes with it"
cargo build -q --release --target x86_64-unknown-linux-musl --bin nodeward
./scripts/cluster.sh deploy target/x86_64-unknown-linux-musl/release/nodeward
kubectl -n nodeward-system get pods -o wide
echo "==> a Job whose main container exits after 3 s, with a sidecar marked"
echo "    KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT=true that would run forever"
kubectl create namespace demo >/dev/null
kubectl -n demo get serviceaccount default >/dev/null 2>&1 || sleep 2
kubectl -n demo apply -f - <<JOB
apiVersion: batch/v1
kind: Job
metadata: {name: demo}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - {name: main, image: $NODEWARD_CLUSTER_REGISTRY/busybox:1, command: [sh, -c, "sleep 3"]}
        - name: proxy
          image: $NODEWARD_CLUSTER_REGISTRY/busybox:1
          command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
          env: [{name: KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT, value: "true"}]
JOB
kubectl -n demo wait --for=condition=complete job/demo --timeout=120s
kubectl -n demo get job,pods
kubectl -n demo get pods -o jsonpath='{range .items[0].status.containerStatuses[*]}{.name}: {.state.terminated.reason} (exit {.state.terminated.exitCode}){"\n"}{end}'
kubectl -n demo get pods -o jsonpath='{range .items[0].status.conditions[?(@.type=="SidecarTerminated")]}condition SidecarTerminated={.status}: {.message}{"\n"}{end}'
echo "==> the agent's own account (main exit seen → sidecar stopped)"
kubectl -n nodeward-system logs ds/nodeward-agent | grep '"sidecar stopped"' | tail -n 1
