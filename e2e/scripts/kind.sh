#!/usr/bin/env bash
# `just e2e-kind` (docs/kind.md): rekube installed by its Helm chart on a real 3-node kind
# cluster (one control plane, two workers), everything built offline: kind from the Go
# module proxy, a kind base image assembled from Debian packages (debootstrap), and the node
# image `kindest/node:v1.36.3-rekube` made by `kind build node-image` from the Kubernetes
# binaries build-kubernetes.sh builds, with the images kind preloads (pause, etcd, CoreDNS,
# local-path-provisioner) built here too. As root.
#
#   kind.sh image    build what is missing: kind, kubeadm, the component and preload
#                    images, the base image, the node image (each cached, skipped when present)
#   kind.sh up       image, then dockerd (started here when none answers), the cluster
#                    (e2e/kind/config.yaml), its pod network, the rekube images loaded with
#                    `kind load image-archive`, `helm install rekube helm/rekube`, and waits
#                    until the controllers, the three node agents and three rekube Nodes are Ready
#   kind.sh test     helm upgrade --reuse-values --set tests.enabled=true, then helm test
#   kind.sh uninstall  the sample workload applied, then helm uninstall; fails when anything
#                    of rekube is left on a node or a rekube pod is still held by the
#                    agent's finalizer
#   kind.sh down     kind delete cluster, dockerd stopped when this script started it, and
#                    the machine's iptables left as they were before it
#   kind.sh status   what runs
#
# Cache: ${REKUBE_CACHE:-~/.cache/rekube}/kind/ (the debootstrap rootfs and its .debs,
# kubeadm's module build, the image archives, the node image's tarball, and, when this
# script starts dockerd, docker's data root: the built images survive `down`). kind itself
# is $REKUBE_CACHE/bin/kind-$KIND_VERSION, kubeadm $K8S_BIN/kubeadm.
# The cluster's kubeconfig: $REKUBE_CACHE/kind/kubeconfig (printed by `up`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/env.sh"

