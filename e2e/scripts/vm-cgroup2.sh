#!/usr/bin/env bash
# The node agent's runtime tests on a cgroup v2-only kernel (`just test-cgroup2`), as root.
#
# This host runs cgroup v1 (its cgroup2 mount has no controllers), while Debian 12, kind
# and most current distributions run the unified hierarchy only. So: a throwaway Debian 12
# VM under qemu (KVM where it can, else TCG), booted with `cgroup_no_v1=all`, runs the host-built test binaries of
# rekube-node-agent (the library's unit tests and tests/runtime.rs) as root, and this
# script exits with their status. It also runs rekube-csi's tests/kernel.rs there: the
# guest's root has every capability (CAP_SYS_RESOURCE among them, which this host's root
# lacks), so the driver's online ext4 expansion really runs (and must succeed) in CI.
#
#   1. Once, cached under $REKUBE_CACHE/vm (default ~/.cache/rekube/vm): a Debian 12 guest
#      made from Debian packages only: `debootstrap --variant=minbase bookworm` from apt's
#      own mirror with linux-image-amd64 (kernel and initramfs-tools initrd) and
#      busybox-static, as an ext4 image (mkfs.ext4 -d), plus a tiny PID 1 (/sbin/rekube-init).
#   2. Builds the test binaries on the host (same glibc as the guest: both Debian 12).
#   3. Boots the image read-only (qemu -snapshot; KVM where it can, else TCG; see below;
#      no network, no default devices: the device tests take the first block device the
#      kernel lists, which must not be an empty CD-ROM) with the binaries and a run
#      script shared over 9p; PID 1 mounts proc, sys, devtmpfs and the share, the run
#      script mounts cgroup2 on /sys/fs/cgroup, checks that only cgroup v2 exists, runs
#      the tests, writes their status to the share and PID 1 powers off.
#
# Usage: vm-cgroup2.sh [TEST-FILTER...]   (arguments go to every test binary; e.g.
#        `vm-cgroup2.sh cgroups` runs the tests whose names contain "cgroups")
# Env: REKUBE_CACHE, CARGO_TARGET_DIR, REKUBE_VM_MEMORY (MiB, 2048), REKUBE_VM_CPUS (2),
#      REKUBE_VM_TIMEOUT (seconds for the boot and tests, 1200), REKUBE_VM_REBUILD=1 (make
#      the image again), REKUBE_VM_ACCEL (auto, kvm or tcg; auto takes KVM only where
#      kvm_intel or kvm_amd is loaded), REKUBE_VM_TEST_BINARIES (test executables built
#      already, space-separated: no cargo run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
REKUBE_CACHE=${REKUBE_CACHE:-$HOME/.cache/rekube}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REKUBE_CACHE/target}
VM_DIR="$REKUBE_CACHE/vm"
# Bump when what the image holds changes: a cached image of another version is remade.
IMAGE_VERSION=4
MEMORY=${REKUBE_VM_MEMORY:-2048}
CPUS=${REKUBE_VM_CPUS:-2}
TIMEOUT=${REKUBE_VM_TIMEOUT:-1200}
say() { printf '[vm-cgroup2] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, and the tests run as root in the guest)"

# The accelerator. KVM needs the kernel's kvm_intel or kvm_amd module. These machines'
# /dev/kvm is PVM (kvm_pvm, a paravirtual nested KVM): it runs only guest kernels built
# with CONFIG_PVM_GUEST, which Debian's kernel is not (it hangs right after "Probing
# EDD", with no kernel output). There, qemu emulates the CPU (TCG): slower, but the guest
# runs Debian's real kernel all the same.
ACCEL=${REKUBE_VM_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
  if [ -e /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    ACCEL=kvm
  else
    ACCEL=tcg
    if [ -d /sys/module/kvm_pvm ]; then
      say "/dev/kvm is PVM (kvm_pvm), which cannot boot Debian's kernel: emulating the CPU (TCG)"
    else
      say "no kvm_intel or kvm_amd: emulating the CPU (TCG)"
    fi
  fi
fi
case "$ACCEL" in
  kvm) ACCEL_ARGS=(-enable-kvm -cpu host) ;;
  tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
  *) die "REKUBE_VM_ACCEL must be auto, kvm or tcg, not $ACCEL" ;;
esac

# --- host packages ----------------------------------------------------------------------
t0=$SECONDS
source "$here/apt.sh"
apt_install_missing qemu-system-x86 debootstrap e2fsprogs jq
say "host packages ready in $((SECONDS - t0))s"

# --- the guest image (cached) -----------------------------------------------------------
# apt's configured Debian mirror (deb822 `URIs:` or a one-line `deb URL bookworm main`).
debian_mirror() {
  local f url
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    if [[ $f == *.sources ]]; then
      url=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u && /(^| )bookworm( |$)/ {print u; exit}' "$f")
    else
      url=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' "$f")
    fi
    [ -n "$url" ] && { echo "$url"; return; }
  done
  die "no Debian bookworm mirror in /etc/apt/sources.list*"
}

build_image() {
  local work="$VM_DIR/build" mirror
  mirror=$(debian_mirror)
  rm -rf "$work"
  mkdir -p "$work"
  # xfsprogs: rekube-csi's kernel tests make, mount and grow xfs volumes.
  say "debootstrap bookworm (minbase, linux-image-amd64, busybox-static, xfsprogs) from $mirror"
  local t=$SECONDS
  debootstrap --variant=minbase --include=linux-image-amd64,busybox-static,xfsprogs \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
  say "debootstrap done in $((SECONDS - t))s"
  local root="$work/rootfs" kernel initrd
  kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
  initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)
  [ -f "$kernel" ] && [ -f "$initrd" ] || die "no kernel or initrd in $root/boot"
  cp "$kernel" "$work/vmlinuz"
  cp "$initrd" "$work/initrd.img"
  # PID 1: mounts the share and runs its run.sh, whose status goes to the share; then
  # powers off (also when run.sh is missing or fails to start).
  cat >"$root/sbin/rekube-init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The initramfs moved its /proc, /sys and /dev here already.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /mnt/rekube
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
modprobe -a 9p 9pnet_virtio
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 rekube /mnt/rekube; then
  sh /mnt/rekube/run.sh
  echo "rekube-vm: status $?"
else
  echo "rekube-vm: cannot mount the 9p share"
fi
sync
busybox poweroff -f
EOF
  chmod 755 "$root/sbin/rekube-init"
  echo rekube-vm >"$root/etc/hostname"
  # The image: the rootfs in ext4 (mkfs.ext4 -d copies a directory, no loop mount).
  local mib
  # Free space for the tests' files (/tmp is on this ext4 root, as on Debian 12); the
  # image is sparse and each boot writes to a throwaway overlay (qemu -snapshot).
  mib=$(( $(du -sm "$root" | cut -f1) + 2048 ))
  rm -f "$work/rootfs.img"
  mkfs.ext4 -q -L rekube-vm -d "$root" "$work/rootfs.img" "${mib}M" >/dev/null
  rm -rf "$root"
  echo "$IMAGE_VERSION" >"$work/version"
  rm -rf "$VM_DIR/image"
  mv "$work" "$VM_DIR/image"
}

