#!/usr/bin/env bash
# `just up`: a user's first five minutes on the local cluster, one step at a time with the
# elapsed time and what each step waits for. Builds what is missing (bootstrap: Debian
# packages, Kubernetes v1.36.3 from the Go module proxy, helm; then rekube's binaries, with
# cargo's line per crate), starts the control plane, installs the CRDs and policies, runs
# rekube-controllers (every namespace) and NODES nodes, applies the demo in namespace
# `demo` (a Deployment of three busybox httpd replicas behind a Service, and a pod writing
# to a PersistentVolumeClaim bound to a hostPath PersistentVolume), waits until it works,
# and shows it: `kubectl get rekube -o wide`, `kubectl rekube tree`, requests through the
# Service answered by the pods, where the logs are, what to try next.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/env.sh"
nodes=${1:-2}
t0=$SECONDS
step() { printf '\n[up +%ss] %s\n' "$((SECONDS - t0))" "$*"; }
export KUBECONFIG="$KUBECONFIG_FILE"
target=${CARGO_TARGET_DIR:-$REKUBE_CACHE/target}

step "bootstrap: Debian packages, just, Kubernetes $K8S_VERSION and helm (only what is missing)"
"$here/bootstrap.sh"

step "control plane: etcd, kube-apiserver, kube-controller-manager on 127.0.0.1"
"$here/cluster-up.sh"

step "rekube's CRDs and admission policies (kubectl apply -f crds/)"
(cd "$repo" && just --quiet install >/dev/null)
echo "$(ls "$repo"/crds/*.yaml | wc -l) manifests applied; kubectl api-resources --api-group=rekube.io lists $(kubectl api-resources --api-group=rekube.io --no-headers | wc -l) resources"

step "building rekube-controllers, rekube-node-agent, kubectl-rekube and local-nodes (release; about ten minutes the first time on 2 cores)"
# Without --quiet: cargo prints a line per crate it compiles, and nothing when all is fresh.
(cd "$repo" && cargo build --release -p rekube-controllers -p rekube-node-agent -p kubectl-rekube -p rekube-e2e \
  --bin rekube-controllers --bin rekube-node-agent --bin kubectl-rekube --bin local-nodes 2>&1 \
  | grep -E --line-buffered '^ *(Compiling|Finished|error|warning: unused)' || true)
[ -x "$target/release/kubectl-rekube" ] || { echo "the build failed: run cargo build --release in $repo" >&2; exit 1; }
export PATH="$target/release:$PATH"

step "rekube-controllers (every namespace; log $LOGS/rekube-controllers.log)"
"$here/controllers-up.sh" "$target/release/rekube-controllers"

step "$nodes nodes: rekube-node-agent in network namespaces rk-up-n0… (waiting for each Node to be Ready)"
"$here/nodes-up.sh" "$nodes" "$target/release/rekube-node-agent" "$target/release/local-nodes"

step "the demo in namespace demo: a Deployment of three busybox httpd pods, a Service, a pod with a claim"
"$here/sample-up.sh" "$((SECONDS - t0))"

step "what is there: kubectl get rekube -n demo -o wide (with the cluster-scoped Nodes and PersistentVolume)"
kubectl get rekube -n demo -o wide

step "kubectl rekube tree rdeploy/web -n demo; kubectl rekube tree rsvc/web -n demo"
kubectl-rekube tree rdeploy/web -n demo
echo
kubectl-rekube tree rsvc/web -n demo

step "done in $((SECONDS - t0))s"
cat <<EOF
Point your shell at the cluster and look around:
  export KUBECONFIG=$KUBECONFIG_FILE PATH=$K8S_BIN:$target/release:\$PATH
  kubectl get rekube -A -o wide                  # every rekube object (short names: rpod rdeploy rrs rsvc rep reps rpv rpvc rsc rnode rva)
  kubectl scale -n demo rdeploy/web --replicas=5 # rekube-controllers makes two more pods; the Service spreads over five
  kubectl rekube tree rdeploy/web -n demo        # the Deployment, its ReplicaSets and pods
  kubectl rekube cordon rekube-node-0            # then drain, uncordon
  ip netns exec rk-up-n0 curl -s http://\$(kubectl get rsvc -n demo web -o jsonpath='{.spec.clusterIP}')/hostname
  ip netns exec rk-up-n1 nft list table ip rekube-proxy   # a node's service proxy rules
Logs:
  rekube-controllers   $LOGS/rekube-controllers.log
  the node agents      $LOGS/nodes/rekube-node-N.log
  containers (CRI)     $REKUBE_CACHE/nodes/rekube-node-N/logs/
  the control plane    $LOGS/
'just down' removes it all: the demo's pods (their containers, mounts and cgroups), the
nodes and their network namespaces, the control plane, the demo volume's directory.
EOF
