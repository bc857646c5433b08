# The image operators run: `docker run ... <image> --worker-id ...`, as with the Go worker.
#
# The worker is built outside the image (scripts/release.sh: `cargo build --release`, stripped)
# and copied in, so the image build needs no toolchain and no network. The build context must
# hold the binary at ./oz-agent-worker (scripts/release.sh stages it). The binary links glibc,
# hence a Debian base rather than Alpine's musl.
#
# Two stages: the Debian bookworm base assembles a minimal root filesystem (the binary and the
# shared libraries it links, dash as /bin/sh, the CA bundle, the passwd/group entries, the
# writable directories), which the final stage copies onto an empty image. What the final
# image holds is only that: no package manager, no coreutils.
#
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim -t oz-agent-worker:dev <context>
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE} AS rootfs

# ca-certificates: TLS to Warp, registries and OTLP collectors (installed only when the base
# lacks it, so a base that already has it builds offline). /bin/sh (dash) stays: the Helm
# chart's default liveness probe runs `kill -0 1` through it (a dash builtin). uid/gid 10001
# like the Go image; the worker's default state_dir /var/lib/oz-agent-worker is writable by it.
COPY oz-agent-worker /rootfs/app/oz-agent-worker
RUN set -eu; \
    if ! dpkg-query -W -f='${Status}' ca-certificates 2>/dev/null | grep -q 'ok installed'; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    cd /rootfs; \
    mkdir -p bin etc/ssl/certs tmp var/lib/oz-agent-worker; \
    chmod 1777 tmp; \
    cp /bin/dash bin/sh; \
    for file in app/oz-agent-worker bin/sh; do \
        ldd "$file" | awk '/=>/ { print $3 } /^\t\// { print $1 }' | while read -r lib; do \
            [ -e "$lib" ] || continue; \
            mkdir -p ".$(dirname "$lib")"; \
            cp -L "$lib" ".$lib"; \
        done; \
    done; \
    cp -L /etc/ssl/certs/ca-certificates.crt etc/ssl/certs/ca-certificates.crt; \
    printf 'root:x:0:0:root:/root:/bin/sh\noz:x:10001:10001:oz:/app:/bin/sh\n' > etc/passwd; \
    printf 'root:x:0:\noz:x:10001:\n' > etc/group; \
    chown 10001:10001 app var/lib/oz-agent-worker; \
    chown 0:0 app/oz-agent-worker; \
    chmod 0755 app/oz-agent-worker

FROM scratch
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oz-agent-worker" \
      org.opencontainers.image.description="Self-hosted worker for Warp's Oz cloud agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="debian:bookworm (glibc, dash, ca-certificates)"
COPY --from=rootfs /rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["/app/oz-agent-worker"]
