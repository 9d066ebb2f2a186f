#!/usr/bin/env bash
# The real node of the local cluster: a kubelet and containerd that run real containers beside
# the kwok nodes. Sourced by up, down and status (after lib.sh), never run.
#
# What it keeps to itself, so that `down` leaves the machine as it found it:
# - containerd and the kubelet run in a mount namespace of their own (node-namespace), where
#   the kernel settings the kubelet changes at start are bind-mounted over by files holding the
#   machine's values, and where every mount they make vanishes with the namespace;
# - pods get a bridge with a private range, no IP forwarding and no NAT: nothing they send
#   leaves the bridge, and host-to-pod traffic (probes) stays on it;
# - every cgroup lives under a cgroup root named after the checkout, removed on the way down;
# - all state (images, containers, pod volumes, logs) is under the cluster's state folder.

REAL_NODE_NAME="real-node"
# Tests choose a real pod with this node selector and the toleration of REAL_NODE_TAINT; every
# other pod stays on the kwok nodes, where no image needs to exist.
REAL_NODE_LABEL="agentoperator.dev/node=real"
REAL_NODE_TAINT="agentoperator.dev/real-node=true:NoSchedule"
NODE_DIR="$STATE_DIR/node"
# Linux limits interface names to 15 characters; the checkout id keeps two checkouts apart.
NODE_BRIDGE="ao$((CHECKOUT_ID % 1000000))"
# A private /24 per checkout, outside the Service range (10.96.0.0/16).
NODE_SUBNET_PREFIX="10.$((100 + CHECKOUT_ID % 90)).$(((CHECKOUT_ID / 90) % 256))"
NODE_IP="$NODE_SUBNET_PREFIX.1"
NODE_CGROUP_ROOT="/agent-operator-$CHECKOUT_ID"
# The ClusterIP of the `kubernetes` Service (the first of 10.96.0.0/16): pods reach the API
# server there, as in any cluster, through one DNAT rule of this chain (there is no kube-proxy).
API_SERVICE_IP="10.96.0.1"
NODE_NAT_CHAIN="AO-$CHECKOUT_ID"
CONTAINERD_SOCKET="$NODE_DIR/containerd/containerd.sock"
IMAGE_CACHE_DIR="$CACHE_DIR/images"
# The sandbox image, built from Kubernetes' own pause.c by e2e/cluster/build.
PAUSE_IMAGE="localhost/agent-operator/pause:3.10"

# Debian's packages of the container runtime: containerd 1.6 (kubelet 1.37 still supports it),
# runc, and the CNI plugins (bridge, host-local, loopback).
ensure_node_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null 2>&1 || die "the real node needs ${missing[*]}; install them with your package manager"
  log "installing ${missing[*]} (Debian packages) for the real node"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$CACHE_DIR/apt-node.log" 2>&1 \
    || { apt-get update >>"$CACHE_DIR/apt-node.log" 2>&1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$CACHE_DIR/apt-node.log" 2>&1; } \
    || { tail_log "$CACHE_DIR/apt-node.log"; die "could not install ${missing[*]}"; }
}

