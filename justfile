# rekube's tasks. `just --list` shows them; README.md says which to start with.
set shell := ["bash", "-euo", "pipefail", "-c"]

cache := env_var_or_default("REKUBE_CACHE", env_var("HOME") + "/.cache/rekube")
k8s_version := "v1.36.3"
k8s_bin := cache + "/bin/kubernetes-" + k8s_version
local_kubeconfig := cache + "/cluster/admin.kubeconfig"

export REKUBE_CACHE := cache
export K8S_VERSION := k8s_version
export PATH := k8s_bin + ":" + env_var("PATH")
# One shared target folder outside the repository keeps rebuilds warm across clones.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", cache + "/target")

default:
    @just --list

# Install apt packages, just, and the Go-built Kubernetes binaries (idempotent).
bootstrap:
    e2e/scripts/bootstrap.sh

# Build (or reuse) kube-apiserver, kube-controller-manager, kubectl, etcd and helm.
build-kubernetes:
    e2e/scripts/build-kubernetes.sh all

# Start the local control plane on loopback (etcd, kube-apiserver, kube-controller-manager).
cluster-up:
    e2e/scripts/cluster-up.sh

# Stop the local control plane; no process is left behind.
cluster-down:
    e2e/scripts/cluster-down.sh

# Regenerate crds/ and the Helm chart's generated files from the Rust types.
crds:
    cargo run --quiet -p rekube-crds --bin crdgen

# Fail when crds/ or the chart differ from what `just crds` would write.
crds-check:
    cargo run --quiet -p rekube-crds --bin crdgen -- --check

# Regenerate csi/src/generated/{csi.v1,pluginregistration}.rs (prost + tonic) from the vendored csi/proto/csi.proto and csi/proto/pluginregistration/api.proto (no protoc needed).
csi-gen:
    cargo run --quiet -p rekube-csi-gen

# Fail when csi/src/generated/*.rs differ from what `just csi-gen` would write.
csi-check:
    cargo run --quiet -p rekube-csi-gen -- --check

# Print each CRD's size (kubectl's last-applied annotation holds its JSON).
crd-sizes:
    cargo run --quiet -p rekube-crds --bin crdgen -- --sizes

