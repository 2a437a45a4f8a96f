#!/usr/bin/env bash
# `just images`: rekube's container images, built on this machine without pulling
# anything (docs/images.md). The base root filesystems come from Debian packages
# (images/rootfs.sh, shared with images/*.Dockerfile), the images are assembled with umoci
# and checked and converted with skopeo. Writes to $REKUBE_CACHE/images/:
#
#   rekube-controllers-VERSION.oci.tar         rekube/rekube-controllers:VERSION, an OCI
#   rekube-node-agent-VERSION.oci.tar          archive (kind load image-archive, ctr images
#                                              import, rekube-node-agent image import,
#                                              docker load from Docker 25 on)
#   rekube-*-VERSION.docker.tar                the same as docker-archives (any docker load)
#   kubectl-rekube-VERSION-linux-amd64         the kubectl plugin, a release binary
#
# VERSION is the workspace's crate version, which is the Helm chart's appVersion. A warm
# run rebuilds nothing: the base rootfs are kept in base-*/ and rebuilt when rootfs.sh or
# Debian's packages change, an image when its binary, its base, the revision or this
# script change. SOURCE_DATE_EPOCH, when set, is the images' creation time.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${REKUBE_CACHE:-$HOME/.cache/rekube}
out=$cache/images
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
# Run from `cargo test` (e2e/tests/images.rs), the build would inherit the variables cargo
# sets for a test (CARGO_PKG_*, CARGO, RUSTUP_TOOLCHAIN, LD_LIBRARY_PATH, …), and the
# release build they fingerprint would be redone by every call from the other place.
for v in $(compgen -e | grep -E '^(CARGO|RUSTUP_TOOLCHAIN|RUST_RECURSION_COUNT|LD_LIBRARY_PATH)' | grep -vxE 'CARGO_HOME|CARGO_TARGET_DIR'); do unset "$v"; done
release=$CARGO_TARGET_DIR/release
start=$SECONDS
step() { printf '[images %3ds] %s\n' $((SECONDS - start)) "$*"; }
fail() { echo "images.sh: $*" >&2; exit 1; }

for tool in cargo umoci skopeo jq strip readelf apt-get apt-cache dpkg-deb sha256sum; do
  command -v "$tool" >/dev/null ||
    fail "$tool is missing (e2e/scripts/bootstrap.sh installs umoci, skopeo, jq, binutils)"
done

# The version and names the chart asks for.
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
source_url=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^repository = "\(.*\)"/\1/p' "$repo/Cargo.toml")
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$repo/helm/rekube/Chart.yaml")
[ -n "$version" ] || fail "no [workspace.package] version in Cargo.toml"
[ "$version" = "$app_version" ] ||
  fail "the crates are version $version but helm/rekube/Chart.yaml's appVersion is $app_version: the chart would ask for images that are not built"
for name in rekube-controllers rekube-node-agent; do
  grep -q "repository: rekube/$name\$" "$repo/helm/rekube/values.yaml" ||
    fail "helm/rekube/values.yaml has no image repository rekube/$name, the name this script tags"
