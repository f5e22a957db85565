# syntax=docker/dockerfile:1
#
# refbackend container image.
#
#   docker build -t refbackend:latest .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDIS_URL=... -e JWT_SECRET=... refbackend:latest
#
# Stages:
#   chef     rust:1-bookworm + cargo-chef (built from source with `cargo install --locked`)
#   planner  computes recipe.json: the dependency graph only (Cargo.toml/Cargo.lock, no app code)
#   builder  `cargo chef cook` builds just the dependencies -> a cached layer that is reused as long
#            as Cargo.toml/Cargo.lock do not change; then the application itself is built
#   runtime  debian:bookworm-slim, non-root, only the binary + ca-certificates + curl (HEALTHCHECK)
#            + ffmpeg (ffmpeg/ffprobe for `refbackend worker`: video transcoding to HLS, posters)
#
# Nothing secret is baked in: JWT_SECRET, DATABASE_URL, REDIS_URL... come from the environment at
# run time (see docs/configuration.md). Migrations are embedded in the binary (sqlx::migrate!).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS chef
# cargo-chef from crates.io, compiled here (no prebuilt binary is downloaded).
ARG CARGO_CHEF_VERSION=^0.1
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME:-/usr/local/cargo}/registry"
WORKDIR /app

# ---------------------------------------------------------------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
FROM chef AS builder
# Dependencies only (the recipe carries Cargo.lock; the final `cargo build --locked` enforces it):
# this layer is rebuilt only when the recipe (manifests + lockfile) changes.
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json --bin refbackend
# The application (.dockerignore keeps target/, docs, tests, deploy files and secrets out).
# SQLX_OFFLINE: should `sqlx::query!` macros appear, they compile from a committed `.sqlx/`
# (cargo sqlx prepare) instead of needing a database during `docker build`.
ENV SQLX_OFFLINE=true
COPY . .
RUN cargo build --release --locked --bin refbackend \
    && install -D -m 0755 target/release/refbackend /out/refbackend

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# ffmpeg: one image for `serve` and `worker` (the worker runs ffmpeg/ffprobe). Debian's package
# without recommends (no X11/VA drivers, fonts, docs): several hundred MB of codec libraries the API
# alone does not need, accepted to keep one image, one tag and one build for every process of a release.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 refbackend \
    && useradd --system --uid 10001 --gid refbackend --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin refbackend \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/refbackend/media /var/lib/refbackend/scratch
# Mount points owned by the service user: Docker initialises an empty named or anonymous volume
# from the image's directory, ownership included, so the read-only container can write to the
# media volume (MEDIA_STORE_URL=file:///var/lib/refbackend/media) and the worker's scratch space.

COPY --from=builder /out/refbackend /usr/local/bin/refbackend

# Non-secret defaults only. Everything else (DATABASE_URL, REDIS_URL, JWT_SECRET, ...) is
# supplied at run time; in production the binary refuses to start without a strong JWT_SECRET.
ENV APP_ENV=production \
    BIND_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json \
    RUST_LOG=info,sqlx=warn,tower_http=warn

USER 10001:10001
EXPOSE 8080

# The worker (`refbackend worker`) serves /metrics and /health on WORKER_METRICS_ADDR
# (0.0.0.0:9100); compose and Kubernetes give it its own health check on that port.
EXPOSE 9100

# Liveness only (/health touches no dependency). Readiness (/ready) is for load balancers
# and orchestrators (compose healthcheck of the api service, Kubernetes readinessProbe).
# One image runs `serve` (8080) or `worker` (9100, the default WORKER_METRICS_ADDR): either
# answering is healthy, so `docker run … worker` is not reported unhealthy. Compose and
# Kubernetes define their own checks per process and do not rely on this one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:8080/health || curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:9100/health"]

# On SIGTERM the server flips /ready to 503, keeps serving SHUTDOWN_READINESS_DELAY (5s),
# then drains for up to SHUTDOWN_DRAIN_TIMEOUT (25s): give `docker stop -t 35` / stop_grace_period.
# The worker stops claiming jobs and finishes the current one for up to WORKER_DRAIN_TIMEOUT
# (120s) before handing it back to the queue: give it `docker stop -t 135`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["refbackend"]
CMD ["serve"]
