#!/usr/bin/env bash
# Issue 14 (docs/real-nodes.md). Install rekube with Helm on the local
# cluster's kubelet node (e2e/scripts/kubelet-node-up.sh), as a user would, and wait until
# it works: rekube-controllers' Deployment Available, the rekube-node-agent DaemonSet rolled
# out, and the rekube Node the agent registers from inside its pod Ready. As root.
#
#   helm-install.sh [install]   helm install (helm upgrade when the release exists)
#   helm-install.sh uninstall   helm uninstall (each agent removes what it made on its node
#                               when the DaemonSet goes), waited for
#   helm-install.sh leftovers   what an agent made and is still on the node; fails if any
#   helm-install.sh scrub       removes such leftovers by force (a failed test's teardown)
#
# The values (written to $REKUBE_CACHE/kubelet-nodes/helm-values.yaml) point every host path
# of the agent into the node's directory (the machine's /var/lib, /run, /var/log, /etc and
# /opt are not the node's: kubelet-node-up.sh's node shares the machine's filesystem), use the
# images kubelet-node-up.sh imported (pullPolicy Never: there is no registry), give the agent
# a cgroup parent of its own, and keep rekube's pod range (10.245.0.0/16) and Service range
# (10.112.0.0/16) disjoint from the kubelet's pods (10.246.0.0/24), the cluster's Services
# (10.96.0.0/16) and `just up`'s pods (10.244.0.0/16).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/env.sh"
export KUBECONFIG="$KUBECONFIG_FILE"

NODE=${REKUBE_KUBELET_NODE:-kubelet-node-0}
NS="rk-$NODE"
DIR="$REKUBE_CACHE/kubelet-nodes/$NODE"
RELEASE=rekube
NAMESPACE=rekube-system
CNI_BIN="$REKUBE_CACHE/bin/cni-plugins-${CNI_PLUGINS_VERSION:-v1.10.0}"
VALUES="$REKUBE_CACHE/kubelet-nodes/helm-values.yaml"
TIMEOUT=${REKUBE_HELM_TIMEOUT:-300}
helm=("$K8S_BIN/helm")
t0=$SECONDS
step() { log "+$((SECONDS - t0))s $*"; }

values() {
  cat <<YAML
# Written by e2e/scripts/helm-install.sh for the kubelet node $NODE.
controllers:
  image: {pullPolicy: Never}
  logFormat: text
  nodeSelector: {kubernetes.io/hostname: $NODE}
  args:
    clusterCidr: 10.245.0.0/16
    serviceClusterIpRange: 10.112.0.0/16
nodeAgent:
  image: {pullPolicy: Never}
  nodeSelector: {kubernetes.io/hostname: $NODE}
  # One agent per machine may own a cgroup parent and these directories: a second kubelet
  # node on this machine would need values of its own (a DaemonSet has one set).
  rootDir: $DIR/rekube/root
  runDir: $DIR/rekube/run
  podLogDir: $DIR/rekube/pod-logs
  cgroupParent: rekube-$NODE
  cni:
    confDir: $DIR/rekube/cni/net.d
    binDir: $CNI_BIN
    cacheDir: $DIR/rekube/root/cni
  proxyMode: nftables
  # The node's disk is the machine's (as kubelet-node-up.sh's evictionHard).
  extraArgs: ["--eviction-hard=memory.available<100Mi,nodefs.available<0%"]
tests:
  image: {pullPolicy: Never}
YAML
}

# Objects `just install` (kubectl apply -f crds/, kubectl create namespace) made that the
# chart renders too: Helm refuses to install over objects it does not own, and adopts those
# labelled and annotated as its release's.
adopt() {
  local obj n=0
  for obj in $("${helm[@]}" template "$RELEASE" "$repo/helm/rekube" -n "$NAMESPACE" -f "$VALUES" --kube-version "${K8S_VERSION#v}" \
      | kubectl get -f - -o name --ignore-not-found 2>/dev/null); do
    [ "$(kubectl get "$obj" -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')" = Helm ] && continue
    kubectl label --overwrite "$obj" app.kubernetes.io/managed-by=Helm >/dev/null
    kubectl annotate --overwrite "$obj" meta.helm.sh/release-name="$RELEASE" meta.helm.sh/release-namespace="$NAMESPACE" >/dev/null
    n=$((n + 1))
  done
  [ $n = 0 ] || step "adopted $n objects made by \`just install\` into the release"
}

