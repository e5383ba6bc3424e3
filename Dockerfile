# syntax=docker/dockerfile:1
# CoffeeBus: one image for every role. The entrypoint is the `coffeebus` command, so a
# container's command is a subcommand: `gateway`, `api`, `consume msg`, `topology apply`.
#
#   docker build -t coffeebus .
#   docker run --rm coffeebus consume --help

# uv, pinned to the version the Makefile installs.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- build: resolve and install the locked dependencies into /app/.venv --------------------
FROM python:3.11-slim-bookworm AS build
COPY --from=uv /uv /bin/uv
# Byte-compile at build time (faster starts); copy, not link, out of the cache mount; use the
# image's Python, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11
WORKDIR /app
# Dependencies first, in their own layer: a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# --- runtime: the venv and the sources, no uv, no build tools, not root ---------------------
FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 coffeebus \
    && useradd --system --uid 10001 --gid coffeebus --home-dir /app --shell /usr/sbin/nologin coffeebus
# The project is installed in editable mode: topology.yaml is read beside the packages.
COPY --from=build --chown=coffeebus:coffeebus /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER coffeebus:coffeebus
# TCP gate, WebSocket gate, HTTP API, metrics and health ([observability] metrics_port).
EXPOSE 8000 8001 18080 9100
# SIGTERM drains (coffeebus/roles.py); give `docker stop` time for it (stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["coffeebus"]
CMD ["--help"]
