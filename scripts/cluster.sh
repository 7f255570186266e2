#!/usr/bin/env bash
# The test bed's real single-node Kubernetes: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and the kubelet, all built from the k8s.io/kubernetes module by tests/cluster (one
# multi-call binary), on containerd 2.x and runc built from their modules by tests/runtime (or
# Debian's containerd 1.6 with NODEWARD_CLUSTER_CONTAINERD=1.6), with a local registry serving
# busybox images.
#
#   scripts/cluster.sh build        build (or reuse) the binaries; prints their directory
#   scripts/cluster.sh up           start everything (idempotent): ready when /readyz answers, the
#                                   Node is Ready and a busybox pod runs on the CNI bridge
#   scripts/cluster.sh down         stop everything and remove every process, mount, cgroup,
#                                   interface, iptables rule and file `up` made (idempotent)
#   scripts/cluster.sh env          print the environment of the running cluster (KUBECONFIG, ...)
#   scripts/cluster.sh image BIN [NAME [PATH]]
#                                   push an image NAME (nodeward) holding BIN as PATH
#                                   (/usr/bin/nodeward); prints its reference
#   scripts/cluster.sh deploy BIN   deploy nodeward from packaging/kubernetes with that image, as a
#                                   user would (server-side apply), and wait for its rollout
#   scripts/cluster.sh lint         gofmt and go vet of tests/cluster
#   scripts/cluster.sh stop NAME    stop one component (SIGTERM, then SIGKILL after 5 s), for
#                                   fault tests: kube-apiserver, etcd, kubelet, containerd, ...
#   scripts/cluster.sh restart NAME start it again with the same command line and wait until it
#                                   serves again
#   scripts/cluster.sh kubelet-gates [GATES]
#                                   restart the kubelet with these feature gates (A=true,B=false;
#                                   none: the defaults again), e.g. EventedPLEG=true, and wait until
#                                   the Node is Ready
#
# All state lives in $NODEWARD_CLUSTER_DIR (default /tmp/nodeward-cluster). Addresses live only on
# interfaces `up` creates: the node IP on a dummy interface, pods on a CNI bridge, the service
# range routed into the dummy interface (only the `kubernetes` service answers: a DNAT rule to the
# apiserver stands in for kube-proxy; the apiserver calls webhooks at their endpoints' pod IPs,
# --enable-aggregator-routing). Nothing is downloaded but Go modules.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE="$ROOT/tests/cluster"
DIR=${NODEWARD_CLUSTER_DIR:-/tmp/nodeward-cluster}
CACHE=${NODEWARD_CLUSTER_CACHE:-$HOME/.cache/nodeward-cluster}
NODE_NAME=nodeward-node
NODE_IP=10.201.0.1
POD_CIDR=10.202.0.0/24
SERVICE_CIDR=10.203.0.0/24
SERVICE_IP=10.203.0.1
# The node IP's interface: a bridge without ports (this kernel has no dummy driver).
DUMMY=nwk8s0
BRIDGE=nwcni0
# The kubelet's pod cgroups, at its default cgroupRoot (/) as on most nodes: the agent watches
# this tree for container exits. `down` removes it from every hierarchy.
PODS_CGROUP=kubepods
REGISTRY_PORT=${NODEWARD_CLUSTER_REGISTRY_PORT:-5111}
# The container runtime: 2 (containerd 2.x and runc built from tests/runtime, what current clusters
# run) or 1.6 (Debian's containerd and runc, which the standalone test bed also runs).
CONTAINERD=${NODEWARD_CLUSTER_CONTAINERD:-2}
ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=6443
# The commented iptables rules are ours: `down` removes every rule carrying this comment.
RULE_TAG=nodeward-cluster
case "$CONTAINERD" in
2 | 1.6) ;;
*) echo "cluster: NODEWARD_CLUSTER_CONTAINERD must be 2 or 1.6" >&2; exit 2 ;;
esac
case "$DIR" in
/*/nodeward-*) ;;
*) echo "cluster: NODEWARD_CLUSTER_DIR must be an absolute path ending in nodeward-*" >&2; exit 2 ;;
esac

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------- build

RUNTIME_MODULE="$ROOT/tests/runtime"
# What the build makes: the Kubernetes multi-call binary (and its links), containerd 2.x and runc.
BUILT="k8s containerd containerd-shim-runc-v2 ctr runc"

# The cache key: everything that decides what `go build` makes (the modules and the script's build
# functions; other edits of this script do not rebuild).
build_key() {
  { cat "$MODULE/go.mod" "$MODULE/go.sum" "$MODULE/main.go" "$RUNTIME_MODULE"/*/go.mod \
    "$RUNTIME_MODULE"/*/go.sum; declare -f cmd_build build_runtime go_env; } |
    sha256sum | cut -c1-16
}

bin_dir() { echo "$CACHE/$(build_key)/bin"; }

built() {
  local b
  for b in $BUILT; do [ -x "$1/$b" ] || return 1; done
}

# go_env, go_lint
. "$ROOT/scripts/go-env.sh"

cmd_lint() { go_lint "$MODULE"; }

cmd_build() {
  local out key version minor
  out=$(bin_dir)
  if built "$out"; then
    echo "$out"
    return
  fi
  command -v go >/dev/null || die "go is not installed (the test bed builds Kubernetes from Go modules)"
  key=$(build_key)
  go_env
  version=$(cd "$MODULE" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  minor=${version#v1.}
  minor=${minor%%.*}
  # The version as upstream's hack/lib/version.sh stamps it, so /version and the Node report the
  # release (a wrong gitVersion would fail the apiserver's emulation-version check).
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "building Kubernetes $version (cold: about 10 minutes on 2 cores; cached in $CACHE/$key)"
  local start=$SECONDS tmp="$CACHE/$key.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  (cd "$MODULE" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$tmp/bin/k8s" .)
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd; do
    ln -s k8s "$tmp/bin/$c"
  done
  build_runtime "$tmp/bin"
  rm -rf "${CACHE:?}/$key"
  mv "$tmp" "$CACHE/$key"
  # Keep only this build, and the one a running cluster uses.
  local running=""
  [ -f "$DIR/bin" ] && running=$(basename "$(dirname "$(cat "$DIR/bin")")")
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{16}' \
    ! -name "$key" ! -name "${running:-none}" -exec rm -rf {} +
  log "built in $((SECONDS - start)) s: $(cd "$out" && du -h $BUILT | tr '\t\n' ' ')in $out"
  echo "$out"
}

# build_runtime DIR: containerd, its runc shim and ctr (pure Go, as upstream's Makefile builds
# them but without btrfs, which needs C headers), and runc (cgo: libseccomp), each from its own
# module in tests/runtime so that every dependency is at upstream's version.
build_runtime() {
  local out=$1 cversion rversion pkg=github.com/containerd/containerd/v2
  cversion=$(cd "$RUNTIME_MODULE/containerd" && go list -m -f '{{.Version}}' "$pkg")
  rversion=$(cd "$RUNTIME_MODULE/runc" && go list -m -f '{{.Version}}' github.com/opencontainers/runc)
  local ldflags="-s -w -X $pkg/version.Version=$cversion -X $pkg/version.Package=$pkg"
  log "building containerd $cversion and runc $rversion"
  (cd "$RUNTIME_MODULE/containerd" &&
    go build -trimpath -tags "urfave_cli_no_docs no_btrfs" -ldflags "$ldflags" -o "$out/" \
      "$pkg/cmd/containerd" "$pkg/cmd/ctr" &&
    go build -trimpath -tags "urfave_cli_no_docs no_btrfs no_grpc" -ldflags "$ldflags" \
      -o "$out/" "$pkg/cmd/containerd-shim-runc-v2")
  (cd "$RUNTIME_MODULE/runc" &&
    CGO_ENABLED=1 go build -trimpath -buildmode=pie -tags "seccomp urfave_cli_no_docs" \
      -ldflags "-s -w" -o "$out/runc" github.com/opencontainers/runc)
}

# ------------------------------------------------------------------------------------- processes

pid_of() {
  local f="$DIR/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -d "/proc/$pid" ] || return 1
  echo "$pid"
}

# start NAME ARGV...: run detached in its own session, log to logs/NAME.log, pid in pids/NAME.pid.
# The command line is kept (pids/NAME.cmd) for `restart`.
start() {
  local name=$1
  shift
  printf '%q ' "$@" >"$DIR/pids/$name.cmd"
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name.pid"
}

# wait_for WHAT SECONDS CMD...: poll CMD every 0.2 s.
wait_for() {
  local what=$1 limit=$2 i
  shift 2
  for ((i = 0; i < limit * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# alive NAME: fail with the tail of its log when NAME has exited.
alive() {
  pid_of "$1" >/dev/null && return 0
  log "$1 exited; the end of $DIR/logs/$1.log:"
  tail -n 30 "$DIR/logs/$1.log" >&2 || true
  return 1
}

# up_to NAME SECONDS CMD...: wait for CMD while NAME runs.
up_to() {
  local name=$1 limit=$2 i
  shift 2
  for ((i = 0; i < limit * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    alive "$name" || die "$name did not start"
    sleep 0.2
  done
  tail -n 30 "$DIR/logs/$name.log" >&2 || true
  die "$name not ready after $limit s ($*)"
}

# ---------------------------------------------------------------------------------------- certs

# cert NAME CN [O] [SANS]: an EC key and a certificate signed by the cluster CA.
cert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-} subj ext
  subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
  [ -n "$sans" ] && ext+=$'\n'"subjectAltName=$sans"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile <(echo "$ext") -out "$name.crt" 2>/dev/null
  rm -f "$name.csr"
}

make_certs() {
  mkdir -p "$DIR/pki"
  cd "$DIR/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj /CN=nodeward-cluster-ca -days 365 -out ca.crt \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin kubernetes-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kubelet "system:node:$NODE_NAME" system:nodes
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
}

# kubeconfig NAME: $DIR/NAME.kubeconfig for the client certificate pki/NAME.
kubeconfig() {
  local name=$1
  cat >"$DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nodeward
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $DIR/pki/$name.crt
    client-key: $DIR/pki/$name.key
contexts:
- name: nodeward
  context: {cluster: nodeward, user: $name}
current-context: nodeward
EOF
}

# --------------------------------------------------------------------------------------- images

# The cluster's base images (pause, busybox), built from the host's static busybox with umoci and
# cached per busybox build.
image_layout() {
  local key layout work applet
  key=$(stat -c '%Y-%s' /bin/busybox)
  layout="$CACHE/images-$key"
  if [ -f "$layout/index.json" ]; then
    echo "$layout"
    return
  fi
  file -L /bin/busybox | grep -q static || die "/bin/busybox is not static: install busybox-static"
  work=$(mktemp -d "$CACHE/.images-XXXXXX")
  mkdir -p "$work/busybox/bin" "$work/busybox/tmp" "$work/pause"
  cp /bin/busybox "$work/busybox/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$work/busybox/bin/$applet"
  done
  cp /bin/busybox "$work/pause/sleep"
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:busybox"
  umoci insert --image "$work/layout:busybox" "$work/busybox" / >/dev/null
  umoci config --image "$work/layout:busybox" --config.env PATH=/bin --config.cmd sh
  # The sandbox image: sleeps forever (containerd stops sandboxes with SIGKILL).
  umoci new --image "$work/layout:pause"
  umoci insert --image "$work/layout:pause" "$work/pause" / >/dev/null
  umoci config --image "$work/layout:pause" --config.entrypoint /sleep --config.entrypoint 2147483647
  umoci gc --layout "$work/layout"
  rm -rf "$layout"
  mv "$work/layout" "$layout"
  rm -rf "$work"
  echo "$layout"
}

# push LAYOUT TAG REF: copy one tag of an OCI layout into the local registry.
push() {
  skopeo copy --quiet --dest-tls-verify=false "oci:$1:$2" "docker://$3" >/dev/null
}

# ------------------------------------------------------------------------------------------- up

# The runtime's configuration, one per generation: its own root, state and sockets under $DIR,
# the local pause image, \`restrict_oom_score_adj\` (without it runc fails here: "failed to update
# /proc/self/oom_score_adj: Permission denied"), pod network namespaces under the state dir (so
# \`down\` finds them), cgroupfs as the kubelet, and the local registry over plain HTTP.
# Top-level keys both generations share (TOML: before the first table).
containerd_common() {
  cat <<EOF
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
oom_score = 0
EOF
}

# The sockets, under $DIR (the same tables in config v2 and v3).
containerd_sockets() {
  cat <<EOF
[grpc]
  address = "$DIR/run/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/run/containerd/containerd.sock.ttrpc"
[debug]
  address = "$DIR/run/containerd/debug.sock"
[metrics]
  address = ""
EOF
}

containerd_config() {
  if [ "$CONTAINERD" = 1.6 ]; then
    cat <<EOF
version = 2
$(containerd_common)
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
$(containerd_sockets)
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$DIR/containerd/opt"
  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = "$DIR/containerd/state/runc-v1"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "127.0.0.1:$REGISTRY_PORT/pause:3.10"
    restrict_oom_score_adj = true
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "$DIR/containerd/state/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$DIR/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:$REGISTRY_PORT"]
      endpoint = ["http://127.0.0.1:$REGISTRY_PORT"]
EOF
    return
  fi
  mkdir -p "$DIR/containerd/certs.d/127.0.0.1:$REGISTRY_PORT"
  cat >"$DIR/containerd/certs.d/127.0.0.1:$REGISTRY_PORT/hosts.toml" <<EOF
server = "http://127.0.0.1:$REGISTRY_PORT"
[host."http://127.0.0.1:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve", "push"]
EOF
  cat <<EOF
version = 3
$(containerd_common)
imports = []
disabled_plugins = ["io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.nri.v1.nri"]
$(containerd_sockets)
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "$DIR/containerd/opt"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "127.0.0.1:$REGISTRY_PORT/pause:3.10"
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = "$DIR/containerd/certs.d"
  [plugins.'io.containerd.transfer.v1.local']
    config_path = "$DIR/containerd/certs.d"
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    enable_cdi = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$BIN/runc"
          Root = "$DIR/containerd/state/runc"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$DIR/cni/net.d"
      max_conf_num = 1
EOF
}

write_configs() {
  mkdir -p "$DIR/registry" "$DIR/cni/net.d" "$DIR/cni/ipam" "$DIR/kubelet" "$DIR/pod-logs" \
    "$DIR/containerd/root" "$DIR/containerd/state" "$DIR/run/containerd" "$DIR/etcd"
  cat >"$DIR/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  secret: nodeward-cluster
EOF
  containerd_config >"$DIR/containerd.toml"
  cat >"$DIR/cni/net.d/10-nodeward.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "nodeward",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$DIR/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $DIR/scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$DIR/run/containerd/containerd.sock
# No systemd as PID 1 here: cgroupfs, as containerd's runc (SystemdCgroup = false).
cgroupDriver: cgroupfs
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
podLogsDir: $DIR/pod-logs
clusterDomain: cluster.local
maxPods: 250
EOF
}

network_up() {
  ip link show "$DUMMY" >/dev/null 2>&1 || ip link add "$DUMMY" type bridge
  ip addr replace "$NODE_IP/32" dev "$DUMMY"
  ip link set "$DUMMY" up
  # The service range goes into the dummy interface (dropped there), never to the default route.
  ip route replace "$SERVICE_CIDR" dev "$DUMMY"
  local chain
  for chain in OUTPUT PREROUTING; do
    iptables -w -t nat -C "$chain" -d "$SERVICE_IP/32" -p tcp --dport 443 -m comment \
      --comment "$RULE_TAG" -j DNAT --to-destination "$NODE_IP:$APISERVER_PORT" 2>/dev/null ||
      iptables -w -t nat -A "$chain" -d "$SERVICE_IP/32" -p tcp --dport 443 -m comment \
        --comment "$RULE_TAG" -j DNAT --to-destination "$NODE_IP:$APISERVER_PORT"
  done
}

cgroup_roots() {
  awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break;
         if ($(i + 1) == "cgroup" || $(i + 1) == "cgroup2") print $5 }' /proc/self/mountinfo
}

check_tools() {
  local t missing=()
  for t in containerd containerd-shim-runc-v2 runc umoci skopeo docker-registry openssl ip iptables \
    curl file setsid; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (scripts/deps.sh installs them)"
  [ "$(id -u)" -eq 0 ] || die "the cluster needs root"
}

api_ready() {
  curl -sf --max-time 2 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" \
    --key "$DIR/pki/admin.key" "https://$NODE_IP:$APISERVER_PORT/readyz" | grep -q ok
}

cluster_running() {
  local c
  for c in registry containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    pid_of "$c" >/dev/null || return 1
  done
  api_ready
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }

cmd_up() {
  check_tools
  if [ -f "$DIR/bin" ]; then
    BIN=$(cat "$DIR/bin")
    if cluster_running && [ "$(cat "$DIR/containerd-generation" 2>/dev/null)" = "$CONTAINERD" ]; then
      log "already up ($DIR)"
      return
    fi
  fi
  BIN=$(cmd_build)
  # Whatever is left of an earlier run goes first.
  cmd_down
  local start=$SECONDS layout
  mkdir -p "$DIR/logs" "$DIR/pids"
  echo "$BIN" >"$DIR/bin"
  echo "$CONTAINERD" >"$DIR/containerd-generation"
  # The kubelet links container logs into /var/log/containers; remove it on down if it makes it.
  [ -d /var/log/containers ] || touch "$DIR/made-var-log-containers"
  network_up
  make_certs
  for c in admin controller-manager scheduler kubelet; do kubeconfig "$c"; done
  write_configs

  start registry docker-registry serve "$DIR/registry.yml"
  up_to registry 10 curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/"
  layout=$(image_layout)
  push "$layout" pause "127.0.0.1:$REGISTRY_PORT/pause:3.10"
  push "$layout" busybox "127.0.0.1:$REGISTRY_PORT/busybox:1"

  if [ "$CONTAINERD" = 1.6 ]; then
    start containerd containerd --config "$DIR/containerd.toml"
  else
    # containerd finds its shim on PATH; the shim runs the runc the config names.
    start containerd env PATH="$BIN:$PATH" "$BIN/containerd" --config "$DIR/containerd.toml"
  fi
  up_to containerd 30 test -S "$DIR/run/containerd/containerd.sock"

  start etcd "$BIN/etcd" --name "$NODE_NAME" --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn --quota-backend-bytes 2147483648
  up_to etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  local pki="$DIR/pki"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --enable-aggregator-routing=true \
    --allow-privileged=true \
    --profiling=false
  up_to kube-apiserver 90 api_ready

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --controllers '*' --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --config "$DIR/scheduler.yaml" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --profiling=false
  start kubelet "$BIN/kubelet" --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --root-dir "$DIR/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"

  up_to kubelet 90 kubectl_ get node "$NODE_NAME"
  up_to kubelet 90 kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  up_to kube-controller-manager 60 kubectl_ -n default get serviceaccount default
  up_to kube-controller-manager 60 kubectl_ -n default get configmap kube-root-ca.crt
  alive kube-scheduler || die "kube-scheduler did not start"
  # The smoke test: a busybox pod on the pod network, scheduled by the scheduler.
  kubectl_ -n default run nodeward-smoke --image "127.0.0.1:$REGISTRY_PORT/busybox:1" \
    --restart Never --command -- sleep 3600 >/dev/null
  up_to kubelet 60 kubectl_ -n default wait --for=jsonpath='{.status.phase}'=Running pod/nodeward-smoke --timeout=1s
  kubectl_ -n default delete pod nodeward-smoke --grace-period 0 --wait=false >/dev/null
  log "up in $((SECONDS - start)) s: $(kubectl_ get node "$NODE_NAME" \
    -o jsonpath='{.status.nodeInfo.kubeletVersion} on {.status.nodeInfo.containerRuntimeVersion}')"
}

# ----------------------------------------------------------------------------------------- down

# Pids (not ours) whose command line names the cluster dir, or that run in the cluster's cgroups.
cluster_pids() {
  local p args
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] || [ "$p" = "$BASHPID" ] && continue
    mapfile -d '' args 2>/dev/null <"/proc/$p/cmdline" || continue
    case "${args[*]}" in *"$DIR/"*) echo "$p" ;; esac
  done
  local root
  for root in $(cgroup_roots); do
    [ -d "$root/$PODS_CGROUP" ] || continue
    find "$root/$PODS_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
}

stop_process() {
  local name=$1 pid i
  pid=$(pid_of "$name") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    [ -d "/proc/$pid" ] || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

mounts_under_dir() {
  awk -v d="$DIR" '{ if ($5 == d || index($5, d "/") == 1) print $5 }' /proc/self/mountinfo |
    awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- | uniq
}

cmd_down() {
  local c pids i mp root sock
  # The kubelet first (it would restart containers), then the control plane.
  for c in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_process "$c"
  done
  # Containers, shims, containerd and the registry: no need to be gentle with test pods.
  for i in $(seq 1 100); do
    pids=$(cluster_pids | sort -u)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  [ -z "$(cluster_pids)" ] || die "processes left: $(cluster_pids | sort -u | tr '\n' ' ')"
  for f in "$DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
    [ -f "$f" ] || continue
    sock=$(sed -n 's|^unix://||p' "$f")
    case "$sock" in /run/containerd/s/*) rm -f "$sock" ;; esac
  done
  for i in 1 2 3; do
    [ -z "$(mounts_under_dir)" ] && break
    while read -r mp; do
      mp=$(printf '%b' "${mp//\\/\\0}")
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done <<<"$(mounts_under_dir)"
  done
  [ -z "$(mounts_under_dir)" ] || die "mounts left under $DIR: $(mounts_under_dir | tr '\n' ' ')"
  for root in $(cgroup_roots); do
    [ -d "$root/$PODS_CGROUP" ] || continue
    find "$root/$PODS_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null ||
      die "cannot remove the cgroups under $root/$PODS_CGROUP"
  done
  # The pods' veths go with their network namespaces; the bridge and the dummy stay until now.
  for c in "$BRIDGE" "$DUMMY"; do
    ! ip link show "$c" >/dev/null 2>&1 || ip link delete "$c"
  done
  if command -v iptables >/dev/null; then
    for c in OUTPUT PREROUTING; do
      while iptables -w -t nat -S "$c" | grep -q -- "--comment $RULE_TAG"; do
        iptables -w -t nat -S "$c" | grep -m1 -- "--comment $RULE_TAG" | sed 's/^-A /-D /' |
          xargs iptables -w -t nat
      done
    done
  fi
  # The kubelet links every container's log into /var/log/containers.
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
  [ ! -f "$DIR/made-var-log-containers" ] || rmdir /var/log/containers 2>/dev/null || true
  rm -rf --one-file-system "$DIR"
}

# ------------------------------------------------------------------------------------------ env

cmd_env() {
  [ -f "$DIR/bin" ] || die "the cluster is not up (scripts/cluster.sh up)"
  cat <<EOF
export KUBECONFIG=$DIR/admin.kubeconfig
export NODEWARD_CLUSTER_DIR=$DIR
export NODEWARD_CLUSTER_BIN=$(cat "$DIR/bin")
export NODEWARD_CLUSTER_NODE=$NODE_NAME
export NODEWARD_CLUSTER_NODE_IP=$NODE_IP
export NODEWARD_CLUSTER_REGISTRY=127.0.0.1:$REGISTRY_PORT
export NODEWARD_CLUSTER_RUNTIME_DIR=$DIR/run
export NODEWARD_CLUSTER_CONTAINERD=$(cat "$DIR/containerd-generation")
export PATH=$(cat "$DIR/bin"):\$PATH
EOF
}

# ---------------------------------------------------------------------------------------- image

# image BIN [NAME [PATH]]: an image NAME (default nodeward) holding the static BIN as PATH
# (default /usr/bin/nodeward, the entrypoint), tagged by its content hash, as the Containerfile
# makes nodeward's (scratch base). Also for a peer's binaries (e.g. a kruise-daemon built apart).
cmd_image() {
  local bin=${1:?usage: cluster.sh image BINARY [NAME [PATH]]} name=${2:-nodeward} path=${3:-/usr/bin/nodeward}
  local tag work ref
  [ -f "$DIR/bin" ] || die "the cluster is not up (scripts/cluster.sh up)"
  file -L "$bin" | grep -q 'static' || die "$bin is not a static binary"
  tag=$(sha256sum "$bin" | cut -c1-12)
  ref="127.0.0.1:$REGISTRY_PORT/$name:$tag"
  if ! skopeo inspect --tls-verify=false "docker://$ref" >/dev/null 2>&1; then
    work=$(mktemp -d)
    mkdir -p "$work/rootfs$(dirname "$path")"
    cp "$bin" "$work/rootfs$path"
    umoci init --layout "$work/layout"
    umoci new --image "$work/layout:$name"
    umoci insert --image "$work/layout:$name" "$work/rootfs" / >/dev/null
    if [ "$name" = nodeward ]; then
      umoci config --image "$work/layout:$name" --config.entrypoint "$path" --config.cmd agent
    else
      umoci config --image "$work/layout:$name" --config.entrypoint "$path"
    fi
    push "$work/layout" "$name" "$ref"
    rm -rf "$work"
  fi
  echo "$ref"
}

# deploy BIN: packaging/kubernetes applied as it is, through an overlay that only names the image
# and points the DaemonSet's hostPath volumes at the cluster's runtime and state dirs (as a user
# with a non-default containerd socket would). kustomize takes bases by relative path only, so
# the overlay lives in the repo's target dir.
cmd_deploy() {
  local image name tag overlay="$ROOT/target/real-cluster-overlay" what
  image=$(cmd_image "${1:?usage: cluster.sh deploy BINARY}" nodeward)
  name=${image%:*}
  tag=${image##*:}
  mkdir -p "$overlay"
  cat >"$overlay/kustomization.yaml" <<EOF
# Written by scripts/cluster.sh deploy.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../packaging/kubernetes
# The tests cover the CloneSet controller too: its shipped component turns it on.
components:
  - ../../packaging/kubernetes/components/cloneset
images:
  - name: ghcr.io/nodeward/nodeward
    newName: $name
    newTag: "$tag"
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: DaemonSet
      metadata:
        name: nodeward-agent
        namespace: nodeward-system
      spec:
        template:
          spec:
            volumes:
              - name: runtime
                hostPath:
                  path: $DIR/run/containerd
              - name: state
                hostPath:
                  path: $DIR/nodeward/state
              - name: run
                hostPath:
                  path: $DIR/nodeward/run
EOF
  BIN=$(cat "$DIR/bin")
  kubectl_ apply --server-side --field-manager=nodeward-deploy -k "$overlay" >&2
  for what in daemonset/nodeward-agent deployment/nodeward-controller; do
    kubectl_ -n nodeward-system rollout status "$what" --timeout=180s >&2 || {
      kubectl_ -n nodeward-system get pods -o wide >&2
      kubectl_ -n nodeward-system logs --tail=20 --prefix -l app.kubernetes.io/part-of=nodeward >&2
      die "$what did not roll out"
    }
  done
  # The CRR webhook answers once its Service has a ready endpoint and its CA bundle is in place:
  # a server-side dry run naming no Pod is then refused by the webhook itself.
  local i
  for ((i = 0; i < 300; i++)); do
    webhook_answers && break
    sleep 0.2
  done
  webhook_answers || {
    kubectl_ -n nodeward-system logs --tail=20 --prefix -l app.kubernetes.io/name=nodeward-controller >&2
    die "the CRR admission webhook does not answer"
  }
  echo "$image"
}

webhook_answers() {
  local out
  out=$(kubectl_ create --dry-run=server -o name -f - 2>&1 <<EOF || true
apiVersion: apps.kruise.io/v1alpha1
kind: ContainerRecreateRequest
metadata: {name: webhook-probe, namespace: default}
spec: {podName: no-such-pod, containers: [{name: c}]}
EOF
)
  [[ $out == *"no found Pod"* ]]
}

# restart NAME: start a stopped component again with its command line and wait until it serves.
cmd_restart() {
  local name=${1:?usage: cluster.sh restart NAME}
  [ -f "$DIR/pids/$name.cmd" ] || die "no component $name"
  BIN=$(cat "$DIR/bin")
  stop_process "$name"
  eval "start $name $(cat "$DIR/pids/$name.cmd")"
  case "$name" in
  etcd) up_to etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health" ;;
  kube-apiserver) up_to kube-apiserver 90 api_ready ;;
  containerd) up_to containerd 30 test -S "$DIR/run/containerd/containerd.sock" ;;
  kubelet) up_to kubelet 90 kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s ;;
  *) sleep 1 && alive "$name" || die "$name did not start" ;;
  esac
}

# kubelet-gates [GATES]: the kubelet's featureGates in its config file, then a restart.
cmd_kubelet_gates() {
  local gates=${1:-} yaml="" gate
  if [ -n "$gates" ]; then
    for gate in ${gates//,/ }; do
      [[ $gate =~ ^[A-Za-z0-9]+=(true|false)$ ]] || die "not a feature gate: $gate (NAME=true|false)"
      yaml+="${yaml:+, }${gate%%=*}: ${gate#*=}"
    done
  fi
  sed -i '/^featureGates:/d' "$DIR/kubelet.yaml"
  [ -z "$yaml" ] || echo "featureGates: {$yaml}" >>"$DIR/kubelet.yaml"
  cmd_restart kubelet
  # The Node's Ready condition still shows the old kubelet for a moment: look again once the new
  # one has reported, and fail with its reason when it is not ready (e.g. an unhealthy PLEG).
  sleep 10
  if ! wait_for kubelet 60 kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s; then
    die "the kubelet with feature gates ${gates:-none} is not ready: $(grep 'Skipping pod synchronization' \
      "$DIR/logs/kubelet.log" | tail -n 1 | sed 's/.*err=//')"
  fi
  log "kubelet feature gates: ${gates:-defaults}"
}

case "${1:-}" in
build) cmd_build ;;
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
image) cmd_image "${2:-}" "${3:-}" "${4:-}" ;;
deploy) cmd_deploy "${2:-}" ;;
stop) stop_process "${2:?usage: cluster.sh stop NAME}" ;;
restart) cmd_restart "${2:-}" ;;
kubelet-gates) cmd_kubelet_gates "${2:-}" ;;
lint) cmd_lint ;;
*)
  echo "usage: $0 build|up|down|env|lint|image BINARY [NAME [PATH]]|deploy BINARY|stop NAME|restart NAME|kubelet-gates [GATES]" >&2
  exit 2
  ;;
esac