t0=$SECONDS
mkdir -p "$VM_DIR"
# One image build at a time (a second run waits, then finds the image made).
exec 9>"$VM_DIR/lock"
flock 9
if [ "${REKUBE_VM_REBUILD:-}" = 1 ] || [ "$(cat "$VM_DIR/image/version" 2>/dev/null)" != "$IMAGE_VERSION" ]; then
  build_image
  say "guest image built in $((SECONDS - t0))s ($VM_DIR/image)"
else
  say "guest image cached ($VM_DIR/image)"
fi
exec 9>&-

# --- the test binaries (built on the host) ----------------------------------------------
t0=$SECONDS
run_dir=$(mktemp -d "$VM_DIR/run.XXXXXX")
trap 'rm -rf "$run_dir"' EXIT
mkdir -p "$run_dir/bin"
if [ -n "${REKUBE_VM_TEST_BINARIES:-}" ]; then
  printf '%s\n' $REKUBE_VM_TEST_BINARIES >"$run_dir/executables"
else
  for build in "-p rekube-node-agent --lib --test runtime" "-p rekube-csi --test kernel"; do
    # shellcheck disable=SC2086 # the words of $build are cargo's arguments
    (cd "$repo" && cargo test $build --no-run --message-format=json 2>>"$run_dir/cargo.err") |
      jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable' >>"$run_dir/executables" ||
      { cat "$run_dir/cargo.err" >&2; die "cargo could not build the test binaries ($build)"; }
  done
  [ "$(wc -l <"$run_dir/executables")" = 3 ] || { cat "$run_dir/cargo.err" >&2; die "expected 3 test binaries, got: $(cat "$run_dir/executables")"; }
