#!/usr/bin/env bash
# Assemble one of the images' base root filesystems from Debian packages, with no package
# manager in it: the packages are fetched with `apt-get download`, unpacked with
# `dpkg-deb -x` into a scratch directory, and only the files the image needs are copied
# out (the named programs, the shared libraries their ELF headers need, transitively, and
# a few data files), into a merged-/usr tree (/bin, /sbin, /lib, /lib64 are symlinks into
# /usr, as on Debian 12). Used by e2e/scripts/images.sh (`just images`) and by the
# Dockerfiles next to it, so both builds give the same files.
#
#   rootfs.sh glibc OUT                 the layer both images start with: glibc's loader,
#                                       libc, libm, libgcc_s; /etc/passwd and /etc/group
#                                       (root, nobody, nonroot 65532), nsswitch.conf, the CA
#                                       bundle, /tmp
#   rootfs.sh node-agent OUT GLIBC      the node agent's tools (nft, conntrack, ip, iptables
#                                       nft and legacy, nsenter), skipping what GLIBC has
#   rootfs.sh KIND --packages           the Debian packages KIND is made from (not counting
#                                       the libraries they depend on)
#
# REKUBE_DEBS names a directory where the .deb files are kept between runs (default: a
# temporary one). SOURCE_DATE_EPOCH (default 0) is every file's mtime, so that the same
# packages always give the same layer.
set -euo pipefail
umask 022

usage="usage: rootfs.sh glibc|node-agent OUT [GLIBC] | rootfs.sh glibc|node-agent --packages"
kind=${1:?$usage}
out=${2:?$usage}
base=${3:-}
case $kind in
  glibc) packages=(libc6 libgcc-s1 gcc-12-base ca-certificates) ;;
  node-agent) packages=(nftables conntrack iproute2 iptables util-linux netbase) ;;
  *) echo "rootfs.sh: unknown rootfs $kind (glibc or node-agent)" >&2; exit 2 ;;
esac
# The packages named (their library dependencies are found below).
if [ "$out" = --packages ]; then
  echo "${packages[@]}"
  exit 0
fi
if [ "$kind" = node-agent ]; then
  [ -d "$base" ] || { echo "rootfs.sh node-agent: give the glibc rootfs as the third argument" >&2; exit 2; }
  base=$(cd "$base" && pwd)
fi
for tool in apt-get apt-cache dpkg-deb readelf; do
  command -v "$tool" >/dev/null || { echo "rootfs.sh: $tool is missing (apt-get install apt dpkg binutils)" >&2; exit 1; }
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
debs=${REKUBE_DEBS:-$scratch/debs}
mkdir -p "$debs" "$scratch/pkg"
debs=$(cd "$debs" && pwd)
staging=$scratch/pkg