progress() { # one line when what it shows changes
  local line
  line=$(printf 'controllers %s/%s available; node agents %s/%s ready; pods: %s' \
    "$(kubectl -n "$NAMESPACE" get deploy "$RELEASE-controllers" -o jsonpath='{.status.availableReplicas}' 2>/dev/null || true)" \
    "$(kubectl -n "$NAMESPACE" get deploy "$RELEASE-controllers" -o jsonpath='{.spec.replicas}' 2>/dev/null || true)" \
    "$(kubectl -n "$NAMESPACE" get ds "$RELEASE-node-agent" -o jsonpath='{.status.numberReady}' 2>/dev/null || true)" \
    "$(kubectl -n "$NAMESPACE" get ds "$RELEASE-node-agent" -o jsonpath='{.status.desiredNumberScheduled}' 2>/dev/null || true)" \
    "$(kubectl -n "$NAMESPACE" get pods --no-headers 2>/dev/null | awk '{printf "%s %s %s; ", $1, $3, $4}')")
  [ "$line" = "${last_progress:-}" ] || { step "$line"; last_progress=$line; }
}

diagnose() {
  log "not there after ${TIMEOUT}s; what the pods say:"
  kubectl -n "$NAMESPACE" get pods -o wide >&2 || true
  kubectl -n "$NAMESPACE" describe pods 2>/dev/null | grep -A 12 '^Events:' >&2 || true
  local f
  for f in $(find "$DIR/pods" -name '*.log' 2>/dev/null | head -n 6); do
    log "--- $f"; tail -n 15 "$f" >&2
  done
  log "--- kubelet"; tail -n 15 "$LOGS/kubelet-nodes/$NODE/kubelet.log" >&2 || true
  exit 1
}