KIND_VERSION=${KIND_VERSION:-v0.33.0}
CLUSTER=${REKUBE_KIND_CLUSTER:-rekube}
KC="$REKUBE_CACHE/kind"
KIND="$REKUBE_CACHE/bin/kind-$KIND_VERSION"
KUBEADM="$K8S_BIN/kubeadm"
HELM="$K8S_BIN/helm"
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.10.0}
CNI_BIN="$REKUBE_CACHE/bin/cni-plugins-$CNI_PLUGINS_VERSION"
COREDNS_VERSION=${COREDNS_VERSION:-}             # default: what kubeadm asks for
LOCAL_PATH_VERSION=${LOCAL_PATH_VERSION:-v0.0.30} # rancher/local-path-provisioner on the proxy
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${REKUBE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE="kindest/base:rekube-$DEBIAN_SUITE"
NODE_IMAGE="kindest/node:$K8S_VERSION-rekube"
KUBECONFIG_KIND="$KC/kubeconfig"
DOCKER_ROOT="$KC/docker"
DOCKER_PID="$KC/dockerd.pid"
IMAGES="$REKUBE_CACHE/images"
CHART_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/helm/rekube/Chart.yaml")
RELEASE=rekube
NAMESPACE=rekube-system
VALUES="$KC/helm-values.yaml"
TIMEOUT=${REKUBE_HELM_TIMEOUT:-300}
# The packages of kind's images/base/Dockerfile that a node needs here (no NFS, iSCSI or
# fuse-overlayfs: rootless and network storage are not used), plus containerd and runc
# (kind builds its own, v2.x; Debian's 1.6 and 1.1 here), systemd-sysv and dbus (init),
# socat (kubectl port-forward).
BASE_PACKAGES=(systemd systemd-sysv dbus containerd runc conntrack iptables nftables iproute2
  ethtool util-linux mount kmod libseccomp2 pigz e2fsprogs bash ca-certificates jq procps socat)

t0=$SECONDS
step() { log "+$((SECONDS - t0))s $*"; }
timed() { # what, command...: runs it, prints how long it took
  local what=$1 s=$SECONDS; shift
  "$@"
  step "$what: $((SECONDS - s))s"
}
kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_KIND" "$@"; }
need_root() { [ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }; }
kind_modules() { echo "$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION"; }

# --- dockerd --------------------------------------------------------------------------
# When no docker daemon answers, this script starts Debian's dockerd itself (there is no
# systemd here), with its own config file (not /etc/docker/daemon.json) and data root under
# the cache, and records what it changes on the machine so that `down` puts it back:
# iptables and ip6tables rules (docker adds its DOCKER* chains, NAT rules, and a FORWARD
# policy DROP when it had to turn forwarding on), and net.ipv4.ip_forward.
docker_ok() { docker info >/dev/null 2>&1; }

dockerd_up() {
  if docker_ok; then
    [ -f "$DOCKER_PID" ] && kill -0 "$(cat "$DOCKER_PID")" 2>/dev/null \
      && step "dockerd (started by kind.sh, pid $(cat "$DOCKER_PID")) answers" \
      || step "using the docker daemon that runs ($(docker version -f '{{.Server.Version}}'))"
    return
  fi
  command -v dockerd >/dev/null || { log "dockerd missing: apt-get install docker.io"; exit 1; }
  local s=$SECONDS
  mkdir -p "$KC/logs" "$DOCKER_ROOT" "$KC/host"
  iptables-save >"$KC/host/iptables.before"
  ip6tables-save >"$KC/host/ip6tables.before"
  cat /proc/sys/net/ipv4/ip_forward >"$KC/host/ip_forward.before"
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort >"$KC/host/links.before"
  # Privileged containers get every capability docker knows; where the bounding set lacks
  # CAP_SYS_RESOURCE, runc cannot apply it: e2e/kind/runc-nosysres drops it.
  local bnd runtime=""
  bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
  if (( (16#$bnd >> 24 & 1) == 0 )); then
    runtime=", \"runtimes\": {\"runc-nosysres\": {\"path\": \"$repo/e2e/kind/runc-nosysres\"}}, \"default-runtime\": \"runc-nosysres\""
    step "CAP_SYS_RESOURCE is not in this machine's bounding set: containers run through e2e/kind/runc-nosysres"
  fi
  echo "{\"data-root\": \"$DOCKER_ROOT\", \"storage-driver\": \"overlay2\"$runtime}" >"$KC/daemon.json"
  setsid dockerd --config-file "$KC/daemon.json" >>"$KC/logs/dockerd.log" 2>&1 </dev/null &
  echo $! >"$DOCKER_PID"
  local deadline=$((SECONDS + 60))
  until docker_ok; do
    kill -0 "$(cat "$DOCKER_PID")" 2>/dev/null || { log "dockerd exited:"; tail -n 20 "$KC/logs/dockerd.log" >&2; rm -f "$DOCKER_PID"; exit 1; }
    [ $SECONDS -lt $deadline ] || { log "dockerd does not answer after 60s"; tail -n 20 "$KC/logs/dockerd.log" >&2; exit 1; }
    sleep 0.5
  done
  step "dockerd $(docker version -f '{{.Server.Version}}') started (pid $(cat "$DOCKER_PID"), data root $DOCKER_ROOT, log $KC/logs/dockerd.log) in $((SECONDS - s))s"
}

# Docker's rules out of a saved ruleset: its chains, the rules that jump to them or name
# its bridges (docker0, br-<network id>), and its MASQUERADE of their subnets.
strip_docker_rules() {
  grep -v -E '(^:DOCKER|-j DOCKER|-A DOCKER| docker0 | br-[0-9a-f]{12} )' | sed -E 's/^(:FORWARD) DROP/\1 ACCEPT/'
}

dockerd_down() {
  if [ ! -f "$DOCKER_PID" ]; then
    docker_ok && step "dockerd was not started by kind.sh: left running"
    return 0
  fi
  local pid s=$SECONDS
  pid=$(cat "$DOCKER_PID")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "dockerd ignored SIGTERM for 30s: killed"; kill -KILL "$pid" 2>/dev/null || true; }
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$DOCKER_PID"
  # Its managed containerd and shims go with it; what is left of them was ours.
  for pid in $(pgrep -f "containerd.*$DOCKER_ROOT|/var/run/docker/containerd/containerd" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Links docker made (docker0, br-*) and the veths of its containers.
  local l
  for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | comm -13 "$KC/host/links.before" - \
      | grep -E '^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]+)$' || true); do
    ip link del "$l" 2>/dev/null || true
  done
  # iptables: what is there now, less docker's (other users' rules added meanwhile stay),
  # with FORWARD's policy as it was. The whole-table restore is atomic per table.
  local fam save restore policy
  for fam in iptables ip6tables; do
    save=${fam}-save; restore=${fam}-restore
    if "$save" | grep -q -E 'DOCKER|docker0|br-[0-9a-f]{12}'; then
      "$save" | strip_docker_rules | "$restore"
    fi
    policy=$(awk '/^\*filter/ {f=1} f && /^:FORWARD/ {print $2; exit}' "$KC/host/$fam.before")
    [ -z "$policy" ] || "$fam" -P FORWARD "$policy"
  done
  [ ! -f "$KC/host/ip_forward.before" ] || cat "$KC/host/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
  # The docker data root's mounts (overlay2, netns, shm), deepest first.
  local m
  for m in $(awk -v d="$DOCKER_ROOT/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  for m in $(awk '$5 ~ "^/run/docker/" {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  step "dockerd stopped in $((SECONDS - s))s; iptables, ip6tables, ip_forward as before it started"
}

# --- tools ----------------------------------------------------------------------------
build_kind() {
  [ -x "$KIND" ] && return
  local s=$SECONDS
  mkdir -p "$KC/logs" "$KC/src/kind"
  GOBIN="$KC/src/kind" CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION" >"$KC/logs/kind-install.log" 2>&1 \
    || { cat "$KC/logs/kind-install.log" >&2; exit 1; }
  mv "$KC/src/kind/kind" "$KIND"
  step "built kind $KIND_VERSION from the module proxy in $((SECONDS - s))s"
}

# kubeadm as build-kubernetes.sh builds the other components (its module, with the
# staging modules replaced by their published versions; same version ldflags), in a module
# directory of its own so that build-kubernetes.sh's is left alone.
build_kubeadm() {
  [ -x "$KUBEADM" ] && return
  local s=$SECONDS work="$KC/src/kubernetes-$K8S_VERSION" minor
  "$here/build-kubernetes.sh" kubernetes >/dev/null # writes the module directory's go.mod
  mkdir -p "$work"
  cp "$REKUBE_CACHE/src/kubernetes-$K8S_VERSION/go.mod" "$REKUBE_CACHE/src/kubernetes-$K8S_VERSION/go.sum" "$work/"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$work" && export CGO_ENABLED=0 GOFLAGS=-buildvcs=false &&
    go get -tool "k8s.io/kubernetes/cmd/kubeadm@$K8S_VERSION" &&
    go build -trimpath -ldflags "$ld" -o "$KUBEADM.tmp" k8s.io/kubernetes/cmd/kubeadm) >"$KC/logs/kubeadm-build.log" 2>&1 \
    || { cat "$KC/logs/kubeadm-build.log" >&2; exit 1; }
  mv "$KUBEADM.tmp" "$KUBEADM"
  step "built kubeadm $K8S_VERSION in $((SECONDS - s))s"
}

# A static Go binary of the module proxy, cached in $KC/bin.
go_tool() { # name module@version
  local out="$KC/bin/$1-${2##*@}"
  [ -x "$out" ] && { echo "$out"; return; }
  local s=$SECONDS tmp="$KC/src/$1"
  mkdir -p "$tmp" "$KC/bin"
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "$2" >"$KC/logs/$1-build.log" 2>&1 \
    || { cat "$KC/logs/$1-build.log" >&2; exit 1; }
  mv "$tmp/$1" "$out"
  step "built $1 ${2##*@} from the module proxy in $((SECONDS - s))s" >&2 # stdout is the path
  echo "$out"
}

# --- images ---------------------------------------------------------------------------
# A docker-archive (what `docker save` writes, what kind and ctr load) of one layer: the
# directory ROOT. Tags, entrypoint (JSON array or empty) and user as given.
docker_archive() { # out.tar root "tag[,tag...]" entrypoint-json user
  local out=$1 root=$2 tags=$3 ep=${4:-null} user=${5:-0:0} work
  work=$(mktemp -d)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
  local diff_id
  diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":$ep,"User":"$user","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
  printf '[{"Config":"config.json","RepoTags":%s,"Layers":["layer.tar"]}]\n' \
    "$(printf '%s' "$tags" | jq -R -c 'split(",")')" >"$work/manifest.json"
  tar -C "$work" -cf "$out.tmp" manifest.json config.json layer.tar
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

# A minimal root with static binaries in /usr/local/bin (and /tmp, /etc/passwd, CA certs).
minimal_root() { # dir binary...
  local d=$1; shift
  mkdir -p "$d/usr/local/bin" "$d/tmp" "$d/etc/ssl/certs" "$d/var/run"
  chmod 1777 "$d/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$d/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/etc/group"
  cp /etc/ssl/certs/ca-certificates.crt "$d/etc/ssl/certs/" 2>/dev/null || true
  local b
  for b in "$@"; do install -m 0755 "$b" "$d/usr/local/bin/"; done
}

# Binaries of the base rootfs with every library they load, into DIR (kube-proxy's nft).
copy_with_libs() { # rootfs dir path...
  local r=$1 d=$2 p lib; shift 2
  for p in "$@"; do
    (cd "$r" && cp -a --parents ".$p" "$d/")
    for lib in $(chroot "$r" ldd "$p" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
      (cd "$r" && cp -L --parents ".$lib" "$d/")
    done
  done
}

# Kubernetes' pause (build/pause/linux/pause.c of the module build-kubernetes.sh
# downloaded, static, gcc), as kubelet-node-up.sh builds it.
pause_binary() { # out
  local src
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  [ -f "$src" ] || go mod download "k8s.io/kubernetes@$K8S_VERSION"
  gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-rekube -o "$1" "$src"
  strip "$1"
}

# The image archives: the control plane's (kind's tarball builder wants them by these
# names) in $KC/images/k8s, and those kind pre-pulls into /kind/preload of the base rootfs.
component_images() {
  local dir="$KC/images/k8s" work c
  mkdir -p "$dir"
  work=$(mktemp -d)
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -f "$dir/$c.tar" ] && continue
    minimal_root "$work/$c" "$K8S_BIN/$c"
    docker_archive "$dir/$c.tar" "$work/$c" "registry.k8s.io/$c:$K8S_VERSION"
    step "image registry.k8s.io/$c:$K8S_VERSION ($(du -h "$dir/$c.tar" | cut -f1))"
  done
  # kube-proxy (nftables mode) runs nft: Debian's, with its libraries, from the base rootfs.
  if [ ! -f "$dir/kube-proxy.tar" ]; then
    minimal_root "$work/kube-proxy" "$K8S_BIN/kube-proxy"
    copy_with_libs "$KC/base/rootfs" "$work/kube-proxy" /usr/sbin/nft /usr/sbin/xtables-nft-multi /usr/sbin/conntrack
    local t
    for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
      ln -sf xtables-nft-multi "$work/kube-proxy/usr/sbin/$t"
    done
    docker_archive "$dir/kube-proxy.tar" "$work/kube-proxy" "registry.k8s.io/kube-proxy:$K8S_VERSION"
    step "image registry.k8s.io/kube-proxy:$K8S_VERSION with Debian's nft ($(du -h "$dir/kube-proxy.tar" | cut -f1))"
  fi
  rm -rf "$work"
}

preload_name() { printf '%s' "$1" | tr '/:' '__'; }

preload_images() { # the rootfs' /kind/preload
  local pre="$KC/base/rootfs/kind/preload" work img
  mkdir -p "$pre" "$KC/images/preload"
  work=$(mktemp -d)
  local wanted=() sandbox
  sandbox=$(sed -n 's/^ *sandbox_image *= *"\(.*\)"/\1/p' "$(kind_modules)/images/base/files/etc/containerd/config.toml")
  # kubeadm's images less the control plane's (the tarball has them) and its pause
  # (kind replaces it by containerd's sandbox image).
  mapfile -t wanted < <("$KUBEADM" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null \
    | grep -v -E '/(kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|pause):')
  wanted+=("$sandbox")
  local prov helper
  prov=$(sed -n 's/^const storageProvisionerImage = "\(.*\)"/\1/p' "$(kind_modules)/pkg/build/nodeimage/const_storage.go")
  helper=$(sed -n 's/^const storageHelperImage = "\(.*\)"/\1/p' "$(kind_modules)/pkg/build/nodeimage/const_storage.go")
  wanted+=("$prov" "$helper")
  for img in "${wanted[@]}"; do
    local out="$KC/images/preload/$(preload_name "$img").tar" d="$work/$(preload_name "$img")"
    if [ ! -f "$out" ]; then
      case "$img" in
        */pause:*)
          minimal_root "$d"; pause_binary "$d/pause"
          docker_archive "$out" "$d" "$img" '["/pause"]' 65535:65535 ;;
        */etcd:*)
          # build-kubernetes.sh's etcd (ETCD_VERSION, v3.6.16), under the tag kubeadm's
          # manifest names (3.6.8-0): a patch release newer than kubeadm's pin.
          "$here/build-kubernetes.sh" etcd >/dev/null
          minimal_root "$d" "$K8S_BIN/etcd"
          docker_archive "$out" "$d" "$img" ;;
        */coredns:*)
          local v=${COREDNS_VERSION:-${img##*:}} bin
          bin=$(go_tool coredns "github.com/coredns/coredns@$v")
          minimal_root "$d"; install -m 0755 "$bin" "$d/coredns"
          docker_archive "$out" "$d" "$img" '["/coredns"]' ;;
        */local-path-provisioner:*)
          local bin
          bin=$(go_tool local-path-provisioner "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION")
          minimal_root "$d" "$bin"
          mv "$d/usr/local/bin/$(basename "$bin")" "$d/usr/local/bin/local-path-provisioner"
          docker_archive "$out" "$d" "$img" ;;
        */local-path-helper:*)
          # kind's helper is a shell for the provisioner's setup/teardown scripts (mkdir,
          # rm -rf): busybox, as busybox-image.sh makes it.
          "$here/busybox-image.sh" "$out" "$img" >/dev/null ;;
        *) log "no offline build for $img: kind build node-image will skip it"; continue ;;
      esac
      step "preload image $img ($(du -h "$out" | cut -f1))"
    fi
    cp "$out" "$pre/"
  done
  rm -rf "$work"
}

