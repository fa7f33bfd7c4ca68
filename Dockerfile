# syntax=docker/dockerfile:1
#
# kickq in a container: `docker build -t kickq .`, then `docker run kickq --help`.
# The same image runs the worker (`run`, the default) and the stand-in API
# (`mock-zego`); docker-compose.yml uses it for both.

# ---- build ----------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Only what the build reads: the manifest and lockfile, the build script, the
# sources, and the migrations that `sqlx::migrate!` embeds at compile time.
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations ./migrations
COPY src ./src
COPY crates ./crates

# The build context has no .git, so the commit `kickq --version` shows comes
# from a build argument: `docker build --build-arg KICKQ_GIT_SHA=$(git
# rev-parse --short HEAD) -t kickq .` (without it: `unknown`). build.rs reads
# it from the environment, where an ARG is during RUN.
ARG KICKQ_GIT_SHA=unknown

# The cache mounts keep the registry and compiled dependencies between builds
# (BuildKit); the binary is copied out because the target dir is a mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kickq \
    && cp target/release/kickq /usr/local/bin/kickq

# ---- run ------------------------------------------------------------------
FROM debian:bookworm-slim

# CA roots for https:// to the real API and TLS to the broker or database.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged user: kickq needs no file system and no low port.
RUN groupadd --system --gid 10001 kickq \
    && useradd --system --uid 10001 --gid kickq --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin kickq

COPY --from=builder /usr/local/bin/kickq /usr/local/bin/kickq

# The default metrics address is loopback, which nothing outside the container
# can reach; in a container /metrics, /healthz and /readyz listen on all
# interfaces so Prometheus and health checks can get to them.
ENV KICKQ_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464

USER 10001:10001
ENTRYPOINT ["kickq"]
CMD ["run"]
