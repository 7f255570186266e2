#!/usr/bin/env bash
# Cluster-mode scenarios against a real Kubernetes cluster made with kind (not run in CI here: no
# Docker engine or apiserver can run on the CI machines). Needs: KUBECONFIG pointing at a kind
# cluster, kubectl, kind and docker.
#
# What it does: builds the image from the Containerfile, loads it into the kind nodes, deploys
# packaging/kubernetes (CRDs, RBAC, agent DaemonSet, controller Deployment) with that image, waits
# for both to be ready, then plays the upstream sidecar-terminator e2e matrix and the virtual-node
# image swap, and removes everything. NODEWARD_E2E_HOSTPID=1 deploys the hostPID overlay instead.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBECONFIG:?set KUBECONFIG to a kind cluster}"
IMAGE=${NODEWARD_E2E_IMAGE:-nodeward:e2e}
KIND_CLUSTER=${KIND_CLUSTER:-kind}
NS=nodeward-e2e
NODE=${NODEWARD_E2E_NODE:-$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')}
SOURCE=packaging/kubernetes
[ "${NODEWARD_E2E_HOSTPID:-0}" = 1 ] && SOURCE=packaging/kubernetes-overlays/hostpid

render() { kubectl kustomize "$SOURCE" | sed "s#image: ghcr.io/nodeward/nodeward:.*#image: $IMAGE#"; }
cleanup() {
  set +e
  kubectl delete ns "$NS" --wait=false >/dev/null 2>&1
  kubectl delete node vk-e2e >/dev/null 2>&1
  render | kubectl delete --ignore-not-found -f - >/dev/null 2>&1
}
trap cleanup EXIT

echo "==> image $IMAGE"
docker build -q -f Containerfile -t "$IMAGE" . >/dev/null
kind load docker-image --name "$KIND_CLUSTER" "$IMAGE"
echo "==> deploy $SOURCE"
render | kubectl apply -f - >/dev/null
kubectl -n nodeward-system rollout status daemonset/nodeward-agent --timeout=300s
kubectl -n nodeward-system rollout status deployment/nodeward-controller --timeout=300s
kubectl create ns "$NS" >/dev/null

job() { # name policy main-script sidecar-extra-env
  cat <<YAML | kubectl -n "$NS" apply -f - >/dev/null
apiVersion: batch/v1
kind: Job
metadata: {name: $1}
spec:
  backoffLimit: 3
  template:
    spec:
      nodeName: $NODE
      restartPolicy: $2
      containers:
      - {name: main, image: busybox:1.36, command: [sh, -c, "$3"]}
      - name: sidecar
        image: busybox:1.36
        command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
        env:
        - {name: KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT, value: "true"}
$4
YAML
}
job never-ok Never "sleep 5" ""
job never-ignore Never "sleep 5" "        - {name: KRUISE_TERMINATE_SIDECAR_IGNORE_EXIT_CODE, value: \"true\"}"
job onfailure-ok OnFailure "sleep 5" ""
job onfailure-fail OnFailure "sleep 5; exit 1" ""

expect() { # job condition
  kubectl -n "$NS" wait "job/$1" --for="condition=$2" --timeout=600s >/dev/null && echo "    ok: $1 -> $2"
}
expect never-ok Complete
expect never-ignore Complete
expect onfailure-ok Complete
expect onfailure-fail Failed
echo "==> pods report SidecarTerminated"
kubectl -n "$NS" get pods -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="SidecarTerminated")].status}{"\n"}{end}'
kubectl -n "$NS" get events --field-selector reason=SidecarTerminated

echo "==> virtual node: the controller swaps the sidecar image"
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: vk-e2e, labels: {type: virtual-kubelet}}
YAML
kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: vk-job}
spec:
  nodeName: vk-e2e
  restartPolicy: Never
  tolerations: [{operator: Exists}]
  containers:
  - {name: main, image: busybox:1.36}
  - name: sidecar
    image: busybox:1.36
    env: [{name: KRUISE_TERMINATE_SIDECAR_WHEN_JOB_EXIT_WITH_IMAGE, value: "busybox:1.36-quick-exit"}]
YAML
kubectl -n "$NS" patch pod vk-job --subresource=status --type=merge -p '{"status":{"phase":"Running","containerStatuses":[
  {"name":"main","image":"busybox:1.36","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0}}},
  {"name":"sidecar","image":"busybox:1.36","imageID":"","ready":true,"restartCount":0,"state":{"running":{}}}]}}'
for _ in $(seq 60); do
  img=$(kubectl -n "$NS" get pod vk-job -o jsonpath='{.spec.containers[1].image}')
  [ "$img" = "busybox:1.36-quick-exit" ] && { echo "    ok: image swapped"; break; }
  sleep 1
done
[ "$img" = "busybox:1.36-quick-exit" ] || { echo "image not swapped" >&2; exit 1; }
echo "e2e-kind: all scenarios passed"
