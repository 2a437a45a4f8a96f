#!/usr/bin/env bash
# Issue 14, "rekube running as real pods here" (docs/real-nodes.md). One real
# Kubernetes node for the local cluster (e2e/scripts/cluster-up.sh), as root:
#
#   kubelet-node-up.sh [up]     start it (idempotent: what runs and answers is left alone)
#   kubelet-node-up.sh down     stop it and remove everything it made (kubelet-node-down.sh)
#   kubelet-node-up.sh status   what runs
#
# The node, NODE (default kubelet-node-0), is a network namespace the script creates,
# rk-NODE, with an eth0 (a veth whose peer stays in the namespace) at NODE_IP (default 172.31.251.1/24; `just up`'s nodes use
# 172.31.250.0/24) and a default route onto it (no uplink: nothing leaves the machine). In
# that namespace (nsenter --net only: mounts, cgroups and processes stay the machine's, as
# e2e/src/netns.rs's enter_on_spawn): a private containerd (Debian's 1.6, runc; root, state,
# socket under $REKUBE_CACHE/kubelet-nodes/NODE/containerd), the kubelet v1.36.3
# (build-kubernetes.sh kubelet) with the client certificate of system:node:NODE (group
# system:nodes) signed by the cluster's CA, and the pods' network: the reference CNI plugins
# (bridge kn0 + host-local over POD_CIDR, default 10.246.0.0/24, + portmap). The apiserver
# (the host's 127.0.0.1:$APISERVER_PORT) is forwarded into the namespace on 0.0.0.0:same port
# (e2e/scripts/netns-forward.py), and the `kubernetes` Service's cluster IP (10.96.0.1:443)
# is DNAT-ed there by an nft table of the namespace (`ip rekube-kubelet-node`): what a host
# cluster's kube-proxy would do for the in-cluster config of the pods (there is no kube-proxy
# here, and the apiserver advertises 127.0.0.1, which a pod cannot reach).
#
# The images are imported into that containerd (`ctr -n k8s.io images import`): a pause image
# built here from Kubernetes' own build/pause/linux/pause.c (static, gcc), busybox:1.36
# (busybox-image.sh), rekube/busybox-kubectl:v1.36.3 (the chart's helm test image), and
# rekube-controllers and rekube-node-agent from `just images` ($REKUBE_CACHE/images/*.oci.tar).
#
# The local cluster has no scheduler and its kube-controller-manager runs no workload
# controller (cluster-up.sh's KCM_CONTROLLERS): the chart's Deployment and DaemonSet need
# both, so `up` also starts kube-scheduler (build-kubernetes.sh kube-scheduler) and a second
# kube-controller-manager, `kube-controller-manager-workloads` (deployment, replicaset,
# daemonset, job for the chart's pre-delete hook, nodelifecycle: the last removes the
# not-ready taint the TaintNodesByCondition admission puts on a new Node), pids in $PIDS, logs in $LOGS. `down` stops them when no
# other kubelet node is left. Stop the node before cluster-down.sh (which knows none of this).
#
# Logs: $LOGS/kubelet-nodes/NODE/{containerd,kubelet,apiserver-forward}.log; the pods' CRI
# logs in $REKUBE_CACHE/kubelet-nodes/NODE/pods/ (`kubectl logs` cannot reach the kubelet:
# its address is inside the namespace, the apiserver is not).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/env.sh"

NODE=${REKUBE_KUBELET_NODE:-kubelet-node-0}
NODE_IP=${REKUBE_KUBELET_NODE_IP:-172.31.251.1}
NODE_PREFIX=${REKUBE_KUBELET_NODE_PREFIX:-24}
POD_CIDR=${REKUBE_KUBELET_POD_CIDR:-10.246.0.0/24}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
CNI_BIN="$REKUBE_CACHE/bin/cni-plugins-$CNI_PLUGINS_VERSION"
IMAGES="$REKUBE_CACHE/images"
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/helm/rekube/Chart.yaml")
NS="rk-$NODE"                        # the node's network namespace
DIR="$REKUBE_CACHE/kubelet-nodes/$NODE"
NODE_LOGS="$LOGS/kubelet-nodes/$NODE"
CGROUP_ROOT="kubelet-$NODE"          # the kubelet's cgroupRoot (kubepods below it)
AGENT_CGROUP="rekube-$NODE"          # the chart's nodeAgent.cgroupParent (helm-install.sh)
PAUSE_IMAGE=rekube.io/pause:3.10.2   # upstream's build/pause TAG, built here
SCHED_PORT=${REKUBE_SCHEDULER_PORT:-10259}
KCMW_PORT=${REKUBE_KCM_WORKLOADS_PORT:-10267}
export KUBECONFIG="$KUBECONFIG_FILE"
ctr_() { ctr --address "$DIR/containerd/containerd.sock" -n k8s.io "$@"; }
in_ns() { nsenter --net="/run/netns/$NS" "$@"; }

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_until() { # seconds what command...: polls every 0.5 s
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "$what: not after ${limit}s"; return 1; }
    sleep 0.5
  done
}