# The kind base image's root filesystem: debootstrap (minbase) of Debian 12 with
# BASE_PACKAGES, then what kind's images/base/Dockerfile does (its files/ from the kind
# module, the systemd units enabled and the rest pruned, /sbin/init), Debian's containerd
# 1.6 and runc instead of kind's builds, the CNI plugins build-kubernetes.sh builds in
# /opt/cni/bin, and e2e/kind/ctr as /usr/local/bin/ctr.
base_rootfs() {
  local r="$KC/base/rootfs"
  [ -f "$KC/base/rootfs.stamp" ] && return
  command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
  local s=$SECONDS
  rm -rf "$r"; mkdir -p "$r" "$KC/base/debs" "$KC/logs"
  debootstrap --variant=minbase --cache-dir="$KC/base/debs" \
    --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
    "$DEBIAN_SUITE" "$r" "$DEBIAN_MIRROR" >"$KC/logs/debootstrap.log" 2>&1 \
    || { tail -n 30 "$KC/logs/debootstrap.log" >&2; exit 1; }
  step "debootstrap $DEBIAN_SUITE with ${#BASE_PACKAGES[@]} packages: $((SECONDS - s))s"
  local files
  files="$(kind_modules)/images/base/files"
  [ -d "$files" ] || go mod download "sigs.k8s.io/kind@$KIND_VERSION"
  cp -r "$files/." "$r/"
  chmod -R u+w "$r/kind" "$r/etc" "$r/usr/local" "$r/LICENSES"
  chmod 0755 "$r"/usr/local/bin/* "$r/kind/bin"/* "$r/kind" "$r/kind/bin"
  # kind's units start /usr/local/bin/containerd; ctr's wrapper comes first in PATH.
  ln -sf /usr/bin/containerd "$r/usr/local/bin/containerd"
  ln -sf /usr/bin/containerd-shim-runc-v2 "$r/usr/local/bin/containerd-shim-runc-v2"
  install -m 0755 "$repo/e2e/kind/ctr" "$r/usr/local/bin/ctr"
  ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' >"$r/etc/containerd/cri-base.json"
  "$here/build-kubernetes.sh" cni-plugins >/dev/null
  mkdir -p "$r/opt/cni/bin" "$r/etc/kubernetes/manifests"
  install -m 0755 "$CNI_BIN"/* "$r/opt/cni/bin/"
  find "$r/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
    "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
    "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$r/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$r/sbin/init"
  chroot "$r" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  chroot "$r" systemctl mask systemd-binfmt.service >/dev/null 2>&1
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/*
  touch "$KC/base/rootfs.stamp"
  step "base rootfs $r ($(du -sh "$r" | cut -f1)) in $((SECONDS - s))s"
}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

base_image() {
  image_present "$BASE_IMAGE" && { step "base image $BASE_IMAGE present"; return; }
  local s=$SECONDS
  # docker import takes no STOPSIGNAL: one Dockerfile line on top (kind's base image's
  # ENV, STOPSIGNAL and ENTRYPOINT; no build context, nothing pulled).
  tar -C "$KC/base/rootfs" --numeric-owner -c . | docker import - "$BASE_IMAGE-rootfs" >/dev/null
  printf '%s\n' "FROM $BASE_IMAGE-rootfs" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' | docker build -q -t "$BASE_IMAGE" - >"$KC/logs/base-image-build.log" 2>&1 \
    || { cat "$KC/logs/base-image-build.log" >&2; exit 1; }
  docker image rm "$BASE_IMAGE-rootfs" >/dev/null
  step "base image $BASE_IMAGE imported ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec)) in $((SECONDS - s))s"
}

# kind's "file" builder takes a kubernetes-server-linux-amd64.tar.gz: the same layout,
# from build-kubernetes.sh's binaries.
server_tarball() {
  local out="$KC/build/kubernetes-server-linux-amd64.tar.gz"
  [ -f "$out" ] && { echo "$out"; return; }
  local w="$KC/build/tree" c
  rm -rf "$w"; mkdir -p "$w/kubernetes/server/bin"
  for c in kubeadm kubelet kubectl; do install -m 0755 "$K8S_BIN/$c" "$w/kubernetes/server/bin/"; done
  for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    cp "$KC/images/k8s/$c.tar" "$w/kubernetes/server/bin/"
  done
  echo "$K8S_VERSION" >"$w/kubernetes/version"
  tar -C "$w" -czf "$out.tmp" kubernetes
  mv "$out.tmp" "$out"; rm -rf "$w"
  echo "$out"
}

image() {
  need_root
  local c
  for c in docker go gcc jq debootstrap; do
    command -v "$c" >/dev/null || { log "$c missing (docker: apt-get install docker.io)"; exit 1; }
  done
  dockerd_up
  if image_present "$NODE_IMAGE"; then
    step "node image $NODE_IMAGE present ($(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | numfmt --to=iec))"
    return
  fi
  local s=$SECONDS
  mkdir -p "$KC/logs" "$KC/build" "$KC/images"
  build_kind
  timed "Kubernetes binaries (build-kubernetes.sh)" bash -c \
    "'$here/build-kubernetes.sh' kubernetes >/dev/null && '$here/build-kubernetes.sh' kube-scheduler >/dev/null &&
     '$here/build-kubernetes.sh' kubelet >/dev/null && '$here/build-kubernetes.sh' kube-proxy >/dev/null &&
     '$here/build-kubernetes.sh' helm >/dev/null"
  build_kubeadm
  base_rootfs
  timed "component images" component_images
  timed "preload images" preload_images
  base_image
  local tarball
  tarball=$(server_tarball)
  local b=$SECONDS
  "$KIND" build node-image --type file "$tarball" --base-image "$BASE_IMAGE" --image "$NODE_IMAGE" -v 1 \
    >"$KC/logs/kind-build-node-image.log" 2>&1 || { tail -n 40 "$KC/logs/kind-build-node-image.log" >&2; exit 1; }
  grep -i 'skipped\|warn' "$KC/logs/kind-build-node-image.log" >&2 || true
  step "kind build node-image: $((SECONDS - b))s"
  # The base image's layer is in the node image, and the tarball is remade in seconds from
  # the cached archives: neither is kept.
  docker image rm "$BASE_IMAGE" >/dev/null 2>&1 || true
  rm -f "$tarball"
  docker builder prune -f >/dev/null 2>&1 || true
  step "node image $NODE_IMAGE ($(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | numfmt --to=iec)) built in $((SECONDS - s))s"
}

# --- the cluster ----------------------------------------------------------------------
cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }
nodes() { "$KIND" get nodes --name "$CLUSTER" 2>/dev/null | sort; }

# kindnetd's part: each node's pods on a bridge over its podCIDR
# (e2e/kind/10-kind-bridge.conflist), routes to the other nodes' podCIDRs via their IPs,
# and masquerade of what pods send outside the pod range (nft, in the node).
pod_network() {
  local n cidr ip pod_subnet
  pod_subnet=$(sed -n 's/^ *podSubnet: *\([^ #]*\).*/\1/p' "$repo/e2e/kind/config.yaml")
  declare -A cidrs ips
  local deadline=$((SECONDS + 60))
  for n in $(nodes); do
    until cidr=$(kubectl_ get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null) && [ -n "$cidr" ]; do
      [ $SECONDS -lt $deadline ] || { log "node $n has no podCIDR after 60s"; exit 1; }
      sleep 1
    done
    cidrs[$n]=$cidr
    ips[$n]=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$n")
  done
  local m
  for n in $(nodes); do
    sed "s|@POD_CIDR@|${cidrs[$n]}|" "$repo/e2e/kind/10-kind-bridge.conflist" \
      | docker exec -i "$n" sh -c 'cat > /etc/cni/net.d/10-kind-bridge.conflist.tmp && mv /etc/cni/net.d/10-kind-bridge.conflist.tmp /etc/cni/net.d/10-kind-bridge.conflist'
    for m in $(nodes); do
      [ "$m" = "$n" ] || docker exec "$n" ip route replace "${cidrs[$m]}" via "${ips[$m]}"
    done
    docker exec -i "$n" nft -f - <<NFT
add table ip kind-bridge-masq
delete table ip kind-bridge-masq
table ip kind-bridge-masq {
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr $pod_subnet ip daddr != $pod_subnet masquerade
  }
}
NFT
  done
  step "pod network: $(for n in $(nodes); do printf '%s %s (pods %s); ' "$n" "${ips[$n]}" "${cidrs[$n]}"; done)"
}

