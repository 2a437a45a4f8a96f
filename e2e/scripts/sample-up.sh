#!/usr/bin/env bash
# The sample workload of `just up`: apply e2e/manifests/sample/web.yaml (a Deployment of
# three busybox httpd pods and a Service), wait until its pods are Running and Ready on
# the nodes, then fetch the Service's cluster IP from inside node rekube-node-0's network
# namespace, as a process on that node would, and show which pods answered: the
# service proxy spreads the connections over the pods of every node.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
export KUBECONFIG="$KUBECONFIG_FILE"
kubectl apply -f "$here/../manifests/sample/web.yaml"
kubectl wait --for=jsonpath='{.status.updatedReplicas}'=3 rdeploy/web --timeout=60s >/dev/null
kubectl wait --for=condition=Ready rpod -l app=web --timeout=120s >/dev/null
kubectl wait --for=jsonpath='{.subsets[0].addresses[2].ip}' rep/web --timeout=30s >/dev/null
ip=$(kubectl get rsvc web -o jsonpath='{.spec.clusterIP}')
echo
echo "12 requests to the Service web (http://$ip/hostname) from node rekube-node-0 (ip netns exec rk-up-n0 curl ...):"
declare -A seen=()
for _ in $(seq 12); do
  pod=$(ip netns exec rk-up-n0 curl -fsS --max-time 2 "http://$ip/hostname")
  seen[$pod]=$(( ${seen[$pod]:-0} + 1 ))
done
for pod in "${!seen[@]}"; do
  node=$(kubectl get rpod "$pod" -o jsonpath='{.spec.nodeName}')
  echo "  ${seen[$pod]} answered by pod $pod on node $node"
done
[ "${#seen[@]}" -ge 2 ] || { log "only ${!seen[*]} answered: the Service did not spread the connections"; exit 1; }
