#!/usr/bin/env bash
# Build a busybox image from Debian's busybox-static, with no registry and no Docker, as a
# docker-archive tarball (what `docker save` writes) that `rekube-node-agent image import`
# loads: one layer with /bin/busybox and its applets as symlinks, and any further FILEs
# (static binaries) in /bin.
#   busybox-image.sh OUT.tar [NAME [FILE...]]    (NAME defaults to busybox:1.36)
set -euo pipefail
out=${1:?usage: busybox-image.sh OUT.tar [NAME [FILE...]]}
name=${2:-busybox:1.36}
shift $(( $# < 2 ? $# : 2 ))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
for file in "$@"; do
  install -m 0755 "$file" "$root/bin/$(basename "$file")"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "rekube busybox image" > "$root/etc/hostname"
mkdir -p "$work/archive"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/archive/layer.tar" .
diff_id=$(sha256sum "$work/archive/layer.tar" | cut -d' ' -f1)
cat > "$work/archive/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$name" > "$work/archive/manifest.json"
tar -C "$work/archive" -cf "$out" manifest.json config.json layer.tar
echo "$out"
