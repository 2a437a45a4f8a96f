#!/usr/bin/env bash
# Build the pinned Kubernetes control-plane binaries (kube-apiserver,
# kube-controller-manager, kubectl), etcd, helm, the CNI plugins, csi-sanity and
# external-attacher's csi-attacher from the Go
# module proxy and cache them per version outside the repository. Rebuilds only what is
# missing. `bench-tools` builds what only `just bench-scheduler` needs (kube-scheduler
# and kwok), `kube-proxy` what only
# `just bench-proxy` needs, and `kubelet` what only
# `just bench-pod-startup` needs; both are kept out of `all` so that bootstrap and CI do not
# pay for them.
#
#   REKUBE_CACHE   cache root (default ~/.cache/rekube)
#   K8S_VERSION    Kubernetes version (default v1.36.3)
#   ETCD_VERSION   etcd version (default v3.6.16)
#   HELM_VERSION   helm version (default v3.21.4)
#   KWOK_VERSION   kwok version (default v0.8.0)
#   CNI_PLUGINS_VERSION  containernetworking/plugins version (default v1.10.0)
#   CSI_SANITY_VERSION   kubernetes-csi/csi-test version (default v5.6.0)
#   EXTERNAL_ATTACHER_VERSION  kubernetes-csi/external-attacher version (default v4.13.0)
#   EXTERNAL_PROVISIONER_VERSION  kubernetes-csi/external-provisioner version (default v6.4.0;
#                  only `just bench-storage` needs it: target external-provisioner)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
CSI_SANITY_VERSION=${CSI_SANITY_VERSION:-v5.6.0}
EXTERNAL_ATTACHER_VERSION=${EXTERNAL_ATTACHER_VERSION:-v4.13.0}
EXTERNAL_PROVISIONER_VERSION=${EXTERNAL_PROVISIONER_VERSION:-v6.4.0}
CACHE=${REKUBE_CACHE:-$HOME/.cache/rekube}
BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
mkdir -p "$BIN"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
phase() { printf '[build-kubernetes] %s\n' "$*" >&2; }
timed() { local t0=$SECONDS; "$@"; phase "$1 ${*:2:1}: $((SECONDS - t0))s"; }

k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
staging_version="v0.${K8S_VERSION#v1.}"