stop_pid() { # pid file: SIGTERM, then SIGKILL after 10 s (only the process we started)
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid ($(basename "$f" .pid)) ignored SIGTERM: killed"; kill -KILL "$pid" 2>/dev/null || true; }
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$f"
}

# --- certificates: as pki.sh's cert(), with the cluster's CA.
cert() { # name, subject
  [ -f "$PKI/$1.crt" ] && return
  (cd "$PKI"
   openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
   printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$1.ext"
   openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
     -extfile "$1.ext" -out "$1.crt" 2>/dev/null
   rm -f "$1.csr" "$1.ext")
}

# --- the workload control plane: kube-scheduler and a kube-controller-manager for the
# built-in workload controllers.
start_bg() { # pid file, log, command...
  local pidf=$1 logf=$2; shift 2
  if running "$pidf"; then log "$(basename "$pidf" .pid) already running (pid $(cat "$pidf"))"; return; fi
  setsid "$@" >>"$logf" 2>&1 </dev/null &
  echo $! > "$pidf"
  log "started $(basename "$pidf" .pid) (pid $!), log $logf"
}

workload_control_plane_up() {
  "$here/build-kubernetes.sh" kube-scheduler >/dev/null
  cert kube-scheduler "/CN=system:kube-scheduler"
  write_kubeconfig "$CLUSTER_DIR/kube-scheduler.kubeconfig" kube-scheduler
  start_bg "$PIDS/kube-scheduler.pid" "$LOGS/kube-scheduler.log" "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$CLUSTER_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --v 1
  start_bg "$PIDS/kube-controller-manager-workloads.pid" "$LOGS/kube-controller-manager-workloads.log" \
    "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --controllers deployment,replicaset,daemonset,job,nodelifecycle \
    --use-service-account-credentials=true \
    --bind-address 127.0.0.1 --secure-port "$KCMW_PORT" --leader-elect=false --v 1
  wait_until 60 "kube-scheduler healthy" curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz" \
    || { tail -n 20 "$LOGS/kube-scheduler.log" >&2; return 1; }
  wait_until 60 "kube-controller-manager-workloads healthy" curl -fsSk "https://127.0.0.1:$KCMW_PORT/healthz" \
    || { tail -n 20 "$LOGS/kube-controller-manager-workloads.log" >&2; return 1; }
}

workload_control_plane_down() {
  local other
  other=$(find "$REKUBE_CACHE/kubelet-nodes" -mindepth 3 -maxdepth 3 -path '*/pids/kubelet.pid' 2>/dev/null | grep -v "/$NODE/" || true)
  if [ -n "$other" ]; then log "other kubelet nodes still run: kube-scheduler and kube-controller-manager-workloads stay"; return; fi
  stop_pid "$PIDS/kube-scheduler.pid"
  stop_pid "$PIDS/kube-controller-manager-workloads.pid"
}

