# syntax=docker/dockerfile:1
# rekube-controllers' image, for docker or buildah (docs/images.md). From the repository's
# root:
#
#   docker build -f images/controllers.Dockerfile -t rekube/rekube-controllers:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg CREATED=$(date -u +%FT%TZ) .
#
# The same files, layers and config as `just images` (e2e/scripts/images.sh) makes on a
# machine without a registry: Debian 12's glibc (images/rootfs.sh glibc), then the stripped
# release binary in /usr/local/bin, run as the non-root user 65532.
ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rekube-controllers --bin rekube-controllers \
 && mkdir -p /out/usr/local/bin \
 && strip --strip-all -o /out/usr/local/bin/rekube-controllers target/release/rekube-controllers \
 && find /out -exec touch -h -d @0 {} +

FROM docker.io/library/debian:${DEBIAN}-slim AS rootfs
COPY images/rootfs.sh /usr/local/bin/rootfs.sh
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rootfs.sh glibc /rootfs/glibc

FROM scratch
COPY --from=rootfs /rootfs/glibc/ /
COPY --from=build /out/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/rekube-controllers"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=""
ARG SOURCE=https://example.invalid/rekube
LABEL org.opencontainers.image.title=rekube-controllers \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.source=${SOURCE} \
      org.opencontainers.image.created=${CREATED} \
      org.opencontainers.image.licenses=Apache-2.0
