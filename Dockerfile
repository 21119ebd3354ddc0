# syntax=docker/dockerfile:1
#
# The chatnode image: the release binary on Debian slim, running as an unprivileged user.
#
#   docker build -t chatnode .
#   docker run -d --name chatnode -p 8080:8080 -v chatnode-data:/var/lib/chatnode chatnode
#   docker exec chatnode chatnode token --user alice
#
# The entrypoint is the `chatnode` command and the default arguments are `serve`, so other
# subcommands replace only the arguments: `docker run --rm IMAGE token --user alice`,
# `docker run --rm -e CHATNODE_SCYLLA_NODES=host:9042 IMAGE migrate`, or
# `docker run IMAGE serve --config /etc/chatnode/production.toml`.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------
# Build stage. The slim Rust image has the C compiler that aws-lc (the JWT crypto backend) and
# jemalloc (the node's allocator) need; jemalloc's build also needs make.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target directories are BuildKit cache mounts, so a rebuild after a source
# change recompiles only the node, not its dependencies. A cache mount is gone after the RUN,
# so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chatnode \
    && install -m 0755 target/release/chatnode /usr/local/bin/chatnode

# ---------------------------------------------------------------------------------------------
# Runtime stage: the same Debian release as the builder, so the binary finds the glibc it was
# linked against.
FROM debian:bookworm-slim

# ca-certificates: for outbound TLS, such as S3 media storage and FCM push.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chatnode \
    && useradd --system --uid 10001 --gid chatnode --home-dir /var/lib/chatnode \
       --shell /usr/sbin/nologin chatnode \
    && mkdir -p /var/lib/chatnode \
    && chown chatnode:chatnode /var/lib/chatnode

COPY --from=build /usr/local/bin/chatnode /usr/local/bin/chatnode
# default.toml (every option, documented) and production.toml (an example to adapt).
COPY config/ /etc/chatnode/

# Listen on every interface of the container; keep the embedded store and the generated
# secret on the volume. Other settings come from CHATNODE_* variables or a --config file.
ENV CHATNODE_LISTEN=0.0.0.0:8080 \
    CHATNODE_DATA_DIR=/var/lib/chatnode

# The directory is created and owned by chatnode above, before VOLUME, so a new named volume
# starts with that ownership.
VOLUME /var/lib/chatnode
WORKDIR /var/lib/chatnode
USER chatnode:chatnode
EXPOSE 8080

# No HEALTHCHECK: the image carries no HTTP client (curl would add a package to every image
# only for this) and the node has no self-check subcommand. Orchestrators probe the node
# themselves: GET /healthz for liveness, GET /readyz for readiness (Kubernetes ignores a
# Dockerfile HEALTHCHECK in any case).

# SIGTERM drains the node: rooms finish their writes, connections close with 1001, exit 0.
# Each phase may take up to shutdown.grace_secs (10 s by default), more than `docker stop`
# waits by default: use `docker stop -t 30`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["chatnode"]
CMD ["serve"]