# --- the node's network namespace.
netns_up() {
  if ! ip netns list | awk '{print $1}' | grep -qx "$NS"; then
    ip netns add "$NS"
    log "created network namespace $NS"
  fi
  ip -n "$NS" link set lo up
  # No dummy driver in every kernel (this machine's has none): a veth pair with both ends in
  # the namespace, the peer unused.
  ip -n "$NS" link show eth0 >/dev/null 2>&1 || ip -n "$NS" link add eth0 type veth peer name eth0-end
  ip -n "$NS" addr replace "$NODE_IP/$NODE_PREFIX" dev eth0
  ip -n "$NS" link set eth0-end up
  ip -n "$NS" link set eth0 up
  # A node's default route (the kubelet's node IP checks, a node's own connection to a
  # cluster IP): onto eth0, where it ends.
  ip -n "$NS" route replace default dev eth0
  # The `kubernetes` Service for the pods' in-cluster config (see the header). Replaced whole.
  local svc_ip
  svc_ip=$(kubectl get svc -n default kubernetes -o jsonpath='{.spec.clusterIP}')
  in_ns nft -f - <<NFT
add table ip rekube-kubelet-node
delete table ip rekube-kubelet-node
table ip rekube-kubelet-node {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $svc_ip tcp dport 443 dnat to $NODE_IP:$APISERVER_PORT
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr $svc_ip tcp dport 443 dnat to $NODE_IP:$APISERVER_PORT
  }
}
NFT
}

forwarder_up() {
  local pidf="$DIR/pids/apiserver-forward.pid"
  if ! running "$pidf"; then
    setsid python3 "$here/netns-forward.py" --netns "/run/netns/$NS" \
      --listen "0.0.0.0:$APISERVER_PORT" --upstream "127.0.0.1:$APISERVER_PORT" \
      >>"$NODE_LOGS/apiserver-forward.log" 2>&1 </dev/null &
    echo $! > "$pidf"
  fi
  wait_until 20 "the apiserver answers inside $NS" \
    in_ns "$K8S_BIN/kubectl" --kubeconfig "$DIR/kubelet.kubeconfig" get --raw /healthz \
    || { tail -n 20 "$NODE_LOGS/apiserver-forward.log" >&2; return 1; }
  log "apiserver forwarded into $NS (127.0.0.1 and $NODE_IP:$APISERVER_PORT; pid $(cat "$pidf"))"
}

# --- cgroups: the kubelet's cgroupRoot must exist in every v1 hierarchy it checks
# (cpu, cpuacct, cpuset, memory, pids, systemd: cgroup_v1_manager_linux.go Validate).
cgroups_up() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [ "$h" = /sys/fs/cgroup/unified/ ] && continue
    mkdir -p "$h$CGROUP_ROOT"
  done
  if [ -d /sys/fs/cgroup/cpuset ]; then
    local c=/sys/fs/cgroup/cpuset
    [ -n "$(cat "$c/$CGROUP_ROOT/cpuset.cpus")" ] || cat "$c/cpuset.cpus" > "$c/$CGROUP_ROOT/cpuset.cpus"
    [ -n "$(cat "$c/$CGROUP_ROOT/cpuset.mems")" ] || cat "$c/cpuset.mems" > "$c/$CGROUP_ROOT/cpuset.mems"
  fi
  # cgroup v2 only (not this machine): one directory.
  [ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir -p "/sys/fs/cgroup/$CGROUP_ROOT" || true
}

remove_cgroups() { # a cgroup relative to each hierarchy root, and everything below it
  local rel=$1 h pid
  for pid in $(find /sys/fs/cgroup/pids/"$rel" /sys/fs/cgroup/memory/"$rel" /sys/fs/cgroup/"$rel" \
      -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  sleep 0.3
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "$h$rel" ] || continue
    find "$h$rel" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ ! -d "$h$rel" ] || log "left cgroup $h$rel (still in use?)"
  done
}