load_images() {
  local s=$SECONDS f want=(
    "$IMAGES/rekube-controllers-$CHART_VERSION.docker.tar"
    "$IMAGES/rekube-node-agent-$CHART_VERSION.docker.tar"
  )
  for f in "${want[@]}"; do
    [ -f "$f" ] || { log "$f missing: run \`just images\` first"; exit 1; }
  done
  mkdir -p "$KC/images/workloads"
  [ -f "$KC/images/workloads/busybox.tar" ] || "$here/busybox-image.sh" "$KC/images/workloads/busybox.tar" busybox:1.36 >/dev/null
  [ -f "$KC/images/workloads/busybox-kubectl.tar" ] || "$here/busybox-image.sh" "$KC/images/workloads/busybox-kubectl.tar" \
    "rekube/busybox-kubectl:$K8S_VERSION" "$K8S_BIN/kubectl" >/dev/null
  # Each archive is loaded once per cluster (its sha256 in $KC/loaded/); one `just images`
  # rebuilt is loaded again, and its workload restarted after the helm step (same tag,
  # pullPolicy Never: running pods keep the old image otherwise).
  mkdir -p "$KC/loaded"
  local sum stamp loaded=()
  RESTART=()
  for f in "${want[@]}" "$KC/images/workloads/busybox-kubectl.tar"; do
    sum=$(sha256sum "$f" | cut -d' ' -f1)
    stamp="$KC/loaded/$(basename "$f").sha256"
    [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] && continue
    "$KIND" load image-archive "$f" --name "$CLUSTER" >/dev/null
    if [ -f "$stamp" ]; then
      case $f in
        *rekube-controllers*) RESTART+=("deploy/$RELEASE-controllers") ;;
        *rekube-node-agent*) RESTART+=("ds/$RELEASE-node-agent") ;;
      esac
    fi
    echo "$sum" >"$stamp"
    loaded+=("$(basename "$f")")
  done
  step "kind load image-archive: ${loaded[*]:-nothing new} in $((SECONDS - s))s"
}

