#!/usr/bin/env bash
# Run rekube-node-agent (as root) in the background as the local cluster's one node, as the
# kubelet of a kind node: it registers Node `rekube-local`, heartbeats, and runs the pods
# bound to it. No registry is reachable, so a busybox image built from Debian's
# busybox-static is imported into its store first (what `kind load` does on kind).
# --proxy-mode none: the agent shares the host's network namespace, whose nftables rules
# are not rekube's to change (the service proxy runs in nodes of their own namespace).
# Idempotent; cluster-down stops it. Log: $CLUSTER_DIR/logs/rekube-node-agent.log
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
bin=${1:?usage: agent-up.sh PATH-TO-rekube-node-agent}
root="$REKUBE_CACHE/agent"
mkdir -p "$LOGS" "$PIDS" "$root"
if [ -f "$PIDS/rekube-node-agent.pid" ] && kill -0 "$(cat "$PIDS/rekube-node-agent.pid")" 2>/dev/null; then
  log "rekube-node-agent already running (pid $(cat "$PIDS/rekube-node-agent.pid"))"
  exit 0
fi
image=$(mktemp --suffix=.tar)
"$here/busybox-image.sh" "$image" busybox:1.36 >/dev/null
"$bin" image import "$image" --root "$root/images" >/dev/null
rm -f "$image"
KUBECONFIG="$KUBECONFIG_FILE" RUST_LOG=${RUST_LOG:-info} setsid "$bin" run \
  --node-name rekube-local --root-dir "$root" --pod-log-dir "$root/pods" \
  --pod-network loopback --proxy-mode none \
  >>"$LOGS/rekube-node-agent.log" 2>&1 < /dev/null &
echo $! > "$PIDS/rekube-node-agent.pid"
for _ in $(seq 100); do
  ready=$(KUBECONFIG="$KUBECONFIG_FILE" kubectl get rnode rekube-local -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  [ "$ready" = True ] && { log "rekube-node-agent ready (node rekube-local), log $LOGS/rekube-node-agent.log"; exit 0; }
  sleep 0.2
done
log "node rekube-local not ready after 20s:"; tail -n 20 "$LOGS/rekube-node-agent.log" >&2; exit 1
