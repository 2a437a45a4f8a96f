#!/usr/bin/env bash
# Stop the local control plane (and rekube-controllers and the nodes if `just up`
# started them) and remove its etcd data. Leaves no process behind:
# after SIGTERM (then SIGKILL) of the recorded pids, any process still running a binary
# from the cluster's binary folder is killed too. The PKI and logs are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"

# Kubelet nodes of kubelet-node-up.sh first (their containerd, kubelet, network namespace,
# and the kube-scheduler and second kube-controller-manager they brought).
for d in "$REKUBE_CACHE"/kubelet-nodes/*/; do
  compgen -G "$d/pids/*.pid" >/dev/null || continue
  REKUBE_KUBELET_NODE=$(basename "$d") "$here/kubelet-node-up.sh" down || log "kubelet node $(basename "$d") not cleaned up"
done

# The nodes' pods go first, through the API, so their agents stop and remove their
# containers (processes, mounts, cgroups, pod networks) before they stop themselves.
f="$PIDS/local-nodes.pid"
if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
  KUBECONFIG="$KUBECONFIG_FILE" timeout 90 kubectl delete rdeploy,rrs,rpod --all -A --wait=true --timeout=80s >/dev/null 2>&1 \
    || log "some pods were not cleaned up by the node agent in time"
fi

# local-nodes stops its agents, runs `rekube-node-agent cleanup` in each node's network
# namespace and deletes the namespaces: it gets a minute; the others five seconds. A
# SIGKILL goes to the process group (local-nodes' agents are in it).
for name in local-nodes rekube-controllers kube-scheduler kube-controller-manager-workloads kube-controller-manager kube-apiserver etcd; do
  f="$PIDS/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    wait=50; [ "$name" = local-nodes ] && wait=600
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $wait); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop in time: killed"; kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
done
# The nodes' namespaces, should local-nodes have been killed before deleting them.
for ns in $(ip netns list 2>/dev/null | awk '/^rk-up-/ {print $1}'); do ip netns del "$ns" && log "deleted network namespace $ns"; done
# Strays (a pid file lost, a crashed script): anything running our binaries for this
# cluster (its folder is in their flags: data dir, certificates, kubeconfigs). Other
# clusters on the machine (REKUBE_CLUSTER_DIR and ports of their own) are left alone.
strays="^$K8S_BIN/(etcd|kube-apiserver|kube-controller-manager|kube-scheduler) .*$CLUSTER_DIR/"
pkill -KILL -f "$strays" 2>/dev/null || true
sleep 0.2
if pgrep -f "$strays" >/dev/null; then
  log "processes still running:"; pgrep -af "$strays" >&2; exit 1
fi
rm -rf "$CLUSTER_DIR/etcd-data"
log "cluster down"