values() {
  cat <<YAML
# Written by e2e/scripts/kind.sh for the kind cluster $CLUSTER.
controllers:
  # Loaded into the nodes by \`kind load image-archive\`: there is no registry.
  image: {pullPolicy: Never}
  logFormat: text
nodeAgent:
  image: {pullPolicy: Never}
  # The kind nodes share this machine's disk with everything else: no disk eviction (as
  # kind's own kubelet configuration and helm-install.sh).
  extraArgs: ["--eviction-hard=memory.available<100Mi,nodefs.available<0%"]
tests:
  image: {pullPolicy: Never}
YAML
}

rnodes_ready() {
  [ "$(kubectl_ get nodes.rekube.io -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True)" = 3 ]
}

progress() {
  local line
  line=$(printf 'controllers %s/%s available; node agents %s/%s ready; rekube Nodes Ready: %s' \
    "$(kubectl_ -n "$NAMESPACE" get deploy "$RELEASE-controllers" -o jsonpath='{.status.availableReplicas}' 2>/dev/null || true)" \
    "$(kubectl_ -n "$NAMESPACE" get deploy "$RELEASE-controllers" -o jsonpath='{.spec.replicas}' 2>/dev/null || true)" \
    "$(kubectl_ -n "$NAMESPACE" get ds "$RELEASE-node-agent" -o jsonpath='{.status.numberReady}' 2>/dev/null || true)" \
    "$(kubectl_ -n "$NAMESPACE" get ds "$RELEASE-node-agent" -o jsonpath='{.status.desiredNumberScheduled}' 2>/dev/null || true)" \
    "$(kubectl_ get nodes.rekube.io -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}' 2>/dev/null || true)")
  [ "$line" = "${last_progress:-}" ] || { step "$line"; last_progress=$line; }
}

