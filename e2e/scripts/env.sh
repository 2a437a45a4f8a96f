# Shared settings of the local control plane; sourced by the cluster scripts.
K8S_VERSION=${K8S_VERSION:-v1.36.3}
REKUBE_CACHE=${REKUBE_CACHE:-$HOME/.cache/rekube}
K8S_BIN="$REKUBE_CACHE/bin/kubernetes-$K8S_VERSION"
CLUSTER_DIR=${REKUBE_CLUSTER_DIR:-$REKUBE_CACHE/cluster}
PKI="$CLUSTER_DIR/pki"
LOGS="$CLUSTER_DIR/logs"
PIDS="$CLUSTER_DIR/pids"
KUBECONFIG_FILE="$CLUSTER_DIR/admin.kubeconfig"
ETCD_PORT=${REKUBE_ETCD_PORT:-23790}
APISERVER_PORT=${REKUBE_APISERVER_PORT:-6443}
KCM_PORT=${REKUBE_KCM_PORT:-10257}
SERVICE_CIDR=${REKUBE_SERVICE_CIDR:-10.96.0.0/16}
export PATH="$K8S_BIN:$PATH"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# A kubeconfig for the local apiserver with the client certificate $PKI/NAME.{crt,key}.
write_kubeconfig() { # file, user cert name
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: rekube-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: rekube-local
  context: {cluster: rekube-local, user: $2}
current-context: rekube-local
KC
}
