#!/usr/bin/env bash
# Start a real local control plane on loopback: etcd, kube-apiserver and
# kube-controller-manager (garbage collector, namespace and service-account
# controllers), as envtest and hack/local-up-cluster.sh do. Idempotent: a running,
# healthy cluster is left alone. Logs: $CLUSTER_DIR/logs. Kubeconfig: printed last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"

t0=$SECONDS
"$here/build-kubernetes.sh" etcd >/dev/null
"$here/build-kubernetes.sh" kubernetes >/dev/null
log "binaries ready in $((SECONDS - t0))s ($K8S_BIN)"
mkdir -p "$PKI" "$LOGS" "$PIDS"

running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

start() { # name, command...
  local name=$1; shift
  if running "$name"; then log "$name already running (pid $(cat "$PIDS/$name.pid"))"; return; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
  log "started $name (pid $!), log $LOGS/$name.log"
}

wait_for() { # what, seconds, command...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what not ready after ${limit}s; last log lines:"
      tail -n 30 "$LOGS/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

# --- PKI: a CA, the apiserver's serving cert, client certs, the service-account keys.
t0=$SECONDS
"$here/pki.sh" "$PKI"
log "pki ready in $((SECONDS - t0))s"

write_kubeconfig "$KUBECONFIG_FILE" admin
write_kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" controller-manager

# --- etcd
t0=$SECONDS
start etcd "$K8S_BIN/etcd" \
  --name rekube-local \
  --data-dir "$CLUSTER_DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "rekube-local=http://127.0.0.1:$((ETCD_PORT + 10))" \
  --unsafe-no-fsync \
  --log-level warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
log "etcd healthy in $((SECONDS - t0))s"

# --- kube-apiserver
# An audit log of the writes of rekube's pods and workloads, at Metadata level: where
# Pod Security's audit mode records its violations (e2e/tests/pod_security.rs reads it).
cat > "$CLUSTER_DIR/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch]
  resources:
  - group: rekube.io
    resources: [pods, deployments, replicasets]
- level: None
YAML
# Beta APIs off by default that the node agent's projected volume sources read: one
# entry a line, joined with commas into --feature-gates and --runtime-config
# (ClusterTrustBundle: the clusterTrustBundle source; PodCertificateRequest: the
# podCertificate source; docs/volumes.md).
APISERVER_FEATURE_GATES=(
  ClusterTrustBundle=true
  PodCertificateRequest=true
)
APISERVER_RUNTIME_CONFIG=(
  certificates.k8s.io/v1beta1/clustertrustbundles=true
  certificates.k8s.io/v1beta1/podcertificaterequests=true
)
t0=$SECONDS
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --feature-gates "$(IFS=,; echo "${APISERVER_FEATURE_GATES[*]}")" \
  --runtime-config "$(IFS=,; echo "${APISERVER_RUNTIME_CONFIG[*]}")" \
  --allow-privileged=true \
  --profiling=false \
  --audit-policy-file "$CLUSTER_DIR/audit-policy.yaml" \
  --audit-log-path "$LOGS/audit.log" --audit-log-maxsize 100 --audit-log-maxbackup 1 \
  --v 1
wait_for kube-apiserver 120 kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz
log "kube-apiserver ready in $((SECONDS - t0))s"

# --- kube-controller-manager: only the controllers rekube relies on (cascading deletion
# through ownerReferences, namespace deletion, service accounts, and the deletion of
# PodCertificateRequests 15 minutes after their creation, which the podCertificate
# source relies on as upstream's kubelet does: podcertificaterequest-cleaner-controller,
# behind the PodCertificateRequest gate; docs/volumes.md). Its workload controllers act
# on the built-in types only and stay off. Each controller runs under its own service
# account and bootstrap role (--use-service-account-credentials), as in a real cluster.
KCM_CONTROLLERS=(
  garbagecollector
  namespace
  resourcequota
  serviceaccount
  serviceaccount-token
  root-ca-cert-publisher
  podcertificaterequest-cleaner-controller
)
t0=$SECONDS
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
  --controllers "$(IFS=,; echo "${KCM_CONTROLLERS[*]}")" \
  --feature-gates PodCertificateRequest=true \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --leader-elect=false \
  --v 1
wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
log "kube-controller-manager healthy in $((SECONDS - t0))s"

echo "$KUBECONFIG_FILE"