# --- images
pause_image() { # out.tar: Kubernetes' pause, static, as a docker-archive
  local out=$1 src work
  # The module build-kubernetes.sh downloaded (the proxy's zip carries build/pause too).
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION"
  [ -f "$src/build/pause/linux/pause.c" ] || { log "no build/pause/linux/pause.c in k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  work=$(mktemp -d)
  mkdir -p "$work/rootfs" "$work/archive"
  gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-rekube -o "$work/rootfs/pause" "$src/build/pause/linux/pause.c"
  strip "$work/rootfs/pause"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/archive/layer.tar" .
  local diff_id
  diff_id=$(sha256sum "$work/archive/layer.tar" | cut -d' ' -f1)
  # As upstream's image: entrypoint /pause, user 65535.
  cat > "$work/archive/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$PAUSE_IMAGE" > "$work/archive/manifest.json"
  tar -C "$work/archive" -cf "$out" manifest.json config.json layer.tar
  rm -rf "$work"
}

images_up() {
  local want=(
    "$IMAGES/rekube-controllers-$VERSION.oci.tar"
    "$IMAGES/rekube-node-agent-$VERSION.oci.tar"
  ) f
  for f in "${want[@]}"; do
    [ -f "$f" ] || { log "$f missing: run \`just images\` first"; return 1; }
  done
  mkdir -p "$DIR/images"
  [ -f "$DIR/images/pause.tar" ] || pause_image "$DIR/images/pause.tar"
  [ -f "$DIR/images/busybox.tar" ] || "$here/busybox-image.sh" "$DIR/images/busybox.tar" busybox:1.36 >/dev/null
  [ -f "$DIR/images/busybox-kubectl.tar" ] || "$here/busybox-image.sh" "$DIR/images/busybox-kubectl.tar" \
    "rekube/busybox-kubectl:$K8S_VERSION" "$K8S_BIN/kubectl" >/dev/null
  for f in "$DIR/images/pause.tar" "$DIR/images/busybox.tar" "$DIR/images/busybox-kubectl.tar" "${want[@]}"; do
    ctr_ images import "$f" >/dev/null
  done
  log "images in $NODE's containerd: $(ctr_ images ls -q | grep -v '@sha256' | tr '\n' ' ')"
}

# --- containerd and the kubelet
containerd_config() {
  local c=$DIR/containerd
  cat <<TOML
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$c/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine's root lacks CAP_SYS_RESOURCE (bench-pod-startup.sh, same setting).
  restrict_oom_score_adj = true
  # Pod network namespaces under the state dir, not the machine's /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "${RUNC:-/usr/sbin/runc}"
        Root = "$c/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$DIR/cni/net.d"
TOML
}

cni_config() {
  cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "kubelet-node",
  "plugins": [
    {"type": "bridge", "bridge": "kn0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

kubelet_config() {
  cat <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's hierarchy is cgroup v1 (docs/testing.md, "cgroup v2 in a VM"): the kubelet
# refuses v1 unless told (as bench-pod-startup.sh's).
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
podLogsDir: $DIR/pods
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# The imported images are all there is (no registry): never collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The node shares the machine's disk with the build folders: no disk eviction (as kind and
# local-nodes.rs), else DiskPressure taints the node.
evictionHard:
  memory.available: 100Mi
  nodefs.available: "0%"
  imagefs.available: "0%"
  nodefs.inodesFree: "0%"
YAML
}

node_ready() {
  [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    ! kubectl get node "$NODE" -o jsonpath='{.spec.taints[*].key}' | grep -q 'node.kubernetes.io/not-ready'
}

SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

up() {
  [ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
  local c
  for c in containerd ctr ip nft nsenter openssl python3 gcc strip go; do
    command -v "$c" >/dev/null || { log "$c missing (containerd, runc: apt-get install containerd; gcc: build-essential)"; exit 1; }
  done
  kubectl get --raw /readyz >/dev/null 2>&1 || { log "the local cluster does not answer: just cluster-up"; exit 1; }
  local t0=$SECONDS
  "$here/build-kubernetes.sh" kubelet >/dev/null
  "$here/build-kubernetes.sh" cni-plugins >/dev/null
  mkdir -p "$DIR/pids" "$DIR/containerd" "$DIR/cni/net.d" "$DIR/cni/ipam" "$DIR/kubelet" "$DIR/pods" \
    "$DIR/rekube" "$NODE_LOGS" "$PIDS"
  # Paths outside DIR that containerd (shim sockets), the kubelet (device plugin socket, log
  # symlinks) and libcni (its result cache) use whatever the flags: removed by `down` when
  # this node made them (bench-pod-startup.sh does the same).
  local d
  for d in /run/containerd /var/lib/kubelet /var/log/containers /var/lib/cni; do
    [ -e "$d" ] || grep -qx "$d" "$DIR/made-dirs" 2>/dev/null || echo "$d" >>"$DIR/made-dirs"
  done
  # The host kernel settings the kubelet rewrites (container_manager_linux.go
  # setupKernelTunables): recorded once, restored by `down`.
  if [ ! -f "$DIR/sysctls.before" ]; then
    for d in "${SYSCTLS[@]}"; do echo "$d=$(cat "/proc/sys/$d")"; done >"$DIR/sysctls.before"
  fi
  log "binaries and directories ready in $((SECONDS - t0))s"

  cert "$NODE" "/O=system:nodes/CN=system:node:$NODE"
  write_kubeconfig "$DIR/kubelet.kubeconfig" "$NODE"
  t0=$SECONDS; workload_control_plane_up
  log "kube-scheduler and kube-controller-manager-workloads healthy in $((SECONDS - t0))s"

  t0=$SECONDS; netns_up; forwarder_up
  # Bidirectional mounts (the chart's node agent) need their host path on a shared mount
  # (containerd checks it); the machine's / is private: DIR becomes a shared mount of itself.
  if ! awk -v d="$DIR" '$5 == d' /proc/self/mountinfo | grep -q shared:; then
    mountpoint -q "$DIR" || mount --bind "$DIR" "$DIR"
    mount --make-rshared "$DIR"
    log "$DIR bind-mounted onto itself, rshared"
  fi
  cgroups_up
  cni_config >"$DIR/cni/net.d/10-kubelet-node.conflist"
  log "network namespace $NS ($NODE_IP, pods $POD_CIDR), cgroups /$CGROUP_ROOT ready in $((SECONDS - t0))s"

  t0=$SECONDS
  if ! { running "$DIR/pids/containerd.pid" && ctr_ version >/dev/null 2>&1; }; then
    containerd_config >"$DIR/containerd/config.toml"
    setsid nsenter --net="/run/netns/$NS" containerd --config "$DIR/containerd/config.toml" \
      >>"$NODE_LOGS/containerd.log" 2>&1 </dev/null &
    echo $! >"$DIR/pids/containerd.pid"
    wait_until 30 "containerd answers" ctr_ version || { tail -n 20 "$NODE_LOGS/containerd.log" >&2; exit 1; }
  fi
  log "containerd $(ctr_ version 2>/dev/null | awk '/Version/ {print $2; exit}') up (pid $(cat "$DIR/pids/containerd.pid")) in $((SECONDS - t0))s"
  t0=$SECONDS; images_up; log "images imported in $((SECONDS - t0))s"

  t0=$SECONDS
  if ! running "$DIR/pids/kubelet.pid"; then
    kubelet_config >"$DIR/kubelet/config.yaml"
    setsid nsenter --net="/run/netns/$NS" "$K8S_BIN/kubelet" --config "$DIR/kubelet/config.yaml" \
      --kubeconfig "$DIR/kubelet.kubeconfig" --root-dir "$DIR/kubelet/root" \
      --hostname-override "$NODE" --node-ip "$NODE_IP" --cert-dir "$DIR/kubelet/pki" --v 1 \
      >>"$NODE_LOGS/kubelet.log" 2>&1 </dev/null &
    echo $! >"$DIR/pids/kubelet.pid"
  fi
  local last="" now
  local deadline=$((SECONDS + 120))
  until node_ready; do
    running "$DIR/pids/kubelet.pid" || { log "the kubelet exited:"; tail -n 30 "$NODE_LOGS/kubelet.log" >&2; exit 1; }
    now=$(kubectl get node "$NODE" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.reason}: {.message}{end}' 2>/dev/null || echo "not registered")
    [ "$now" = "$last" ] || { log "node $NODE: ${now:-registered}"; last=$now; }
    [ $SECONDS -lt $deadline ] || { log "node $NODE not Ready after 120s:"; tail -n 30 "$NODE_LOGS/kubelet.log" >&2; exit 1; }
    sleep 1
  done
  log "node $NODE Ready in $((SECONDS - t0))s: $(kubectl get node "$NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion} {.status.addresses[?(@.type=="InternalIP")].address}')"
  cat >&2 <<EOF
[kubelet-node-up] logs: $NODE_LOGS/ (kubelet, containerd, apiserver-forward); pods' logs: $DIR/pods/
[kubelet-node-up] next: e2e/scripts/helm-install.sh; look: ip netns exec $NS ip addr; $0 status; $0 down
EOF
}

status() {
  local p
  for p in "$DIR"/pids/*.pid "$PIDS/kube-scheduler.pid" "$PIDS/kube-controller-manager-workloads.pid"; do
    [ -f "$p" ] || continue
    if running "$p"; then echo "$(basename "$p" .pid): running (pid $(cat "$p"))"; else echo "$(basename "$p" .pid): not running"; fi
  done
  ip netns list | awk '{print $1}' | grep -qx "$NS" && echo "network namespace $NS: present" || echo "network namespace $NS: absent"
  kubectl get node "$NODE" -o wide 2>/dev/null || true
}

down() {
  [ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
  local api=0
  kubectl get --raw /readyz >/dev/null 2>&1 && api=1
  # The chart first (its DaemonSet would put its pod back), while the kubelet still runs.
  if [ $api = 1 ] && "$K8S_BIN/helm" status rekube -n rekube-system >/dev/null 2>&1; then
    log "the Helm release rekube is installed: uninstalling it first"
    "$here/helm-install.sh" uninstall || log "helm-install.sh uninstall failed: going on"
  fi
  # Every other pod bound to the node, deleted through the kubelet (it stops the sandboxes,
  # which releases their CNI attachments and network namespaces).
  if [ $api = 1 ] && running "$DIR/pids/kubelet.pid"; then
    kubectl delete pods -A --field-selector "spec.nodeName=$NODE" --wait=true --timeout=60s >/dev/null 2>&1 \
      || log "some pods of $NODE were not removed by its kubelet in time"
  fi
  stop_pid "$DIR/pids/kubelet.pid"
  local id
  if running "$DIR/pids/containerd.pid" && ctr_ version >/dev/null 2>&1; then
    # What the kubelet did not remove: tasks, then containers (bench-pod-startup.sh's order).
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid "$DIR/pids/containerd.pid"
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $DIR/containerd/containerd.sock" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # The pods' and the rekube agent's leftovers: processes in their cgroups, then the cgroups.
  remove_cgroups "$AGENT_CGROUP"
  remove_cgroups "$CGROUP_ROOT"
  stop_pid "$DIR/pids/apiserver-forward.pid"
  # Whatever still runs in the node's namespace is ours (it is the script's namespace).
  if ip netns list | awk '{print $1}' | grep -qx "$NS"; then
    for pid in $(ip netns pids "$NS" 2>/dev/null); do
      log "killing pid $pid left in $NS: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-120)"
      kill -KILL "$pid" 2>/dev/null || true
    done
    # Its nft table, bridges, veths and routes go with it.
    ip netns del "$NS"
    log "deleted network namespace $NS"
  fi
  # Mounts: the pods' (overlay roots, volumes, netns files), the kubelet's and the agent's
  # rshared binds, deepest first, then DIR's own bind.
  local m
  for m in $(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  while mountpoint -q "$DIR" 2>/dev/null; do umount "$DIR" 2>/dev/null || umount -l "$DIR"; done
  # The kubelet's log symlinks into DIR, the device plugin socket, and the directories this
  # node made outside DIR (only if empty: anything else there is not ours).
  find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
  if [ -f "$DIR/made-dirs" ]; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    xargs -r -I{} find {} -depth -type d -empty -delete <"$DIR/made-dirs" 2>/dev/null || true
  fi
  if [ -f "$DIR/sysctls.before" ]; then
    local kv
    while read -r kv; do
      [ "$(cat "/proc/sys/${kv%%=*}")" = "${kv#*=}" ] || { echo "${kv#*=}" >"/proc/sys/${kv%%=*}"; log "restored ${kv%%=*} = ${kv#*=}"; }
    done <"$DIR/sysctls.before"
  fi
  if [ $api = 1 ]; then
    kubectl delete node "$NODE" --ignore-not-found --wait=false >/dev/null || true
    kubectl -n kube-node-lease delete lease "$NODE" --ignore-not-found >/dev/null || true
  fi
  workload_control_plane_down
  # What must be gone, or the script fails naming it.
  local left=()
  pgrep -f "$DIR/" >/dev/null && left+=("processes: $(pgrep -af "$DIR/" | cut -c1-100 | tr '\n' ';')")
  awk -v d="$DIR" 'index($5, d) == 1' /proc/self/mountinfo | grep -q . && left+=("mounts under $DIR")
  for m in /sys/fs/cgroup/*/"$CGROUP_ROOT" /sys/fs/cgroup/*/"$AGENT_CGROUP"; do [ -d "$m" ] && left+=("cgroup $m"); done
  ip netns list | awk '{print $1}' | grep -qx "$NS" && left+=("network namespace $NS")
  if [ ${#left[@]} -gt 0 ]; then
    log "left behind: ${left[*]}"; exit 1
  fi
  rm -rf "$DIR"
  log "node $NODE removed (its logs stay in $NODE_LOGS)"
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac
