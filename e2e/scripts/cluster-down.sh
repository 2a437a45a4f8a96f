#!/usr/bin/env bash
# Stop the local control plane (and rekube-controllers if `just up` started it) and remove
# its etcd data. Leaves no process behind:
# after SIGTERM (then SIGKILL) of the recorded pids, any process still running a binary
# from the cluster's binary folder is killed too. The PKI and logs are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"

for name in rekube-controllers kube-controller-manager kube-apiserver etcd; do
  f="$PIDS/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
done
# Strays (a pid file lost, a crashed script): anything running our binaries.
pkill -KILL -f "^$K8S_BIN/(etcd|kube-apiserver|kube-controller-manager) " 2>/dev/null || true
sleep 0.2
if pgrep -f "^$K8S_BIN/(etcd|kube-apiserver|kube-controller-manager) " >/dev/null; then
  log "processes still running:"; pgrep -af "^$K8S_BIN/" >&2; exit 1
fi
rm -rf "$CLUSTER_DIR/etcd-data"
log "cluster down"