build_kubernetes() {
  local want=() c
  local components=("$@")
  [ ${#components[@]} -gt 0 ] || components=(kube-apiserver kube-controller-manager kubectl)
  for c in "${components[@]}"; do
    [ -x "$BIN/$c" ] || want+=("$c")
  done
  [ ${#want[@]} -gt 0 ] || { phase "${components[*]} $K8S_VERSION cached in $BIN"; return; }
  local work="$CACHE/src/kubernetes-$K8S_VERSION"
  mkdir -p "$work"
  cd "$work"
  if ! grep -q '^replace' go.mod 2>/dev/null; then
    rm -f go.mod go.sum
    go mod init rekube.local/k8sbuild >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    # Every staging module that kubernetes' go.mod requires at v0.0.0 is
    # replaced there by a local path; point each at its published version.
    local m
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u); do
      go mod edit -replace "$m=$m@$staging_version"
    done
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  fi
  local pkgs=()
  for c in "${want[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); done
  go get -tool "${pkgs[@]}" 2>"$work/go-get.log" || { cat "$work/go-get.log" >&2; return 1; }
  local ld="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${want[@]}"; do
    local t0=$SECONDS
    go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
    phase "built $c $K8S_VERSION in $((SECONDS - t0))s"
  done
}

build_etcd() {
  [ -x "$BIN/etcd" ] && { phase "etcd cached"; return; }
  local work="$CACHE/src/etcd-$ETCD_VERSION" t0=$SECONDS
  mkdir -p "$work"; cd "$work"
  [ -f go.mod ] || go mod init rekube.local/etcdbuild >/dev/null 2>&1
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>"$work/go-get.log" || { cat "$work/go-get.log" >&2; return 1; }
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  phase "built etcd $ETCD_VERSION in $((SECONDS - t0))s"
}

build_helm() {
  [ -x "$BIN/helm" ] && { phase "helm cached"; return; }
  local t0=$SECONDS
  GOBIN="$BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" 2>"$CACHE/helm-install.log" || { cat "$CACHE/helm-install.log" >&2; return 1; }
  phase "built helm $HELM_VERSION in $((SECONDS - t0))s"
}

# kwok simulates nodes and their pods for the scheduler benchmark. Its go.mod has no
# replace lines, so a plain `go install` works; the version is in the binary's name so that
# another KWOK_VERSION is built beside it rather than mistaken for it (`kwok` links to it).
# The kwok binary has no built-in behaviour: kwokctl hands it Stages in a config file. Write
# the same ones from the module's kustomize/stage (kwokctl's defaults: a node becomes Ready
# once, pods bound to its nodes become Running, deleted pods go), less the periodic node
# heartbeat, which only a node lifecycle controller would read: kwok-stages.yaml.
build_kwok() {
  local t0=$SECONDS work="$CACHE/src/kwok-$KWOK_VERSION"
  mkdir -p "$work"
  if [ -x "$BIN/kwok-$KWOK_VERSION" ]; then
    phase "kwok $KWOK_VERSION cached"
  else
    GOBIN="$work" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
      2>"$work/go-install.log" || { cat "$work/go-install.log" >&2; return 1; }
    mv "$work/kwok" "$BIN/kwok-$KWOK_VERSION"
    phase "built kwok $KWOK_VERSION in $((SECONDS - t0))s"
  fi
  ln -sfn "kwok-$KWOK_VERSION" "$BIN/kwok"
  local stages="$BIN/kwok-$KWOK_VERSION-stages.yaml"
  if [ ! -s "$stages" ]; then
    local dir f
    dir=$(cd "$work" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    for f in node/fast/node-initialize pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
      echo "---"
      cat "$dir/kustomize/stage/$f.yaml"
    done >"$stages.tmp"
    mv "$stages.tmp" "$stages"
    phase "wrote $stages"
  fi
  ln -sfn "kwok-$KWOK_VERSION-stages.yaml" "$BIN/kwok-stages.yaml"
}

# The reference CNI plugins the node agent's pod network calls (bridge, host-local,
# loopback, portmap), from the Go module proxy: Debian 12's containernetworking-plugins is
# 1.1.1, which speaks CNI spec up to 1.0.0 only (no STATUS or GC). In a directory of their
# own per version: the agent's --cni-bin-dir and the tests point at it.
build_cni_plugins() {
  local dir="$CACHE/bin/cni-plugins-$CNI_PLUGINS_VERSION" t0=$SECONDS p missing=0
  for p in bridge host-local loopback portmap; do [ -x "$dir/$p" ] || missing=1; done
  [ $missing = 1 ] || { phase "cni plugins $CNI_PLUGINS_VERSION cached in $dir"; return; }
  local work="$CACHE/src/cni-plugins-$CNI_PLUGINS_VERSION" m=github.com/containernetworking/plugins/plugins
  mkdir -p "$work" "$dir"
  (cd "$work" && GOBIN="$dir" go install -trimpath -ldflags "-s -w" \
    "$m/main/bridge@$CNI_PLUGINS_VERSION" "$m/main/loopback@$CNI_PLUGINS_VERSION" \
    "$m/ipam/host-local@$CNI_PLUGINS_VERSION" "$m/meta/portmap@$CNI_PLUGINS_VERSION") \
    2>"$CACHE/cni-plugins-install.log" || { cat "$CACHE/cni-plugins-install.log" >&2; return 1; }
  phase "built cni plugins $CNI_PLUGINS_VERSION in $((SECONDS - t0))s"
}

# csi-sanity, the CSI spec's conformance suite (kubernetes-csi/csi-test), which
# csi/tests/sanity.rs runs against rekube-csi. Its go.mod has no replace lines: a plain
# `go install`; the version is in the file's name, as kwok's.
build_csi_sanity() {
  local out="$CACHE/bin/csi-sanity-$CSI_SANITY_VERSION" t0=$SECONDS
  [ -x "$out" ] && { phase "csi-sanity $CSI_SANITY_VERSION cached"; return; }
  local work="$CACHE/src/csi-sanity-$CSI_SANITY_VERSION"
  mkdir -p "$work"
  (cd "$work" && GOBIN="$work" go install -trimpath -ldflags "-s -w" \
    "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION") \
    2>"$work/go-install.log" || { cat "$work/go-install.log" >&2; return 1; }
  mv "$work/csi-sanity" "$out"
  phase "built csi-sanity $CSI_SANITY_VERSION in $((SECONDS - t0))s"
}

# external-attacher's csi-attacher (kubernetes-csi/external-attacher), the upstream peer
# that e2e/tests/csi_attacher.rs runs against `rekube-csi --attach-required` on
# storage.k8s.io VolumeAttachments. Its go.mod has replace lines, so `go install pkg@v`
# refuses it: the module's source from the proxy is copied and built in place.
build_external_attacher() {
  local out="$CACHE/bin/csi-attacher-$EXTERNAL_ATTACHER_VERSION" t0=$SECONDS
  [ -x "$out" ] && { phase "csi-attacher $EXTERNAL_ATTACHER_VERSION cached"; return; }
  local work="$CACHE/src/external-attacher-$EXTERNAL_ATTACHER_VERSION" dir
  rm -rf "$work" && mkdir -p "$work/mod"
  dir=$(cd "$work/mod" && go mod init tmp >/dev/null 2>&1 && go mod download -json \
    "github.com/kubernetes-csi/external-attacher/v4@$EXTERNAL_ATTACHER_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
  (cd "$work/src" && go build -trimpath -ldflags "-s -w" -o "$work/csi-attacher" ./cmd/csi-attacher) \
    2>"$work/go-build.log" || { cat "$work/go-build.log" >&2; return 1; }
  mv "$work/csi-attacher" "$out"
  rm -rf "$work/src" "$work/mod"
  phase "built csi-attacher $EXTERNAL_ATTACHER_VERSION in $((SECONDS - t0))s"
}

# external-provisioner's csi-provisioner (kubernetes-csi/external-provisioner), the upstream
# side of `just bench-storage`'s dynamic claims (beside the kubelet, in its distributed
# mode). Built as csi-attacher is (its go.mod has replace lines too).
build_external_provisioner() {
  local v=$EXTERNAL_PROVISIONER_VERSION major=${EXTERNAL_PROVISIONER_VERSION%%.*}
  local out="$CACHE/bin/csi-provisioner-$v" t0=$SECONDS
  [ -x "$out" ] && { phase "csi-provisioner $v cached"; return; }
  local work="$CACHE/src/external-provisioner-$v" dir
  rm -rf "$work" && mkdir -p "$work/mod"
  dir=$(cd "$work/mod" && go mod init tmp >/dev/null 2>&1 && go mod download -json \
    "github.com/kubernetes-csi/external-provisioner/$major@$v" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
  (cd "$work/src" && go build -trimpath -ldflags "-s -w" -o "$work/csi-provisioner" ./cmd/csi-provisioner) \
    2>"$work/go-build.log" || { cat "$work/go-build.log" >&2; return 1; }
  mv "$work/csi-provisioner" "$out"
  rm -rf "$work/src" "$work/mod"
  phase "built csi-provisioner $v in $((SECONDS - t0))s"
}

what=${1:-all}
case $what in
  all) build_etcd; build_kubernetes; build_helm; build_cni_plugins; build_csi_sanity; build_external_attacher ;;
  cni-plugins) build_cni_plugins ;;
  csi-sanity) build_csi_sanity ;;
  external-attacher) build_external_attacher ;;
  external-provisioner) build_external_provisioner ;;
  etcd) build_etcd ;;
  kubernetes) build_kubernetes ;;
  helm) build_helm ;;
  # Only the scheduler benchmark needs these (just build-bench-tools, just bench-scheduler).
  bench-tools) build_kubernetes kube-scheduler; build_kwok ;;
  kube-scheduler) build_kubernetes kube-scheduler ;;
  kwok) build_kwok ;;
  # Only the pod startup benchmark needs it (just build-kubelet, just bench-pod-startup).
  kubelet) build_kubernetes kubelet ;;
  # Only the service proxy benchmark needs it (just bench-proxy).
  kube-proxy) build_kubernetes kube-proxy ;;
  *) echo "usage: $0 [all|etcd|kubernetes|helm|cni-plugins|csi-sanity|external-attacher|external-provisioner|bench-tools|kube-scheduler|kwok|kubelet|kube-proxy]" >&2; exit 2 ;;
esac
echo "$BIN"
