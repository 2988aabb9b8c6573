# syntax=docker/dockerfile:1
#
# sentinel: the daemon (`sentinel run`) in a container.
#
#   docker build -t sentinel .
#   docker run -d -p 4318:4318 --stop-timeout 40 \
#     -v "$PWD/sentinel.toml:/etc/sentinel/config.toml:ro" \
#     -v sentinel-data:/var/lib/sentinel \
#     -e SENTINEL_INGEST_TOKEN \
#     sentinel
#
# The configuration is mounted at /etc/sentinel/config.toml (SENTINEL_CONFIG below).
# sentinel has no environment variable for the listen address, so the mounted file must
# set server.host = "0.0.0.0", or the daemon listens on the container's loopback only.
# Relative paths in the file resolve against /etc/sentinel, so give the data paths
# absolutely, inside the volume:
#
#   [server]
#   host = "0.0.0.0"
#   port = 4318                                       # EXPOSE and HEALTHCHECK below use 4318
#
#   [store]
#   url = "sqlite:////var/lib/sentinel/sentinel.db"   # or SENTINEL_STORE_URL=postgresql+psycopg://...
#
#   [changes]
#   workdir = "/var/lib/sentinel/repos"
#
# Secrets come from the environment only: SENTINEL_INGEST_TOKEN, SENTINEL_API_TOKEN,
# SENTINEL_PROMETHEUS_TOKEN, SENTINEL_STORE_URL. The complete default configuration is
# in the image at /app/config.toml, for reference.
# --stop-timeout: on SIGTERM sentinel drains for up to server.shutdown_timeout_seconds
# (30 s by default); Docker's default of 10 s would cut that short.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the locked dependencies and sentinel into /app/.venv ----------------------
FROM ${PYTHON_IMAGE} AS build

# The uv that wrote uv.lock. (./dev installs uv with pip as well.)
RUN pip install --no-cache-dir uv==0.13.9

ENV UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Dependencies first, from the lock file only: this layer is rebuilt only when
# pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --compile-bytecode

# Then sentinel itself, installed as a regular (not editable) package, so the runtime
# stage needs only the venv. Its alembic migrations are package data
# (src/sentinel/migrations) and travel with it. README.md is the package's readme.
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable --compile-bytecode

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# git: the change feed fetches watched repositories with it, and its library (gitpython)
# refuses to import without it, so `sentinel run` needs it even with no repos configured.
# For ssh:// repository URLs, add openssh-client.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 sentinel \
    && useradd --system --uid 10001 --gid sentinel --home-dir /var/lib/sentinel \
       --no-create-home --shell /usr/sbin/nologin sentinel \
    && mkdir -p /var/lib/sentinel /etc/sentinel \
    && chown sentinel:sentinel /var/lib/sentinel

# Same path as in the build stage: the venv's scripts point at /app/.venv/bin/python.
COPY --from=build /app/.venv /app/.venv
COPY config.toml /app/config.toml

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SENTINEL_CONFIG=/etc/sentinel/config.toml

USER sentinel
WORKDIR /var/lib/sentinel
VOLUME ["/var/lib/sentinel"]
EXPOSE 4318

# No curl in the slim image: Python asks /healthz. urlopen raises on a refused connection
# or a non-2xx status, which makes the check fail. Change the port here if the mounted
# config changes server.port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM (Docker's default stop signal) makes sentinel drain: stop accepting, wait for
# jobs, write the ingest queue, then exit.
STOPSIGNAL SIGTERM
CMD ["sentinel", "run"]