# Apply the CRDs and admission policies to the cluster KUBECONFIG names, and wait for them.
install:
    kubectl apply -f crds/
    kubectl wait --for condition=Established --timeout=60s $(ls crds/*.yaml | grep -v admission-policies | xargs -n1 basename | sed 's/\.yaml$//; s/^/crd\//')
    # Refresh kubectl's cached discovery, which predates the new resources.
    kubectl api-resources --api-group=rekube.io --cached=false >/dev/null
    # The node agents' heartbeat Leases live here (the apiserver makes kube-node-lease for
    # upstream's; nothing makes ours but this, or the Helm chart).
    kubectl create namespace rekube-node-lease --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    # The nodes' ServiceAccounts, kept by the node authorizer (as the chart makes it).
    kubectl create namespace rekube-node-identity --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# One step at a time with the elapsed time: the control plane, the CRDs, rekube-controllers
# (every namespace) and NODES nodes (each a network namespace with a rekube-node-agent in
# it), the demo in namespace `demo` (a Deployment behind a Service, reached through it; a
# pod writing to a claim); then what is there, `kubectl rekube tree` of the demo, where the
# logs are and what to try next.
# Set everything up on the local cluster and run rekube with a demo (NODES nodes).
up nodes="2":
    e2e/scripts/up.sh {{nodes}}

# Benchmark: the Deployment workload under kube-controller-manager and rekube-controllers, side by side.
bench-controllers deployments="100" replicas="10": cluster-up
    KUBECONFIG={{local_kubeconfig}} just install
    cargo build --quiet --release -p rekube-controllers -p rekube-e2e --bin rekube-controllers --bin bench-controllers
    KUBECONFIG={{local_kubeconfig}} $CARGO_TARGET_DIR/release/bench-controllers --deployments {{deployments}} --replicas {{replicas}} --kcm {{k8s_bin}}/kube-controller-manager --rekube $CARGO_TARGET_DIR/release/rekube-controllers --kubeconfig {{local_kubeconfig}}

# Build (or reuse) what only `just bench-scheduler` needs: kube-scheduler and kwok (with its Stages).
build-bench-tools:
    e2e/scripts/build-kubernetes.sh bench-tools

# docs/benchmarks.md. Further flags go to the binary (`bench-scheduler --help`), e.g.
# `just bench-scheduler 100 3000 --only upstream` runs one side.
# Benchmark: pods scheduled per second by kube-scheduler (kwok nodes) and rekube's scheduler, N nodes and P pods each.
bench-scheduler nodes="100" pods="3000" *flags="": cluster-up build-bench-tools
    KUBECONFIG={{local_kubeconfig}} just install >/dev/null
    cargo build --quiet --release -p rekube-controllers -p rekube-e2e --bin rekube-controllers --bin bench-scheduler
    KUBECONFIG={{local_kubeconfig}} $CARGO_TARGET_DIR/release/bench-scheduler --nodes {{nodes}} --pods {{pods}} --kube-scheduler {{k8s_bin}}/kube-scheduler --kwok {{k8s_bin}}/kwok --kwok-config {{k8s_bin}}/kwok-stages.yaml --rekube $CARGO_TARGET_DIR/release/rekube-controllers --kubeconfig {{local_kubeconfig}} {{flags}}

# Build (or reuse) what only `just bench-pod-startup` needs: the kubelet, and Debian's containerd when missing.
build-kubelet:
    e2e/scripts/build-kubernetes.sh kubelet
    command -v containerd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containerd runc

# Benchmark (as root): pod created → Running and Ready under kubelet + containerd and rekube-node-agent (`--only rekube|upstream`).
bench-pod-startup pods="100" *flags="": cluster-up build-kubelet
    KUBECONFIG={{local_kubeconfig}} just install >/dev/null
    cargo build --quiet --release -p rekube-node-agent -p rekube-e2e --bin rekube-node-agent --bin bench-pod-startup
    KUBECONFIG={{local_kubeconfig}} $CARGO_TARGET_DIR/release/bench-pod-startup --pods {{pods}} --kubelet {{k8s_bin}}/kubelet --agent $CARGO_TARGET_DIR/release/rekube-node-agent --kubeconfig {{local_kubeconfig}} {{flags}}

# Benchmark (as root): pod volumes, upstream's clusterloader2 storage pod-startup workloads (1 pod × 100 configMap, secret, emptyDir volumes; 100 pods × 1 emptyDir) and claims (PVC created → pod Running: static hostPath PV, dynamic local-disk, dynamic hostpath; 1 pod × 50 local-disk claims) under kubelet + containerd and rekube-node-agent, side by side (`just bench-storage claims` or `volumes` runs one half).
bench-storage which="all": cluster-up build-kubelet
    e2e/scripts/build-kubernetes.sh external-provisioner >/dev/null
    KUBECONFIG={{local_kubeconfig}} just install >/dev/null
    cargo build --quiet --release -p rekube-node-agent -p rekube-controllers -p rekube-csi -p rekube-e2e --bin rekube-node-agent --bin rekube-controllers --bin rekube-csi --bin bench-pod-startup
    set -e; run() { echo; echo "=== $1 pod(s), $2"; KUBECONFIG={{local_kubeconfig}} $CARGO_TARGET_DIR/release/bench-pod-startup --pods $1 $3 $2 --kubelet {{k8s_bin}}/kubelet --agent $CARGO_TARGET_DIR/release/rekube-node-agent --csi $CARGO_TARGET_DIR/release/rekube-csi --controllers $CARGO_TARGET_DIR/release/rekube-controllers --kube-controller-manager {{k8s_bin}}/kube-controller-manager --csi-provisioner {{cache}}/bin/csi-provisioner-v6.4.0 --kubeconfig {{local_kubeconfig}}; }; \
    if [ {{which}} != claims ]; then for w in "1 configmap:100" "1 secret:100" "1 emptydir:100" "100 emptydir:1"; do run $w --volumes; done; fi; \
    if [ {{which}} != volumes ]; then for w in "1 static:1" "1 local-disk:1" "1 hostpath:1" "20 local-disk:1" "1 local-disk:50"; do run $w --claims; done; fi

# Benchmark: rekube Service created → cluster IP visible (one at a time, 200 at once, two QPS settings), beside a core Service's in-apiserver allocation.
bench-service-alloc: cluster-up
    KUBECONFIG={{local_kubeconfig}} just install >/dev/null
    cargo build --quiet --release -p rekube-controllers
    REKUBE_CONTROLLERS_BIN=$CARGO_TARGET_DIR/release/rekube-controllers KUBECONFIG={{local_kubeconfig}} cargo test --quiet -p rekube-e2e --test service_alloc -- --nocapture --test-threads 1 two_hundred_services racing 2>&1 | grep -E 'create|lost'

# Benchmark (as root): the service proxy, kube-proxy v1.36.3 vs rekube's, side by side in network namespaces (`--modes nftables,iptables`, `--only`).
bench-proxy services="1000,10000" *flags="": cluster-up
    e2e/scripts/build-kubernetes.sh kube-proxy
    KUBECONFIG={{local_kubeconfig}} just install >/dev/null
    cargo build --quiet --release -p rekube-node-agent -p rekube-e2e --bin rekube-node-agent --bin bench-proxy
    KUBECONFIG={{local_kubeconfig}} $CARGO_TARGET_DIR/release/bench-proxy --services {{services}} --kube-proxy {{k8s_bin}}/kube-proxy --rekube $CARGO_TARGET_DIR/release/rekube-node-agent --kubeconfig {{local_kubeconfig}} {{flags}}

# Benchmark (as root): create+start+wait+delete of /bin/true by rekube's runtime, runc and crun on one busybox rootfs.
bench-runtime iterations="200":
    cargo build --quiet --release -p rekube-node-agent --bin bench-runtime
    $CARGO_TARGET_DIR/release/bench-runtime --iterations {{iterations}}

# The demo's pods go first (the agents remove their containers), then the nodes and their
# network namespaces, the control plane, the demo volume.
# Stop everything `just up` started and say so.
down: cluster-down
    rm -rf /var/tmp/rekube-demo
    @echo "rekube is down: no rekube process, node network namespace (ip netns) or demo volume (/var/tmp/rekube-demo) is left; the build cache stays in {{cache}}"

# The Helm chart: lints (strict; default and golden values), renders as helm/golden/ says, and is accepted by the apiserver (server dry run: default and minimal values).
helm-check:
    helm lint --strict helm/rekube
    for v in helm/golden/values-*.yaml; do helm lint --strict helm/rekube -f "$v"; done
    e2e/scripts/helm-golden.sh --check
    helm template rekube helm/rekube --kube-version {{trim_start_match(k8s_version, "v")}} --include-crds | kubectl apply --dry-run=server -f - >/dev/null
    helm template rekube helm/rekube --kube-version {{trim_start_match(k8s_version, "v")}} -f helm/golden/values-minimal.yaml | kubectl apply --dry-run=server -f - >/dev/null
    @echo "helm chart ok"

# A real node for the local cluster (kubelet v1.36.3, containerd, CNI, in a network namespace), then rekube installed on it with Helm as real pods (docs/real-nodes.md); `just cluster-down` removes both.
kubelet-node-up: cluster-up images
    e2e/scripts/kubelet-node-up.sh
    e2e/scripts/helm-install.sh

# Uninstall rekube's release and remove the kubelet node, leaving nothing behind.
kubelet-node-down:
    e2e/scripts/helm-install.sh uninstall
    e2e/scripts/kubelet-node-up.sh down

# rekube on a three-node kind cluster built offline (docs/kind.md): the cluster, rekube installed with its Helm chart, `helm test`, `helm uninstall` leaving every node clean, then the cluster deleted (also on failure). Needs docker and root.
e2e-kind: images
    #!/usr/bin/env bash
    set -euo pipefail
    trap 'e2e/scripts/kind.sh down' EXIT
    e2e/scripts/kind.sh up
    e2e/scripts/kind.sh test
    e2e/scripts/kind.sh uninstall

# A three-node kind cluster with rekube installed by its Helm chart, kept running (docs/kind.md); its kubeconfig is ~/.cache/rekube/kind/kubeconfig.
kind-up: images
    e2e/scripts/kind.sh up

# Delete the kind cluster; stop the dockerd kind.sh started; the machine's iptables as before.
kind-down:
    e2e/scripts/kind.sh down

# Build the rekube-controllers and rekube-node-agent images (OCI and docker archives) and the kubectl-rekube release binary offline into $REKUBE_CACHE/images (docs/images.md).
images:
    e2e/scripts/images.sh

# Rewrite helm/golden/*.yaml from `helm template` (review the diff; commit it with the chart change).
helm-golden:
    e2e/scripts/helm-golden.sh

# Unit tests: no cluster needed.
test-unit:
    cargo test --workspace --lib --bins --test generated --test chart_crds

# End-to-end tests against whatever KUBECONFIG points at (the local cluster, or kind).
# Each controller test starts its own rekube-controllers scoped to its namespace; set
# REKUBE_E2E_CONTROLLERS=external to test controllers installed in the cluster instead.
e2e: no-local-nodes install
    cargo build --quiet -p rekube-controllers -p kubectl-rekube -p rekube-node-agent
    cargo test -p rekube-e2e --tests

# cgroup v2 (as root): the node agent's runtime and cgroup tests in a Debian 12 VM booted
# with only the unified hierarchy, and rekube-csi's kernel tests there with every
# capability (e2e/scripts/vm-cgroup2.sh; docs/testing.md). Arguments filter the tests by
# name.
test-cgroup2 *filter="":
    e2e/scripts/vm-cgroup2.sh {{filter}}

# The e2e tests make nodes of their own on the harness's subnet, where `just up`'s nodes are.
[private]
no-local-nodes:
    @if [ -f {{cache}}/cluster/pids/local-nodes.pid ] && kill -0 "$(cat {{cache}}/cluster/pids/local-nodes.pid)" 2>/dev/null; then echo "just up's nodes are running (rekube-node-*, on the subnet the e2e tests' nodes use): run 'just down' first" >&2; exit 1; fi

# All tests on the local cluster: formatting, lints, generated files, unit and e2e tests;
# then the node agent's runtime tests again on cgroup v2, in a VM (`just test-cgroup2`).
test: no-local-nodes cluster-up
    cargo fmt --all --check
    cargo clippy --quiet --workspace --all-targets -- -D warnings
    just crds-check
    just csi-check
    KUBECONFIG={{local_kubeconfig}} just install helm-check
    cargo build --quiet -p rekube-controllers -p kubectl-rekube -p rekube-node-agent
    # Every suite runs (--no-fail-fast), then the node agent's lib and runtime tests on
    # cgroup v2 in a VM; the summary prints each suite's counts either way.
    rc=0; KUBECONFIG={{local_kubeconfig}} cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee {{cache}}/last-test.log || rc=$?; e2e/scripts/vm-cgroup2.sh 2>&1 | tee -a {{cache}}/last-test.log || rc=$?; e2e/scripts/test-summary.sh {{cache}}/last-test.log || rc=1; exit $rc
