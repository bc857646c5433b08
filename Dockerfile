# The image operators run: `docker run ... <image> --worker-id ...`, as with the Go worker.
#
# The worker is built outside the image (scripts/release.sh: `cargo build --release`, stripped)
# and copied in, so the image build needs no toolchain and no network. The build context must
# hold the binary at ./oz-agent-worker (scripts/release.sh stages it). The binary links glibc,
# hence a Debian base (slim) rather than Alpine's musl.
#
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim -t oz-agent-worker:dev <context>
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oz-agent-worker" \
      org.opencontainers.image.description="Self-hosted worker for Warp's Oz cloud agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# ca-certificates: TLS to Warp, registries and OTLP collectors (installed only when the base
# lacks it, so a base that already has it builds offline). /bin/sh stays: the Helm chart's
# default liveness probe runs `kill -0 1` through it. uid/gid 10001 like the Go image; the
# worker's default state_dir /var/lib/oz-agent-worker is writable by it.
RUN set -eu; \
    if ! dpkg-query -W -f='${Status}' ca-certificates 2>/dev/null | grep -q 'ok installed'; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 10001 oz; \
    useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin oz; \
    mkdir -p /app /var/lib/oz-agent-worker; \
    chown 10001:10001 /app /var/lib/oz-agent-worker

WORKDIR /app
COPY --chown=0:0 oz-agent-worker /app/oz-agent-worker
USER 10001:10001
ENTRYPOINT ["/app/oz-agent-worker"]