fi
while read -r exe; do
  [ -x "$exe" ] || die "no test binary $exe"
  cp -l "$exe" "$run_dir/bin/" 2>/dev/null || cp "$exe" "$run_dir/bin/"
  # The suite as cargo names it in its "Running" line, marked as run in this VM, so
  # that e2e/scripts/test-summary.sh counts it apart from the host's run.
  name=$(basename "$exe")
  case "${name%-*}" in
    rekube_node_agent) label="unittests vm-cgroup2:src/lib.rs" ;;
    kernel) label="vm-cgroup2:csi/tests/kernel.rs" ;;
    *) label="vm-cgroup2:tests/${name%-*}.rs" ;;
  esac
  printf '%s %s\n' "$name" "$label" >>"$run_dir/tests"
done <"$run_dir/executables"
say "test binaries ready in $((SECONDS - t0))s: $(cut -d' ' -f1 "$run_dir/tests" | tr '\n' ' ')"

# --- the run script the guest's PID 1 runs ----------------------------------------------
{
  echo '#!/bin/sh'
  printf 'set -- '; printf '%q ' "$@"; echo
  cat <<'EOF'
share=/mnt/rekube
echo "rekube-vm: booted in $(cut -d' ' -f1 /proc/uptime)s"
# cgroup v2 only: the unified hierarchy on /sys/fs/cgroup, as systemd mounts it.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup || exit 90
echo "rekube-vm: kernel $(uname -r), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "rekube-vm: /sys/fs/cgroup is not cgroup2"; exit 91; }
# No v1 hierarchy may be mounted (cgroup_no_v1=all refuses them).
if mkdir -p /tmp/v1 && mount -t cgroup -o memory cgroup /tmp/v1 2>/dev/null; then
  echo "rekube-vm: a cgroup v1 hierarchy could be mounted: cgroup_no_v1=all did not apply"; exit 92
fi
for c in cpu memory pids; do
  grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || { echo "rekube-vm: no $c controller on cgroup2"; exit 93; }
done
export HOME=/root RUST_BACKTRACE=1 PATH=/usr/sbin:/usr/bin:/sbin:/bin
# Loopback up, as on any booted host (the probe tests listen on 127.0.0.1).
busybox ip link set lo up || exit 94
# Loop devices and xfs (modules in Debian's kernel) for rekube-csi's kernel tests; and
# they must find every capability here, CAP_SYS_RESOURCE (bit 24) for the online ext4
# resize.
modprobe -a loop xfs || exit 95
caps=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
[ $(( (0x$caps >> 24) & 1 )) = 1 ] || { echo "rekube-vm: root lacks CAP_SYS_RESOURCE (CapEff $caps)"; exit 96; }
status=0
while read -r t label; do
  echo "     Running $label ($share/bin/$t)"
  start=$(cut -d' ' -f1 /proc/uptime)
  # The service proxy's tests (nft in a network namespace) have nothing to do with
  # cgroups, and the guest has no nft: they run on the host only.
  skip=""
  case "$t" in rekube_node_agent-*) skip="--skip proxy::" ;; esac
  "$share/bin/$t" --color never $skip "$@" </dev/null || status=1
  echo "rekube-vm: $t took $(awk -v s="$start" '{print $1 - s}' /proc/uptime)s"
done <"$share/tests"
echo "$status" >"$share/status"
exit "$status"
EOF
} >"$run_dir/run.sh"

# --- boot -------------------------------------------------------------------------------
image="$VM_DIR/image"
say "booting the guest ($ACCEL, ${CPUS} cpus, ${MEMORY} MiB, cgroup_no_v1=all)"
t0=$SECONDS
set +e
timeout "$TIMEOUT" qemu-system-x86_64 \
  "${ACCEL_ARGS[@]}" -smp "$CPUS" -m "$MEMORY" \
  -nodefaults -display none -serial stdio -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 panic=-1 init=/sbin/rekube-init systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
  -drive "file=$image/rootfs.img,format=raw,if=virtio,snapshot=on" \
  -virtfs "local,path=$run_dir,mount_tag=rekube,security_model=none" \
  </dev/null 2>&1 | sed -u 's/\r$//' | tee "$run_dir/console.log"
qemu_status=${PIPESTATUS[0]}
set -e
say "guest ran for $((SECONDS - t0))s (qemu exit $qemu_status)"
[ "$qemu_status" = 124 ] && die "the guest did not power off within ${TIMEOUT}s"
[ -f "$run_dir/status" ] || die "the guest wrote no test status (see the console output above)"
status=$(cat "$run_dir/status")
if [ "$status" = 0 ]; then
  say "tests passed on cgroup v2"
else
  say "tests FAILED on cgroup v2"
fi
exit "$status"