done
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null) || revision=unknown
created=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$out" "$out/debs"
work=$(mktemp -d "$out/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT
step "rekube $version, revision $revision, into $out"

step "cargo build --release: rekube-controllers, rekube-node-agent, kubectl-rekube"
(cd "$repo" && cargo build --release --locked -p rekube-controllers -p rekube-node-agent -p kubectl-rekube \
  --bin rekube-controllers --bin rekube-node-agent --bin kubectl-rekube)

# A base rootfs, rebuilt when rootfs.sh or the candidate versions of its packages changed.
base_rootfs() {
  local kind=$1 dir stamp
  dir=$out/base-$kind
  shift
  stamp=$( {
    sha256sum < "$repo/images/rootfs.sh"
    apt-cache show --no-all-versions $("$repo/images/rootfs.sh" "$kind" --packages) |
      grep -E '^(Package|Version):'
    for dep in "$@"; do cat "$dep.stamp"; done
  } | sha256sum | cut -d' ' -f1)
  if [ -d "$dir" ] && [ "$(cat "$dir.stamp" 2>/dev/null)" = "$stamp" ]; then
    step "base-$kind: unchanged ($(du -sh "$dir" | cut -f1))"
    return
  fi
  step "base-$kind: from Debian packages (images/rootfs.sh $kind)"
  rm -rf "$dir.new"
  REKUBE_DEBS=$out/debs "$repo/images/rootfs.sh" "$kind" "$dir.new" "$@"
  rm -rf "$dir"
  mv "$dir.new" "$dir"
  echo "$stamp" > "$dir.stamp"
  step "base-$kind: $(du -sh "$dir" | cut -f1)"
}
base_rootfs glibc
base_rootfs node-agent "$out/base-glibc"

# The binary's layer: the stripped release binary in /usr/local/bin. Fails when the
# binary needs a library the base has not.
binary_layer() {
  local bin=$1 dir=$2 base lib
  shift 2
  rm -rf "$dir"
  mkdir -p "$dir/usr/local/bin"
  strip --strip-all -o "$dir/usr/local/bin/$bin" "$release/$bin"
  for lib in $(readelf -d "$release/$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    for base in "$@"; do
      [ -e "$base/usr/lib/x86_64-linux-gnu/$lib" ] && continue 2
    done
    fail "$bin needs $lib, which the image's base rootfs ($*) does not have: add it to images/rootfs.sh"
  done
  find "$dir" -exec touch -h -d @0 {} +
}

# A directory as a layer: GNU tar, sorted, owned by root, so the same files always give
# the same layer (umoci compresses it; `umoci insert` of Debian's umoci 0.4.7 writes layers
# without tar's end-of-archive blocks, which strict readers refuse).
layer() {
  local entries
  mapfile -t entries < <(ls -A "$1" | LC_ALL=C sort)
  tar --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$1" -cf "$2" "${entries[@]}"
}

# image NAME BASE... -- UMOCI-CONFIG-FLAGS...: rekube/NAME:VERSION from the bases and the
# binary NAME.
image() {
  local name=$1 bases=() layout archive docker
  archive=$out/$name-$version.oci.tar
  docker=$out/$name-$version.docker.tar
  shift
  while [ "$1" != -- ]; do bases+=("$1"); shift; done
  shift
  local bin_dir=$work/$name-binary
  binary_layer "$name" "$bin_dir" "${bases[@]}"
  local stamp
  stamp=$( {
    echo "$version $revision $source_url"
    sha256sum < "$bin_dir/usr/local/bin/$name"
    sha256sum < "${BASH_SOURCE[0]}"
    for base in "${bases[@]}"; do cat "$base.stamp"; done
  } | sha256sum | cut -d' ' -f1)
  if [ -f "$archive" ] && [ -f "$docker" ] && [ "$(cat "$out/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
    step "$name: unchanged"
    return
  fi
  step "$name: umoci layers (${bases[*]##*/} and /usr/local/bin/$name)"
  layout=$work/$name
  mkdir -p "$layout"
  local ref=$layout/oci:$version
  umoci init --layout "$layout/oci"
  umoci new --image "$ref"
  for base in "${bases[@]}"; do
    layer "$base" "$layout/layer.tar"
    umoci raw add-layer --image "$ref" --history.created "$created" \
      --history.created_by "images/rootfs.sh ${base##*/base-}" "$layout/layer.tar"
  done
  layer "$bin_dir" "$layout/layer.tar"
  umoci raw add-layer --image "$ref" --history.created "$created" \
    --history.created_by "COPY $name /usr/local/bin/$name" "$layout/layer.tar"
  rm "$layout/layer.tar"
  umoci config --image "$ref" --no-history --created "$created" \
    --architecture amd64 --os linux \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.entrypoint "/usr/local/bin/$name" --config.workingdir / \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.source=$source_url" \
    --config.label "org.opencontainers.image.created=$created" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    "$@"
  umoci gc --layout "$layout/oci"
  # Named as `docker save` names an OCI archive: containerd (ctr import, kind load) and
  # docker load take the full name from io.containerd.image.name; the tag is the ref.name.
  jq -c --arg name "docker.io/rekube/$name:$version" \
    '.manifests[0].annotations["io.containerd.image.name"] = $name' \
    "$layout/oci/index.json" > "$layout/index.json"
  mv "$layout/index.json" "$layout/oci/index.json"
  chmod -R a+rX "$layout/oci"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout/oci" \
    -cf "$layout/archive.tar" oci-layout index.json blobs
  step "$name: skopeo inspect, and skopeo copy to a docker-archive"
  skopeo inspect "oci-archive:$layout/archive.tar" >/dev/null
  rm -f "$layout/docker.tar"
  skopeo copy -q "oci-archive:$layout/archive.tar" \
    "docker-archive:$layout/docker.tar:rekube/$name:$version"
  mv "$layout/archive.tar" "$archive"
  mv "$layout/docker.tar" "$docker"
  echo "$stamp" > "$out/.$name.stamp"
}

image rekube-controllers "$out/base-glibc" -- --config.user 65532:65532
image rekube-node-agent "$out/base-glibc" "$out/base-node-agent" -- --config.user 0:0

step "kubectl-rekube: $out/kubectl-rekube-$version-linux-amd64"
strip --strip-all -o "$work/kubectl-rekube" "$release/kubectl-rekube"
if ! cmp -s "$work/kubectl-rekube" "$out/kubectl-rekube-$version-linux-amd64"; then
  mv "$work/kubectl-rekube" "$out/kubectl-rekube-$version-linux-amd64"
  (cd "$out" && sha256sum "kubectl-rekube-$version-linux-amd64" > "kubectl-rekube-$version-linux-amd64.sha256")
fi

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
for name in rekube-controllers rekube-node-agent; do
  archive=$out/$name-$version.oci.tar
  # Compressed: the layers as pulled or loaded (gzip); uncompressed: as unpacked.
  compressed=$(tar -xOf "$archive" index.json | jq -r '.manifests[0].digest' | cut -d: -f2)
  compressed=$(tar -xOf "$archive" "blobs/sha256/$compressed" | jq '[.layers[].size] | add')
  uncompressed=$(tar -tvf "$out/$name-$version.docker.tar" | awk '$6 ~ /\.tar$/ { s += $3 } END { print s }')
  step "rekube/$name:$version: $(mib "$compressed") compressed, $(mib "$uncompressed") uncompressed: $archive"
done
step "kubectl-rekube $version: $(mib "$(stat -c %s "$out/kubectl-rekube-$version-linux-amd64")"): $out/kubectl-rekube-$version-linux-amd64"