node_pid() { cat "$NODE_DIR/$1.pid" 2>/dev/null; }
node_running() { local pid; pid="$(node_pid "$1")" && [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }

ctr_node() { ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_node_config() {
  local pki="$1" server="$2" kubelet_port="$3" healthz_port="$4"
  mkdir -p "$NODE_DIR"/{containerd,cni/net.d,cni/ipam,kubelet,pod-logs,sysctl}
  cat >"$NODE_DIR/containerd/config.toml" <<TOML
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
# Only what the CRI needs: no other snapshotters, no /opt plugins.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CONTAINERD_SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj would make runc fail.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
TOML
  cat >"$NODE_DIR/cni/net.d/10-agent-operator.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "agent-operator",
  "plugins": [{
    "type": "bridge",
    "bridge": "$NODE_BRIDGE",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$NODE_DIR/cni/ipam",
      "ranges": [[{"subnet": "$NODE_SUBNET_PREFIX.0/24", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
JSON
  cat >"$NODE_DIR/kubelet/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: kubelet
  user: {client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key"}
contexts:
- name: local
  context: {cluster: local, user: kubelet}
current-context: local
KUBECONFIG
  cat >"$NODE_DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The VM keeps its memory controller on cgroup v1 and has no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: "$NODE_CGROUP_ROOT"
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCKET"
address: "$NODE_IP"
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
# Only the API server (its client certificate is signed by the cluster's CA) may call the
# kubelet, and it asks the API server what each caller may do.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization:
  mode: Webhook
registerWithTaints:
- {key: agentoperator.dev/real-node, value: "true", effect: NoSchedule}
podLogsDir: "$NODE_DIR/pod-logs"
failSwapOn: false
# Images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
serializeImagePulls: false
maxPods: 50
YAML
}

# Starts containerd and the kubelet in their own mount namespace and waits for the Node.
start_real_node() {
  local cluster_state="$1"
  local pki="$cluster_state/pki"
  if node_running kubelet && node_running containerd; then
    log "the real node $REAL_NODE_NAME is already running"
    return 0
  fi
  stop_real_node quietly
  ensure_node_packages
  local server kubelet_port healthz_port
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  kubelet_port="$(free_port)"
  healthz_port="$(free_port)"
  write_node_config "$pki" "$server" "$kubelet_port" "$healthz_port"
  echo "$healthz_port" >"$NODE_DIR/healthz-port"

  # The bridge exists before the kubelet starts, so that its address can be the node's: the
  # kubelet refuses a loopback node IP, and the API server reaches the kubelet there.
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add name "$NODE_BRIDGE" type bridge
    ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  fi
  ip link set "$NODE_BRIDGE" up
  route_api_service "$server"

  # The kubelet wants its cgroup root to exist in every hierarchy; a new cpuset cgroup has no
  # CPUs or memory nodes until given its parent's.
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    mkdir -p "$hierarchy${NODE_CGROUP_ROOT#/}"
  done
  if [[ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$NODE_CGROUP_ROOT/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$NODE_CGROUP_ROOT/cpuset.mems"
  fi

  log "starting the real node $REAL_NODE_NAME (containerd and kubelet; logs in $NODE_DIR)"
  NODE_DIR="$NODE_DIR" CONTAINERD_SOCKET="$CONTAINERD_SOCKET" \
    KUBELET_BIN="$BIN_DIR/kubelet" NODE_NAME="$REAL_NODE_NAME" NODE_IP="$NODE_IP" \
    NODE_LABELS="${REAL_NODE_LABEL}" \
    setsid unshare --mount --propagation private "$CLUSTER_DIR/node-namespace" \
    >"$NODE_DIR/namespace.log" 2>&1 </dev/null &
  echo $! >"$NODE_DIR/namespace.pid"

  local started=$SECONDS
  until [[ -S "$CONTAINERD_SOCKET" ]] && ctr_node version >/dev/null 2>&1; do
    (( SECONDS - started < 30 )) || { tail_log "$NODE_DIR/containerd.log"; tail_log "$NODE_DIR/namespace.log"; die "containerd did not start"; }
    sleep 0.2
  done
  import_node_images
  until kubectl get node "$REAL_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; do
    (( SECONDS - started < 90 )) || { tail_log "$NODE_DIR/kubelet.log"; die "the real node did not become Ready"; }
    sleep 0.5
  done
  log "the real node $REAL_NODE_NAME is Ready at $NODE_IP in $((SECONDS - started))s"
}

# Imports every image built for the node (the pause image, e2e/images/build) that is new or
# was rebuilt since the last import.
import_node_images() {
  local archive stamp
  for archive in "$IMAGE_CACHE_DIR"/*.oci.tar; do
    [[ -f "$archive" ]] || continue
    stamp="$NODE_DIR/imported-$(basename "$archive")"
    [[ -f "$stamp" && "$stamp" -nt "$archive" ]] && continue
    ctr_node images import "$archive" >>"$NODE_DIR/images.log" 2>&1 \
      || { tail_log "$NODE_DIR/images.log"; die "could not import $archive"; }
    touch "$stamp"
  done
}

# Stops the kubelet, every container and containerd, then removes what they left: cgroups,
# iptables chains, the bridge, the Node object and the node's state.
stop_real_node() {
  local quietly="${1:-}"
  [[ -d "$NODE_DIR" ]] || return 0
  local pid
  # The kubelet first, so that it does not restart the containers stopped next.
  for component in kubelet containerd; do
    pid="$(node_pid "$component")" || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # Shims outlive containerd by design; they and their containers go with the node.
  pkill -9 -f "containerd-shim.*-address $CONTAINERD_SOCKET" 2>/dev/null || true
  local dir procs
  for dir in /sys/fs/cgroup/*"$NODE_CGROUP_ROOT"; do
    [[ -d "$dir" ]] || continue
    while read -r procs; do
      xargs -r kill -9 <"$procs" 2>/dev/null || true
    done < <(find "$dir" -name cgroup.procs)
  done
  pid="$(node_pid namespace)" && kill "$pid" 2>/dev/null || true
  for dir in /sys/fs/cgroup/*"$NODE_CGROUP_ROOT"; do
    [[ -d "$dir" ]] || continue
    for _ in $(seq 1 50); do
      find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$dir" ]] || break
      sleep 0.1
    done
  done
  remove_kubelet_iptables_chains
  unroute_api_service
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  if [[ -f "$KUBECONFIG_PATH" ]]; then
    kubectl delete node "$REAL_NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$NODE_DIR"
  [[ -n "$quietly" ]] || log "the real node $REAL_NODE_NAME is stopped"
  real_node_leftovers
}

# Fails naming anything of the node that survived it.
real_node_leftovers() {
  local left=()
  pgrep -f "containerd-shim.*-address $CONTAINERD_SOCKET" >/dev/null && left+=("container shims")
  compgen -G "/sys/fs/cgroup/*$NODE_CGROUP_ROOT" >/dev/null && left+=("cgroups $NODE_CGROUP_ROOT")
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && left+=("bridge $NODE_BRIDGE")
  grep -q " $NODE_DIR" /proc/mounts && left+=("mounts under $NODE_DIR")
  if command -v iptables >/dev/null 2>&1; then
    # Another checkout's running kubelet keeps its own KUBE-* chains.
    if ! pgrep -x kubelet >/dev/null; then
      iptables -S 2>/dev/null | grep -q '^-N KUBE-' && left+=("iptables chains KUBE-*")
    fi
    iptables -t nat -S 2>/dev/null | grep -q "^-N $NODE_NAT_CHAIN\$" && left+=("iptables chain $NODE_NAT_CHAIN")
  fi
  ((${#left[@]} == 0)) || die "the real node left behind: ${left[*]}"
}

# In-cluster clients (the operator in its pod) dial $API_SERVICE_IP:443. The API server listens
# on loopback only, so the connection is DNATed there; the bridge alone may route to loopback
# (route_localnet, a setting of the bridge that goes with it).
route_api_service() {
  local server="$1" port
  port="${server##*:}"
  command -v iptables >/dev/null 2>&1 || die "the real node needs iptables (Debian package iptables)"
  unroute_api_service
  iptables -t nat -N "$NODE_NAT_CHAIN"
  iptables -t nat -A "$NODE_NAT_CHAIN" -d "$API_SERVICE_IP/32" -p tcp --dport 443 \
    -j DNAT --to-destination "127.0.0.1:$port"
  iptables -t nat -A PREROUTING -i "$NODE_BRIDGE" -j "$NODE_NAT_CHAIN"
  echo 1 >"/proc/sys/net/ipv4/conf/$NODE_BRIDGE/route_localnet"
}

unroute_api_service() {
  command -v iptables >/dev/null 2>&1 || return 0
  while iptables -t nat -D PREROUTING -i "$NODE_BRIDGE" -j "$NODE_NAT_CHAIN" 2>/dev/null; do :; done
  iptables -t nat -F "$NODE_NAT_CHAIN" 2>/dev/null || true
  iptables -t nat -X "$NODE_NAT_CHAIN" 2>/dev/null || true
}

# The kubelet creates KUBE-* chains (canaries, KUBE-FIREWALL) in each table when an iptables
# binary exists, and jumps to some from the built-in chains: the jumps go first, then the chains.
remove_kubelet_iptables_chains() {
  local tool table rule chain
  for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null 2>&1 || continue
    for table in mangle nat filter; do
      while read -r rule; do
        # shellcheck disable=SC2086 # a rule is several words
        "$tool" -t "$table" -D ${rule#-A } 2>/dev/null || true
      done < <("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-A" && $2 !~ /^KUBE-/ && / -j KUBE-/')
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$tool" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        "$tool" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

real_node_status() {
  if [[ ! -d "$NODE_DIR" ]]; then
    echo "  real node: not started"
    return 0
  fi
  local component pid
  for component in containerd kubelet; do
    pid="$(node_pid "$component")"
    if node_running "$component"; then
      printf '  %-24s running  pid %-8s\n' "$component (real node)" "$pid"
    else
      printf '  %-24s STOPPED\n' "$component (real node)"
    fi
    printf '  %-24s log: %s\n' "" "$NODE_DIR/$component.log"
  done
  printf '  %-24s %s on bridge %s (%s.0/24), taint %s\n' "node" "$REAL_NODE_NAME" "$NODE_BRIDGE" "$NODE_SUBNET_PREFIX" "$REAL_NODE_TAINT"
}