rnode_ready() {
  [ "$(kubectl get rnode "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

install() {
  [ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
  [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] \
    || { log "node $NODE is not Ready: e2e/scripts/kubelet-node-up.sh"; exit 1; }
  local p
  for p in rekube-controllers local-nodes; do
    if [ -f "$PIDS/$p.pid" ] && kill -0 "$(cat "$PIDS/$p.pid")" 2>/dev/null; then
      log "\`just up\`'s $p runs (pid $(cat "$PIDS/$p.pid")): two rekubes would act on the same objects; just down first"
      exit 1
    fi
  done
  mkdir -p "$(dirname "$VALUES")"
  values >"$VALUES"
  adopt
  if "${helm[@]}" status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
    step "helm upgrade $RELEASE helm/rekube -n $NAMESPACE -f $VALUES"
    "${helm[@]}" upgrade "$RELEASE" "$repo/helm/rekube" -n "$NAMESPACE" -f "$VALUES" >/dev/null
  else
    step "helm install $RELEASE helm/rekube -n $NAMESPACE --create-namespace -f $VALUES"
    "${helm[@]}" install "$RELEASE" "$repo/helm/rekube" -n "$NAMESPACE" --create-namespace -f "$VALUES" >/dev/null
  fi
  step "waiting for deployment/$RELEASE-controllers Available, daemonset/$RELEASE-node-agent rolled out, rnode/$NODE Ready"
  local deadline=$((SECONDS + TIMEOUT))
  until kubectl -n "$NAMESPACE" wait deploy/"$RELEASE-controllers" --for condition=Available --timeout=1s >/dev/null 2>&1 &&
        kubectl -n "$NAMESPACE" rollout status ds/"$RELEASE-node-agent" --timeout=1s >/dev/null 2>&1 &&
        rnode_ready >/dev/null 2>&1; do
    progress
    [ $SECONDS -lt $deadline ] || diagnose
    sleep 2
  done
  progress
  # No registry is reachable here: the rekube pods' image goes into the agent's image store
  # (under its root directory, the node's) as `kind load` puts images onto a kind node.
  local agent="${CARGO_TARGET_DIR:-$REKUBE_CACHE/target}/release/rekube-node-agent"
  "$agent" image import "$DIR/images/busybox.tar" --root "$DIR/rekube/root/images" >/dev/null
  step "busybox:1.36 imported into the agent's image store ($agent image import)"
  step "rekube runs as pods on $NODE; the rekube Node its agent registered:"
  kubectl get rnode -o wide
  kubectl -n "$NAMESPACE" get pods -o wide
  cat >&2 <<EOF
[helm-install] logs: $DIR/pods/${NAMESPACE}_*/ (the pods' CRI logs; kubectl logs cannot reach the kubelet)
[helm-install] the agent's rules: ip netns exec $NS nft list table ip rekube-proxy
[helm-install] next: helm test $RELEASE -n $NAMESPACE (with --set tests.enabled=true), REKUBE_E2E_CONTROLLERS=external just e2e; $0 uninstall
EOF
}

uninstall() {
  [ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
  if ! "${helm[@]}" status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
    step "no release $RELEASE in $NAMESPACE"
    return
  fi
  # As a user would: the rekube workloads may still run. The DaemonSet's deletion is each
  # agent's signal to stop its node's pods and remove what it made there before its pod
  # goes (node-agent/src/agent/uninstall.rs), so the agents' pods are waited for.
  step "helm uninstall $RELEASE -n $NAMESPACE"
  "${helm[@]}" uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 120s >/dev/null
  kubectl -n "$NAMESPACE" wait pods --all --for=delete --timeout=120s >/dev/null 2>&1 \
    || log "some pods of $NAMESPACE were not gone in time"
  kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=true --timeout=60s >/dev/null || true
  # What stays, as with a kubelet: the rekube API objects (the CRDs stay with Helm), the
  # Node and its Lease, the image store under the root directory.
  kubectl delete rnode "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl -n rekube-node-lease delete lease "$NODE" --ignore-not-found >/dev/null 2>&1 || true
  step "uninstalled"
}

# What the agent made on the node and is still there, one line each; fails when anything
# is: its proxy's and pod network's nft tables, routes (proto 82) and bridge in the node's
# namespace (its pods' veths hang off it), CNI attachments, processes and cgroups under
# its cgroup parent, mounts under its directories (but the root directory's shared bind
# of itself, kept as the kubelet's is).
leftovers() {
  local found=0 what
  report() { [ -z "$2" ] || { echo "left: $1: $(echo "$2" | tr '\n' ' ')"; found=1; }; }
  # The checks below read empty when their command fails: the node must be there to look.
  [ -e "/run/netns/$NS" ] && what=$(ip netns exec "$NS" nft list tables) \
    || { echo "cannot look: no network namespace $NS or nft fails"; return 1; }
  report "nft tables" "$(echo "$what" | grep -E 'rekube-(proxy|masquerade)' || true)"
  report "routes" "$(ip -netns "$NS" route show proto 82 2>/dev/null || true)"
  report "links" "$(ip -netns "$NS" -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^rekube0$' || true)"
  what=$(for c in "$DIR"/rekube/root/cni/results/*; do [ -e "$c" ] && basename "$c"; done 2>/dev/null || true)
  report "CNI attachments" "$what"
  report "processes" "$(find /sys/fs/cgroup/pids/"rekube-$NODE" /sys/fs/cgroup/"rekube-$NODE" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)"
  report "cgroups" "$(find /sys/fs/cgroup/*/"rekube-$NODE" /sys/fs/cgroup/"rekube-$NODE" -mindepth 1 -type d 2>/dev/null || true)"
  report "mounts" "$(awk -v d="$DIR/rekube/" -v root="$DIR/rekube/root" 'index($5, d) == 1 && $5 != root {print $5}' /proc/self/mountinfo)"
  [ $found = 0 ] && echo "nothing of the agent is left on $NODE"
  return $found
}

# After a failed test: whatever an agent left is removed by force (the node's teardown).
scrub() {
  local agent="${CARGO_TARGET_DIR:-$REKUBE_CACHE/target}/release/rekube-node-agent"
  if [ -x "$agent" ] && [ -e "/run/netns/$NS" ]; then
    "$agent" cleanup --netns "/run/netns/$NS" || log "rekube-node-agent cleanup failed in $NS"
  fi
  local h pid m
  for pid in $(find /sys/fs/cgroup/pids/"rekube-$NODE" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for h in /sys/fs/cgroup/*/; do
    [ -d "${h}rekube-$NODE" ] && { find "${h}rekube-$NODE" -depth -type d -exec rmdir {} + 2>/dev/null || log "left cgroup ${h}rekube-$NODE"; }
  done
  for m in $(awk -v d="$DIR/rekube/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}

case ${1:-install} in
  install) install ;;
  uninstall) uninstall ;;
  leftovers) leftovers ;;
  scrub) scrub ;;
  *) echo "usage: $0 [install|uninstall|leftovers|scrub]" >&2; exit 2 ;;
esac