diagnose() {
  log "not there after ${TIMEOUT}s; what the pods say:"
  kubectl_ -n "$NAMESPACE" get pods -o wide >&2 || true
  kubectl_ -n "$NAMESPACE" describe pods 2>/dev/null | grep -A 12 '^Events:' >&2 || true
  local p
  for p in $(kubectl_ -n "$NAMESPACE" get pods -o name 2>/dev/null); do
    log "--- $p"; kubectl_ -n "$NAMESPACE" logs "$p" --tail 15 >&2 2>&1 || true
  done
  exit 1
}

helm_install() {
  mkdir -p "$KC"
  values >"$VALUES"
  local s=$SECONDS
  if "$HELM" --kubeconfig "$KUBECONFIG_KIND" status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
    step "helm upgrade $RELEASE helm/rekube -n $NAMESPACE -f $VALUES"
    "$HELM" --kubeconfig "$KUBECONFIG_KIND" upgrade "$RELEASE" "$repo/helm/rekube" -n "$NAMESPACE" -f "$VALUES" >/dev/null
  else
    step "helm install $RELEASE helm/rekube -n $NAMESPACE --create-namespace -f $VALUES"
    "$HELM" --kubeconfig "$KUBECONFIG_KIND" install "$RELEASE" "$repo/helm/rekube" -n "$NAMESPACE" --create-namespace -f "$VALUES" >/dev/null
  fi
  if [ ${#RESTART[@]} -gt 0 ]; then
    kubectl_ -n "$NAMESPACE" rollout restart "${RESTART[@]}" >/dev/null
    step "rebuilt images loaded: kubectl rollout restart ${RESTART[*]}"
  fi
  local deadline=$((SECONDS + TIMEOUT))
  until kubectl_ -n "$NAMESPACE" rollout status deploy/"$RELEASE-controllers" --timeout=1s >/dev/null 2>&1 &&
        kubectl_ -n "$NAMESPACE" wait deploy/"$RELEASE-controllers" --for condition=Available --timeout=1s >/dev/null 2>&1 &&
        [ "$(kubectl_ -n "$NAMESPACE" get deploy "$RELEASE-controllers" -o jsonpath='{.status.readyReplicas}')" = 2 ] &&
        kubectl_ -n "$NAMESPACE" rollout status ds/"$RELEASE-node-agent" --timeout=1s >/dev/null 2>&1 &&
        [ "$(kubectl_ -n "$NAMESPACE" get ds "$RELEASE-node-agent" -o jsonpath='{.status.numberReady}')" = 3 ] &&
        rnodes_ready; do
    progress
    [ $SECONDS -lt $deadline ] || diagnose
    sleep 2
  done
  progress
  step "rekube Ready in $((SECONDS - s))s"
  # No registry: busybox:1.36 (the smoke test's and the e2e suite's workload image) goes
  # into each agent's own image store, as `kind load` puts images into containerd; through
  # the agent's pod, whose state directory is the node's.
  s=$SECONDS
  local n pod
  for n in $(nodes); do
    pod=$(kubectl_ -n "$NAMESPACE" get pods -l app.kubernetes.io/component=node-agent \
      --field-selector "spec.nodeName=$n" -o jsonpath='{.items[0].metadata.name}')
    docker cp "$KC/images/workloads/busybox.tar" "$n:/var/lib/rekube/busybox-import.tar"
    kubectl_ -n "$NAMESPACE" exec "$pod" -- rekube-node-agent image import /var/lib/rekube/busybox-import.tar \
      --root /var/lib/rekube/images >/dev/null
    docker exec "$n" rm -f /var/lib/rekube/busybox-import.tar
  done
  step "busybox:1.36 imported into the three agents' image stores (rekube-node-agent image import) in $((SECONDS - s))s"
}

# The kind nodes' kubelets run privileged and set the machine's own (not per-container)
# kernel tunables (container_manager_linux.go setupKernelTunables), as kubelet-node-up.sh's
# does: recorded before the first cluster, put back by `down`.
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
sysctls_record() {
  [ -f "$KC/host/sysctls.before" ] && return
  mkdir -p "$KC/host"
  local d
  for d in "${SYSCTLS[@]}"; do echo "$d=$(cat "/proc/sys/$d")"; done >"$KC/host/sysctls.before"
}
sysctls_restore() {
  [ -f "$KC/host/sysctls.before" ] || return 0
  local kv
  while read -r kv; do
    [ "$(cat "/proc/sys/${kv%%=*}")" = "${kv#*=}" ] || { echo "${kv#*=}" >"/proc/sys/${kv%%=*}"; step "restored ${kv%%=*} = ${kv#*=}"; }
  done <"$KC/host/sysctls.before"
  rm -f "$KC/host/sysctls.before"
}

up() {
  need_root
  image
  local s=$SECONDS
  cluster_exists || sysctls_record
  if cluster_exists; then
    step "cluster $CLUSTER exists"
    "$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_KIND"
  else
    "$KIND" create cluster --name "$CLUSTER" --config "$repo/e2e/kind/config.yaml" --image "$NODE_IMAGE" \
      --kubeconfig "$KUBECONFIG_KIND" >"$KC/logs/kind-create.log" 2>&1 \
      || { tail -n 40 "$KC/logs/kind-create.log" >&2; exit 1; }
    rm -rf "$KC/loaded"
    step "kind create cluster --name $CLUSTER --config e2e/kind/config.yaml --image $NODE_IMAGE: $((SECONDS - s))s"
  fi
  chmod 600 "$KUBECONFIG_KIND"
  s=$SECONDS
  pod_network
  kubectl_ wait --for=condition=Ready nodes --all --timeout=120s >/dev/null \
    || { kubectl_ get nodes -o wide >&2; exit 1; }
  kubectl_ -n kube-system rollout status ds/kube-proxy --timeout=120s >/dev/null
  kubectl_ -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null \
    || { kubectl_ -n kube-system get pods -o wide >&2; exit 1; }
  step "3 nodes Ready, kube-proxy and CoreDNS rolled out in $((SECONDS - s))s"
  load_images
  helm_install
  kubectl_ get nodes -o wide
  kubectl_ get nodes.rekube.io -o wide
  kubectl_ -n "$NAMESPACE" get pods -o wide
  cat >&2 <<EOF
[kind] kubeconfig: $KUBECONFIG_KIND
[kind] next: $0 test; KUBECONFIG=$KUBECONFIG_KIND REKUBE_E2E_CONTROLLERS=external cargo test -p rekube-e2e ...; $0 down
EOF
}

test_() {
  need_root
  local s=$SECONDS
  "$HELM" --kubeconfig "$KUBECONFIG_KIND" upgrade "$RELEASE" "$repo/helm/rekube" -n "$NAMESPACE" \
    --reuse-values --set tests.enabled=true >/dev/null
  step "helm upgrade --reuse-values --set tests.enabled=true: $((SECONDS - s))s"
  s=$SECONDS
  "$HELM" --kubeconfig "$KUBECONFIG_KIND" test "$RELEASE" -n "$NAMESPACE" --timeout 5m
  step "helm test $RELEASE: $((SECONDS - s))s"
}

# helm uninstall with the smoke test's workload (or any rekube pod) still running: the
# chart's pre-delete hook deletes the agents' DaemonSet, each agent removes what it made on
# its node and releases its pods. Then each kind node is checked: no rekube nft table,
# `rekube0` bridge, route with proto 82, process or cgroup under the agent's cgroup parent,
# or mount under its directories (but the root directory's shared bind of itself).
uninstall() {
  need_root
  local s=$SECONDS
  # A workload running across the nodes when the release goes: `just up`'s sample web
  # Deployment (three busybox httpd pods) and its Service, in namespace demo.
  kubectl_ apply -f "$repo/e2e/manifests/sample/web.yaml" >/dev/null
  kubectl_ -n demo wait rdeploy/web --for=condition=Available --timeout=120s >/dev/null \
    || { kubectl_ -n demo get rpod -o wide >&2; exit 1; }
  step "sample workload demo/web Available: $(kubectl_ -n demo get rpod -o jsonpath='{range .items[*]}{.metadata.name}@{.spec.nodeName} {end}')($((SECONDS - s))s)"
  s=$SECONDS
  "$HELM" --kubeconfig "$KUBECONFIG_KIND" uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 5m >/dev/null
  step "helm uninstall $RELEASE: $((SECONDS - s))s"
  local n left=() what
  [ "$(nodes | wc -l)" = 3 ] || { log "cannot look: kind get nodes lists $(nodes | wc -l) nodes, not 3"; exit 1; }
  for n in $(nodes); do
    what=$(docker exec "$n" sh -c '
      nft list tables 2>/dev/null | grep -E "rekube-(proxy|masquerade)" | sed "s/^/nft: /"
      ip -o link show rekube0 2>/dev/null | sed "s/^/link: /"
      ip route show proto 82 2>/dev/null | sed "s/^/route: /"
      find /sys/fs/cgroup -path "*/rekube/*" -name cgroup.procs -exec cat {} + 2>/dev/null | sed "s/^/process: /"
      find /sys/fs/cgroup -path "*/rekube/*" -type d 2>/dev/null | sed "s/^/cgroup: /"
      awk "(index(\$5, \"/var/lib/rekube/\") == 1 || index(\$5, \"/run/rekube/\") == 1) {print \"mount: \" \$5}" /proc/self/mountinfo
    ' 2>&1)
    [ -z "$what" ] || left+=("$n: $(echo "$what" | tr '\n' ';')")
  done
  local held
  held=$(kubectl_ get pods.rekube.io -A -o jsonpath='{range .items[?(@.metadata.finalizers)]}{.metadata.namespace}/{.metadata.name} {end}')
  [ -z "$held" ] || left+=("pods still held by the agent's finalizer: $held")
  if [ ${#left[@]} -gt 0 ]; then log "left on the nodes after helm uninstall: ${left[*]}"; exit 1; fi
  # Released by their agents, the workload's objects delete at once.
  kubectl_ delete namespace demo --timeout=60s >/dev/null
  step "helm uninstall left nothing of rekube on the $(nodes | wc -l) nodes; namespace demo deleted"
}

status() {
  if [ -f "$DOCKER_PID" ] && kill -0 "$(cat "$DOCKER_PID")" 2>/dev/null; then
    echo "dockerd: running (started by kind.sh, pid $(cat "$DOCKER_PID"), data root $DOCKER_ROOT)"
  elif docker_ok; then echo "dockerd: running (not started by kind.sh)"
  else echo "dockerd: not running"; return; fi
  image_present "$NODE_IMAGE" && echo "node image $NODE_IMAGE: present" || echo "node image $NODE_IMAGE: absent"
  [ -x "$KIND" ] && cluster_exists || { echo "cluster $CLUSTER: absent"; return; }
  echo "cluster $CLUSTER: $(nodes | tr '\n' ' ')(kubeconfig $KUBECONFIG_KIND)"
  kubectl_ get nodes -o wide 2>/dev/null || true
  kubectl_ get nodes.rekube.io 2>/dev/null || true
  kubectl_ -n "$NAMESPACE" get pods -o wide 2>/dev/null || true
}

down() {
  need_root
  if docker_ok; then
    if [ -x "$KIND" ] && cluster_exists; then
      local s=$SECONDS
      "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_KIND" >/dev/null 2>&1
      step "kind delete cluster --name $CLUSTER: $((SECONDS - s))s"
    else
      step "no cluster $CLUSTER"
    fi
    # kind leaves its network (and bridge) for the next cluster.
    if [ -z "$(docker network inspect kind -f '{{range .Containers}}x{{end}}' 2>/dev/null)" ] &&
       docker network inspect kind >/dev/null 2>&1; then
      docker network rm kind >/dev/null && step "docker network kind removed"
    fi
  fi
  rm -rf "$KUBECONFIG_KIND" "$KC/loaded"
  docker_ok && [ -x "$KIND" ] && cluster_exists || sysctls_restore
  dockerd_down
  # What must be gone, or the script fails naming it.
  local left=()
  if [ -f "$KC/host/links.before" ]; then
    local extra
    extra=$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | comm -13 "$KC/host/links.before" - \
      | grep -E '^(docker0|br-|veth)' | tr '\n' ' ' || true)
    [ -z "$extra" ] || left+=("links: $extra")
  fi
  if [ ! -f "$DOCKER_PID" ]; then
    iptables-save | grep -q -E 'DOCKER|docker0' && left+=("iptables rules of docker")
    awk -v d="$DOCKER_ROOT/" 'index($5, d) == 1' /proc/self/mountinfo | grep -q . && left+=("mounts under $DOCKER_ROOT")
    pgrep -f "containerd-shim.*moby|kindest/node" >/dev/null && left+=("processes: $(pgrep -af 'containerd-shim.*moby' | cut -c1-80 | tr '\n' ';')")
  fi
  if [ ${#left[@]} -gt 0 ]; then log "left behind: ${left[*]}"; exit 1; fi
  step "down: nothing of the cluster or of dockerd left"
}

case ${1:-} in
  image) need_root; image ;;
  up) up ;;
  test) test_ ;;
  uninstall) uninstall ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 image|up|test|uninstall|down|status" >&2; exit 2 ;;
esac
