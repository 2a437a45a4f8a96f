#!/usr/bin/env bash
# The node side of `just bench-pod-startup` (e2e/src/bin/bench-pod-startup/main.rs calls it): start
# and stop one node, everything under DIR, and leave nothing behind (processes, mounts,
# containers, cgroups, the Node object). Run as root.
#
#   bench-pod-startup.sh start-rekube   DIR NODE AGENT-BIN
#   bench-pod-startup.sh stop-rekube    DIR NODE
#   bench-pod-startup.sh start-upstream DIR NODE KUBELET-BIN [KUBE-API-QPS KUBE-API-BURST]
#   bench-pod-startup.sh stop-upstream  DIR NODE
#
# rekube: rekube-node-agent run with its own root, run and log dirs and cgroup parent, and
# the busybox image (e2e/scripts/busybox-image.sh) imported into its store first.
# upstream: containerd (Debian's 1.6, runc) with its own config, root, state and socket, the
# same busybox image and a pause image made from it imported with `ctr -n k8s.io images
# import`; the kubelet (just build-kubelet) with its own --root-dir and pod log dir. No CNI:
# the benchmark's pods use hostNetwork on both sides.
#
# With STORAGE=1 a start also runs what claims need (`just bench-storage`'s claim
# workloads), after the node is up, and a stop stops it first: on both sides rekube-csi
# (CSI_BIN; the same driver binary for both) on DIR/<side>/csi/csi.sock with its
# registrar (`rekube-csi registrar`: node-driver-registrar is not served by the Go module
# proxy) in the node's plugin registration dir, and a CSIDriver `csi.rekube.io`
# (attachRequired false) of the side's API group; upstream: kube-controller-manager
# (KCM_BIN) with the PV binder and both protection controllers, and external-provisioner's
# csi-provisioner (CSI_PROVISIONER_BIN, distributed mode, --kube-api-qps/-burst
# PROVISIONER_QPS, default 1000: rekube-csi's provisioner has no client-side limit);
# rekube: rekube-controllers (CONTROLLERS_BIN) with the same three controllers and `rekube-csi
# provisioner`. Both controller managers keep their default client limits (20 QPS, burst 30).
#
# A start writes DIR/<side>/pids/<process>.pid, which the benchmark reads to measure them; a
# failed start stops what it had started. Logs stay in DIR/logs.
# RUNC names another runc for containerd (default /usr/sbin/runc), e.g. a wrapper that keeps
# runc's --log files when a sandbox fails to start.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export KUBECONFIG=${KUBECONFIG:?KUBECONFIG names the cluster}

PAUSE_IMAGE=rekube.io/bench-pause:1
log() { printf '[bench-pod-startup.sh] %s\n' "$*" >&2; }

wait_until() { # seconds what command...: polls the command every 0.2 s
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "$what: not after ${limit}s"; return 1; }
    sleep 0.2
  done
}

stop_pid() { # pid file: SIGTERM, then SIGKILL after 10 s, for the process we started
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$f"
}

