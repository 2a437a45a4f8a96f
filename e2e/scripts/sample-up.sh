#!/usr/bin/env bash
# The sample workload of `just up` (e2e/scripts/up.sh), in namespace demo: apply
# e2e/manifests/sample/web.yaml (a Deployment of three busybox httpd pods and a Service)
# and sample/notes.yaml (a hostPath PersistentVolume, a claim, a pod writing to it), wait
# until the pods are Running and Ready on the nodes and the claim is Bound, printing what
# it waits for every few seconds, then fetch the Service's cluster IP from inside node
# rekube-node-0's network namespace, as a process on that node would, and show which pods
# answered (the service proxy spreads the connections over the pods of every node), and
# the lines the notes pod wrote to its volume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
export KUBECONFIG="$KUBECONFIG_FILE"
t0=$((SECONDS - ${1:-0}))

# wait_for WHAT TIMEOUT CHECK: runs CHECK (prints its progress, succeeds when done) every
# second; prints its progress every five seconds, and fails with it after TIMEOUT seconds.
wait_for() {
  local what=$1 timeout=$2 check=$3 start=$SECONDS out=
  while true; do
    if out=$($check 2>&1); then echo "  [+$((SECONDS - t0))s] $what: $out"; return 0; fi
    if [ $((SECONDS - start)) -ge "$timeout" ]; then echo "  [+$((SECONDS - t0))s] $what: not after ${timeout}s: $out" >&2; return 1; fi
    [ $(( (SECONDS - start) % 5 )) -eq 0 ] && echo "  [+$((SECONDS - t0))s] waiting for $what: $out"
    sleep 1
  done
}
web_ready() {
  local ready; ready=$(kubectl get rpod -n demo -l app=web -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
  local why; why=$(kubectl get rpod -n demo -l app=web -o jsonpath='{.items[0].status.conditions[?(@.type=="PodScheduled")].message}')
  echo "$ready/3 web pods Ready${why:+ (not scheduled: $why)}"; [ "$ready" -ge 3 ]
}
endpoints_ready() {
  local n; n=$(kubectl get rep -n demo web -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w)
  echo "$n addresses in Endpoints web"; [ "$n" -ge 3 ]
}
notes_written() { test -s "$volume/visits.log" && echo "$(wc -l < "$volume/visits.log") line(s)"; }
notes_running() {
  local claim pod; claim=$(kubectl get rpvc -n demo notes -o jsonpath='{.status.phase}'); pod=$(kubectl get rpod -n demo notes -o jsonpath='{.status.phase}')
  echo "claim notes ${claim:-Pending}, pod notes ${pod:-Pending}"; [ "$claim" = Bound ] && [ "$pod" = Running ]
}

kubectl apply -f "$here/../manifests/sample/web.yaml" -f "$here/../manifests/sample/notes.yaml"
wait_for "3 web pods Ready (scheduled, image imported, started, readiness probe passed)" 120 web_ready
wait_for "the Service's endpoints" 30 endpoints_ready
wait_for "the claim bound and its pod Running" 60 notes_running
ip=$(kubectl get rsvc -n demo web -o jsonpath='{.spec.clusterIP}')
echo
echo "12 requests to the Service web (http://$ip/hostname) from node rekube-node-0 (ip netns exec rk-up-n0 curl ...):"
declare -A seen=()
for _ in $(seq 12); do
  pod=$(ip netns exec rk-up-n0 curl -fsS --max-time 2 "http://$ip/hostname")
  seen[$pod]=$(( ${seen[$pod]:-0} + 1 ))
done
for pod in "${!seen[@]}"; do
  node=$(kubectl get rpod -n demo "$pod" -o jsonpath='{.spec.nodeName}')
  echo "  ${seen[$pod]} answered by pod $pod on node $node"
done
[ "${#seen[@]}" -ge 2 ] || { log "only ${!seen[*]} answered: the Service did not spread the connections"; exit 1; }
echo
volume=$(kubectl get rpv demo-notes -o jsonpath='{.spec.hostPath.path}')
wait_for "the notes pod's first line on its volume ($volume/visits.log)" 30 notes_written
echo "  $(tail -n 1 "$volume/visits.log")"
