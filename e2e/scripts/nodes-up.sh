#!/usr/bin/env bash
# Run the local cluster's nodes (as root) in the background: NODES nodes, each a network
# namespace of its own (rk-up-n0, rk-up-n1, … on a switch with no uplink, addresses
# 172.31.250.1, .2, …) with a rekube-node-agent in it as the node's kubelet and
# kube-proxy (the CNI pod network, routes between the nodes' pod CIDRs, the nftables
# service proxy): e2e/src/bin/local-nodes.rs. Idempotent; cluster-down stops it, which
# cleans up the namespaces, rules and cgroups. Logs: $CLUSTER_DIR/logs/nodes/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
nodes=${1:?usage: nodes-up.sh NODES PATH-TO-rekube-node-agent PATH-TO-local-nodes}
agent=${2:?usage: nodes-up.sh NODES PATH-TO-rekube-node-agent PATH-TO-local-nodes}
bin=${3:?usage: nodes-up.sh NODES PATH-TO-rekube-node-agent PATH-TO-local-nodes}
mkdir -p "$LOGS/nodes" "$PIDS"
pidfile="$PIDS/local-nodes.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  log "local-nodes already running (pid $(cat "$pidfile"))"
  exit 0
fi
KUBECONFIG="$KUBECONFIG_FILE" RUST_LOG=${RUST_LOG:-info} setsid "$bin" --nodes "$nodes" \
  --agent "$agent" --root "$REKUBE_CACHE/nodes" --logs "$LOGS/nodes" \
  >>"$LOGS/local-nodes.log" 2>&1 < /dev/null &
pid=$!
echo $pid > "$pidfile"
for i in $(seq 0 $((nodes - 1))); do
  for _ in $(seq 150); do
    kill -0 $pid 2>/dev/null || { log "local-nodes stopped:"; tail -n 20 "$LOGS/local-nodes.log" >&2; exit 1; }
    ready=$(KUBECONFIG="$KUBECONFIG_FILE" kubectl get rnode "rekube-node-$i" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$ready" = True ] && break
    sleep 0.2
  done
  [ "$ready" = True ] || { log "node rekube-node-$i not ready after 30s:"; tail -n 20 "$LOGS/nodes/rekube-node-$i.log" >&2; exit 1; }
done
log "$nodes nodes ready: $(KUBECONFIG="$KUBECONFIG_FILE" kubectl get rnode -o name | tr '\n' ' ')(logs in $LOGS/nodes)"