unmount_under() { # every mount below a directory, deepest first
  local dir=$1 m
  for m in $(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}

remove_cgroups() { # a cgroup (relative to each v1 hierarchy) and everything below it
  local rel=$1 h pid
  # Containers a killed node left running (only after a failure) are killed first.
  for pid in $(cat /sys/fs/cgroup/pids/"$rel"/{,*/,*/*/,*/*/*/}cgroup.procs 2>/dev/null | sort -u); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  sleep 0.2
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$rel" ] || continue
    find "$h$rel" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ ! -d "$h$rel" ] || log "left cgroup $h$rel (still in use?)"
  done
}

busybox_images() { # DIR: busybox.tar (busybox:1.36) and pause.tar (its command a long sleep)
  local dir=$1 work
  "$here/busybox-image.sh" "$dir/busybox.tar" busybox:1.36 >/dev/null
  work=$(mktemp -d)
  tar -C "$work" -xf "$dir/busybox.tar"
  # The sandbox's only job is to hold the pod's namespaces until it is killed.
  sed -i 's/"Cmd":\["sh"\]/"Cmd":["\/bin\/sleep","2147483647"]/' "$work/config.json"
  sed -i "s|busybox:1.36|$PAUSE_IMAGE|" "$work/manifest.json"
  tar -C "$work" -cf "$dir/pause.tar" manifest.json config.json layer.tar
  rm -rf "$work"
}

start_rekube() {
  local dir=$1 node=$2 bin=$3 side=$1/rekube
  mkdir -p "$side/pids" "$dir/logs"
  trap "stop_rekube '$dir' '$node'" EXIT
  busybox_images "$side"
  "$bin" image import "$side/busybox.tar" --root "$side/root/images" >/dev/null
  RUST_LOG=${RUST_LOG:-info} setsid "$bin" run --node-name "$node" \
    --root-dir "$side/root" --run-dir "$side/run" --pod-log-dir "$side/pods" \
    --cgroup-parent rekube-bench-pod-startup --pod-network loopback --eviction-hard 'memory.available<100Mi,nodefs.available<5%' \
    --proxy-mode none \
    >"$dir/logs/rekube-node-agent.log" 2>&1 </dev/null &
  echo $! >"$side/pids/rekube-node-agent.pid"
  node_ready() {
    [ "$(kubectl get rnode "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
  }
  wait_until 60 "rekube node $node Ready" node_ready || { tail -n 20 "$dir/logs/rekube-node-agent.log" >&2; false; }
  log "rekube-node-agent up (node $node, pid $(cat "$side/pids/rekube-node-agent.pid"))"
  [ "${STORAGE:-}" != 1 ] || start_storage_rekube "$dir" "$node"
  trap - EXIT
}

stop_rekube() {
  local dir=$1 node=$2 side=$1/rekube
  stop_storage "$side" csidrivers.rekube.io
  stop_pid "$side/pids/rekube-node-agent.pid"
  unmount_under "$side"
  remove_cgroups rekube-bench-pod-startup
  kubectl delete rnode "$node" --ignore-not-found --wait=false >/dev/null || true
  kubectl -n rekube-node-lease delete lease "$node" --ignore-not-found >/dev/null || true
  rm -rf "$side"
  log "rekube side stopped and removed"
}

# --- storage (STORAGE=1)
CSI_DRIVER=csi.rekube.io

start_csi() { # side dir, node, plugin registration dir, log prefix
  local side=$1 node=$2 reg=$3 logs=$4
  mkdir -p "$side/csi/state" "$reg"
  setsid "${CSI_BIN:?CSI_BIN names rekube-csi}" --endpoint "unix://$side/csi/csi.sock" \
    --node-id "$node" --state-dir "$side/csi/state" --capacity 1Ti \
    >"$logs-rekube-csi.log" 2>&1 </dev/null &
  echo $! >"$side/pids/rekube-csi.pid"
  wait_until 30 "rekube-csi serves $side/csi/csi.sock" test -S "$side/csi/csi.sock"
  setsid "$CSI_BIN" registrar --csi-address "$side/csi/csi.sock" \
    --kubelet-registration-path "$side/csi/csi.sock" --plugin-registration-path "$reg" \
    >"$logs-registrar.log" 2>&1 </dev/null &
  echo $! >"$side/pids/registrar.pid"
}

csi_driver_object() { # apiVersion
  cat <<YAML
apiVersion: $1
kind: CSIDriver
metadata: {name: $CSI_DRIVER, labels: {app: bench-pod-startup}}
spec: {attachRequired: false, podInfoOnMount: false}
YAML
}

start_storage_upstream() {
  local dir=$1 node=$2 side=$1/upstream
  csi_driver_object storage.k8s.io/v1 | kubectl apply -f - >/dev/null
  start_csi "$side" "$node" "$side/kubelet/root/plugins_registry" "$dir/logs/upstream"
  registered() { kubectl get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' | grep -qw "$CSI_DRIVER"; }
  wait_until 60 "the kubelet registers $CSI_DRIVER" registered || { tail -n 20 "$dir/logs/upstream-registrar.log" >&2; false; }
  setsid "${KCM_BIN:?KCM_BIN names kube-controller-manager}" --kubeconfig "$KUBECONFIG" \
    --controllers persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller \
    --leader-elect=false --secure-port 0 --v 1 \
    >"$dir/logs/upstream-kube-controller-manager.log" 2>&1 </dev/null &
  echo $! >"$side/pids/kube-controller-manager.pid"
  NODE_NAME=$node setsid "${CSI_PROVISIONER_BIN:?CSI_PROVISIONER_BIN names csi-provisioner}" \
    --csi-address "$side/csi/csi.sock" --kubeconfig "$KUBECONFIG" --node-deployment \
    --feature-gates Topology=true --kube-api-qps "${PROVISIONER_QPS:-1000}" \
    --kube-api-burst "${PROVISIONER_QPS:-1000}" --v 1 \
    >"$dir/logs/upstream-csi-provisioner.log" 2>&1 </dev/null &
  echo $! >"$side/pids/csi-provisioner.pid"
  sleep 1
  local p
  for p in kube-controller-manager csi-provisioner; do
    kill -0 "$(cat "$side/pids/$p.pid")" || { log "$p exited"; tail -n 20 "$dir/logs/upstream-$p.log" >&2; return 1; }
  done
  log "storage up: rekube-csi, registrar, kube-controller-manager (PV binder, protection), csi-provisioner"
}

start_storage_rekube() {
  local dir=$1 node=$2 side=$1/rekube
  csi_driver_object rekube.io/v1 | kubectl apply -f - >/dev/null
  start_csi "$side" "$node" "$side/root/plugins_registry" "$dir/logs/rekube"
  registered() { kubectl get rnode "$node" -o jsonpath='{.metadata.annotations.csi\.volume\.kubernetes\.io/nodeid}' | grep -q "$CSI_DRIVER"; }
  wait_until 60 "the agent registers $CSI_DRIVER" registered || { tail -n 20 "$dir/logs/rekube-registrar.log" >&2; false; }
  RUST_LOG=${RUST_LOG:-info} setsid "${CONTROLLERS_BIN:?CONTROLLERS_BIN names rekube-controllers}" \
    --controllers persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller \
    --leader-elect=false --bind-address 127.0.0.1:$(free_port) \
    >"$dir/logs/rekube-controllers.log" 2>&1 </dev/null &
  echo $! >"$side/pids/rekube-controllers.pid"
  RUST_LOG=${RUST_LOG:-info} setsid "$CSI_BIN" provisioner --endpoint "unix://$side/csi/csi.sock" \
    --node-id "$node" >"$dir/logs/rekube-provisioner.log" 2>&1 </dev/null &
  echo $! >"$side/pids/rekube-csi-provisioner.pid"
  sleep 1
  local p
  for p in rekube-controllers rekube-csi-provisioner; do
    kill -0 "$(cat "$side/pids/$p.pid")" || { log "$p exited"; return 1; }
  done
  log "storage up: rekube-csi, registrar, rekube-controllers (PV binder, protection), rekube-csi provisioner"
}

stop_storage() { # side dir, CSIDriver resource
  local side=$1 f loop
  for f in csi-provisioner rekube-csi-provisioner kube-controller-manager rekube-controllers registrar rekube-csi; do
    stop_pid "$side/pids/$f.pid"
  done
  # Loop devices of local-disk volumes a failed run left attached.
  if [ -d "$side/csi/state" ]; then
    for loop in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v d="$side/csi/state/" 'index($2, d) == 1 {print $1}'); do
      losetup -d "$loop" 2>/dev/null || true
    done
  fi
  kubectl delete "$2" "$CSI_DRIVER" --ignore-not-found >/dev/null 2>&1 || true
}

containerd_config() { # side dir
  local c=$1/containerd
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
  # This machine's root lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj to the
  # kubelet's -998 for sandboxes; containerd then clamps it to its own (as when rootless).
  restrict_oom_score_adj = true
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
    bin_dir = "$1/cni/bin"
    conf_dir = "$1/cni/net.d"
TOML
}

kubelet_config() { # side dir, qps, burst
  cat <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$1/containerd/containerd.sock
podLogsDir: $1/pods
address: 127.0.0.1
port: $(free_port)
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(free_port)
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
kubeAPIQPS: $2
kubeAPIBurst: $3
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The development VM's disk is 72% full: upstream's default imagefs.available<15% would evict
# every pod. rekube-node-agent gets the same thresholds (--eviction-hard).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 5%
  imagefs.available: 5%
  nodefs.inodesFree: 5%
YAML
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_upstream() {
  local dir=$1 node=$2 bin=$3 qps=${4:-50} burst=${5:-100} side=$1/upstream
  mkdir -p "$side/pids" "$side/containerd" "$side/cni/bin" "$side/cni/net.d" "$side/kubelet" "$dir/logs"
  # Paths outside DIR that containerd (shim sockets) and the kubelet (device plugin socket,
  # log symlinks) use whatever the flags: removed at the end when this run made them.
  local d
  for d in /run/containerd /var/lib/kubelet /var/log/containers; do
    [ -e "$d" ] || echo "$d" >>"$side/made-dirs"
  done
  trap "stop_upstream '$dir' '$node'" EXIT
  command -v containerd >/dev/null || { log "containerd missing: apt-get install containerd"; false; }
  containerd_config "$side" >"$side/containerd/config.toml"
  setsid containerd --config "$side/containerd/config.toml" \
    >"$dir/logs/containerd.log" 2>&1 </dev/null &
  echo $! >"$side/pids/containerd.pid"
  local ctr=(ctr --address "$side/containerd/containerd.sock" -n k8s.io)
  wait_until 30 "containerd answers" "${ctr[@]}" version
  busybox_images "$side"
  "${ctr[@]}" images import "$side/busybox.tar" >/dev/null
  "${ctr[@]}" images import "$side/pause.tar" >/dev/null
  kubelet_config "$side" "$qps" "$burst" >"$side/kubelet/config.yaml"
  setsid "$bin" --config "$side/kubelet/config.yaml" --kubeconfig "$KUBECONFIG" \
    --root-dir "$side/kubelet/root" --hostname-override "$node" \
    --cert-dir "$side/kubelet/pki" --v 1 \
    >"$dir/logs/kubelet.log" 2>&1 </dev/null &
  echo $! >"$side/pids/kubelet.pid"
  # containerd reports NetworkReady=false without a CNI config, so the node stays NotReady;
  # the kubelet still runs hostNetwork pods. Wait for the node's registration and the
  # kubelet's first status instead.
  node_registered() {
    kill -0 "$(cat "$side/pids/kubelet.pid")" &&
      [ -n "$(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')" ]
  }
  wait_until 90 "kubelet registers node $node" node_registered || { tail -n 30 "$dir/logs/kubelet.log" >&2; false; }
  log "containerd and kubelet up (node $node: $(kubectl get node "$node" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}'))"
  [ "${STORAGE:-}" != 1 ] || start_storage_upstream "$dir" "$node"
  trap - EXIT
}

stop_upstream() {
  local dir=$1 node=$2 side=$1/upstream
  stop_storage "$side" csidrivers.storage.k8s.io
  stop_pid "$side/pids/kubelet.pid"
  local ctr=(ctr --address "$side/containerd/containerd.sock" -n k8s.io) id
  if [ -f "$side/pids/containerd.pid" ] && "${ctr[@]}" version >/dev/null 2>&1; then
    # What the kubelet did not remove (sandboxes, exited containers): tasks, then containers.
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do
      "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
    local left
    left=$("${ctr[@]}" containers ls -q 2>/dev/null | wc -l)
    [ "$left" = 0 ] || log "$left containerd containers left"
  fi
  stop_pid "$side/pids/containerd.pid"
  # Shims of our containerd (their command line names its socket) outlive it.
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $side/containerd/containerd.sock" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  unmount_under "$side"
  remove_cgroups kubepods
  rm -f /var/log/containers/*_bench-pod-startup-upstream_*.log
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  if [ -f "$side/made-dirs" ]; then
    # Only empty directories: anything else there is not ours.
    xargs -r -I{} find {} -depth -type d -empty -delete <"$side/made-dirs" 2>/dev/null || true
  fi
  kubectl delete node "$node" --ignore-not-found --wait=false >/dev/null || true
  rm -rf "$side"
  log "upstream side stopped and removed"
}

cmd=${1:-}; shift || true
case $cmd in
  start-rekube) start_rekube "${1:?DIR}" "${2:?NODE}" "${3:?AGENT-BIN}" ;;
  stop-rekube) stop_rekube "${1:?DIR}" "${2:?NODE}" ;;
  start-upstream) start_upstream "${1:?DIR}" "${2:?NODE}" "${3:?KUBELET-BIN}" "${4:-50}" "${5:-100}" ;;
  stop-upstream) stop_upstream "${1:?DIR}" "${2:?NODE}" ;;
  *) echo "usage: $0 start-rekube|stop-rekube|start-upstream|stop-upstream DIR NODE [BIN [QPS BURST]]" >&2; exit 2 ;;
esac
