#!/usr/bin/env bash
# Install everything rekube's development and tests need on a fresh Debian 12 machine,
# as root: Debian packages, `just`, and the Go-built Kubernetes v1.36.3 binaries, etcd and
# helm (cached under ~/.cache/rekube). Safe to run again: it only does what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { printf '[bootstrap] %s\n' "$*" >&2; }

# Debian packages: the local control plane's PKI and health checks; for the node agent's
# image tests, a local OCI registry (docker-registry), busybox for the test images
# (busybox-static, also the container runtime tests' rootfs) and htpasswd for the
# registry's basic auth (apache2-utils); runc and crun, the runtimes `just bench-runtime`
# compares rekube's with; nftables, the service proxy's `nft`; iptables, its
# iptables-restore/iptables-save in --proxy-mode iptables; conntrack, the tool it
# deletes stale UDP conntrack entries with; iproute2, the `ip` the CNI
# test makes and inspects its network namespaces with; qemu and debootstrap for
# the cgroup v2 VM (vm-cgroup2.sh); e2fsprogs and xfsprogs, rekube-csi's ext4 and xfs
# volumes (mkfs, resize2fs, xfs_growfs); umoci and skopeo, what `just images` builds the
# images with, and containerd, whose `ctr images import` the image test proves they load
# into (docs/images.md).
APT_PACKAGES=(openssl curl jq ca-certificates git build-essential docker-registry busybox-static apache2-utils runc crun nftables iptables conntrack iproute2 qemu-system-x86 debootstrap e2fsprogs xfsprogs umoci skopeo containerd docker.io)
t0=$SECONDS
source "$here/apt.sh"
apt_install_missing "${APT_PACKAGES[@]}"
say "apt packages ready in $((SECONDS - t0))s"

for tool in go cargo; do
  command -v "$tool" >/dev/null || { say "$tool is required (Go 1.26+, Rust 1.89+)"; exit 1; }
done

# just, pinned, from crates.io (Debian 12 has no package for it).
JUST_VERSION=1.59.0
t0=$SECONDS
if ! just --version 2>/dev/null | grep -q "^just $JUST_VERSION$"; then
  say "installing just $JUST_VERSION"
  cargo install --quiet --locked just --version "$JUST_VERSION"
fi
say "just ready in $((SECONDS - t0))s"

t0=$SECONDS
"$here/build-kubernetes.sh" all >/dev/null
say "kubernetes binaries ready in $((SECONDS - t0))s"
