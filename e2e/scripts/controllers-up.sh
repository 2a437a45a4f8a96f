#!/usr/bin/env bash
# Run rekube-controllers in the background against the local cluster, watching every
# namespace as an installed rekube does (what `just up` shows; the e2e tests, which refuse
# to run beside `just up`, start their own controllers scoped to their own namespaces).
# Idempotent; cluster-down stops it. Log: $CLUSTER_DIR/logs/rekube-controllers.log
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
bin=${1:?usage: controllers-up.sh PATH-TO-rekube-controllers}
mkdir -p "$LOGS" "$PIDS"
if [ -f "$PIDS/rekube-controllers.pid" ] && kill -0 "$(cat "$PIDS/rekube-controllers.pid")" 2>/dev/null; then
  log "rekube-controllers already running (pid $(cat "$PIDS/rekube-controllers.pid"))"
  exit 0
fi
KUBECONFIG="$KUBECONFIG_FILE" setsid "$bin" \
  --leader-elect-resource-namespace kube-system --bind-address 127.0.0.1:10258 \
  --service-cluster-ip-range 10.112.0.0/16 \
  --allocate-node-cidrs true --cluster-cidr 10.244.0.0/16 \
  >>"$LOGS/rekube-controllers.log" 2>&1 < /dev/null &
echo $! > "$PIDS/rekube-controllers.pid"
for _ in $(seq 100); do
  curl -fsS http://127.0.0.1:10258/readyz >/dev/null 2>&1 && { log "rekube-controllers ready (pid $!), log $LOGS/rekube-controllers.log"; exit 0; }
  sleep 0.2
done
log "rekube-controllers not ready after 20s:"; tail -n 20 "$LOGS/rekube-controllers.log" >&2; exit 1