# The packages and, through Depends and Pre-Depends (the first of alternatives), the
# library packages they need; nothing else (debconf, perl-base, ... are not followed).
declare -A seen=()
frontier=("${packages[@]}")
while [ ${#frontier[@]} -gt 0 ]; do
  for pkg in "${frontier[@]}"; do seen[$pkg]=1; done
  next=()
  alternative=0
  while IFS= read -r line; do
    case $line in
      "  Depends: "* | "  PreDepends: "* | " |Depends: "* | " |PreDepends: "*)
        dep=${line#*: }
        if [ $alternative = 0 ] && [[ $dep != "<"* ]] && [[ $dep == lib* || $dep == zlib1g ]] &&
          [ -z "${seen[$dep]:-}" ]; then
          next+=("$dep")
        fi
        [[ $line == " |"* ]] && alternative=1 || alternative=0 ;;
      " "*) ;;
      *) alternative=0 ;;
    esac
  done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${frontier[@]}" 2>/dev/null)
  frontier=()
  if [ ${#next[@]} -gt 0 ]; then
    mapfile -t frontier < <(printf '%s\n' "${next[@]}" | sort -u)
  fi
done

# Download what is not there yet (the file name carries the version), unpack everything.
declare -A deb=()
missing=()
while read -r _uri file _size _hash; do
  pkg=${file%%_*}
  deb[$pkg]=$file
  [ -s "$debs/$file" ] || missing+=("$pkg")
done < <(cd "$scratch" && apt-get download --print-uris "${!seen[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null) ||
    { echo "rootfs.sh: apt-get download ${missing[*]} failed" >&2; exit 1; }
fi
for pkg in "${!deb[@]}"; do
  dpkg-deb -x "$debs/${deb[$pkg]}" "$staging"
done

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# A path of the unpacked packages, as it is in a merged-/usr root.
merged() {
  case $1 in
    bin/* | sbin/* | lib/* | lib64/*) echo "usr/$1" ;;
    *) echo "$1" ;;
  esac
}

# Copy one path of the packages (relative to their root) into the rootfs, following
# symlinks (each link and its target are copied) and, for ELF files, their NEEDED
# libraries.
declare -A copied=()
copy() {
  local rel=$1 dest target next
  [ -z "${copied[$rel]:-}" ] || return 0
  copied[$rel]=1
  if [ ! -e "$staging/$rel" ] && [ ! -L "$staging/$rel" ]; then
    echo "rootfs.sh: $rel is in none of the packages (${!seen[*]})" >&2
    exit 1
  fi
  dest=$(merged "$rel")
  if [ -n "$base" ] && { [ -e "$base/$dest" ] || [ -L "$base/$dest" ]; }; then
    return 0
  fi
  mkdir -p "$out/$(dirname "$dest")"
  cp -a "$staging/$rel" "$out/$dest"
  if [ -L "$staging/$rel" ]; then
    target=$(readlink "$staging/$rel")
    case $target in
      /*) next=${target#/} ;;
      *) next=$(realpath -m -s "/$(dirname "$rel")/$target") && next=${next#/} ;;
    esac
    copy "$next"
  elif [ "$(head -c4 "$staging/$rel" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    local lib path
    for lib in $(readelf -d "$staging/$rel" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      path=$(library "$lib")
      copy "$path"
    done
  fi
}

# Where the packages have a shared library.
library() {
  local dir
  for dir in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 usr/lib64 lib usr/lib; do
    if [ -e "$staging/$dir/$1" ] || [ -L "$staging/$dir/$1" ]; then
      echo "$dir/$1"
      return
    fi
  done
  echo "rootfs.sh: no package of ${!seen[*]} has $1" >&2
  exit 1
}

# The copyright file (the licence) of each package a file of the rootfs came from.
copyrights() {
  local pkg f
  for pkg in "${!deb[@]}"; do
    for f in $(dpkg-deb -c "$debs/${deb[$pkg]}" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./||'); do
      if [ -n "${copied[$f]:-}" ] && [ -f "$staging/usr/share/doc/$pkg/copyright" ]; then
        copy "usr/share/doc/$pkg/copyright"
        break
      fi
    done
  done
}

case $kind in
  glibc)
    mkdir -p "$out"/usr/{bin,sbin,lib,lib64} "$out"/etc/ssl/certs "$out"/root "$out"/tmp
    chmod 1777 "$out/tmp"
    chmod 0700 "$out/root"
    for dir in bin sbin lib lib64; do ln -s "usr/$dir" "$out/$dir"; done
    copy lib64/ld-linux-x86-64.so.2
    for lib in libc.so.6 libm.so.6 libgcc_s.so.1; do
      path=$(library "$lib")
      copy "$path"
    done
    # What update-ca-certificates makes of the package (dpkg-deb -x runs no scripts).
    find "$staging/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort |
      xargs cat > "$out/etc/ssl/certs/ca-certificates.crt"
    copy usr/share/doc/ca-certificates/copyright
    cat > "$out/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin
EOF
    cat > "$out/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
    cat > "$out/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
ethers: files
rpc: files
EOF
    ;;
  node-agent)
    # What the agent runs: the nftables proxy and pod routes' masquerade (nft), stale UDP
    # flows (conntrack), pod routes (ip), the iptables proxy mode and the CNI plugins'
    # rules (iptables; the nft backend by default, as Debian's alternatives choose, and
    # the legacy one by name), and other network namespaces (nsenter).
    copy usr/sbin/nft
    copy usr/sbin/conntrack
    copy bin/ip
    copy usr/bin/nsenter
    for link in "$staging"/usr/sbin/{iptables,ip6tables}-{nft,legacy}{,-save,-restore}; do
      copy "usr/sbin/$(basename "$link")"
    done
    for tool in iptables ip6tables; do
      for suffix in "" -save -restore; do
        ln -s "$tool-nft$suffix" "$out/usr/sbin/$tool$suffix"
      done
    done
    # iptables' matches and targets, loaded with dlopen(3).
    for ext in "$staging"/usr/lib/x86_64-linux-gnu/xtables/*.so; do
      copy "usr/lib/x86_64-linux-gnu/xtables/$(basename "$ext")"
    done
    for file in "$staging"/etc/iproute2/*; do
      [ -f "$file" ] && copy "etc/iproute2/$(basename "$file")"
    done
    for file in protocols services ethertypes rpc; do copy "etc/$file"; done
    ;;
esac
copyrights

find "$out" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
