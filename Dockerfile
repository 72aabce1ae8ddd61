# syntax=docker/dockerfile:1
# The trigger daemon: a wheel built in one stage, installed into a virtualenv, and the
# virtualenv copied into a slim runtime that runs as an unprivileged numeric user.
# Build: docker build -t trigger:0.1.0 .
# Run:   docker run -p 8080:8080 -v "$PWD/deploy:/etc/trigger:ro" trigger:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# crcmod (an oss2 dependency) ships no wheel: without a compiler it silently installs its
# slow pure-Python fallback, so the build stage has one. The runtime stage does not.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trigger ./trigger
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/trigger-*.whl

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The same base image in both stages, so the virtualenv's interpreter links stay valid.
COPY --from=build /opt/venv /opt/venv
# /etc/trigger holds the mounted settings and rules (read-only); /var/lib/trigger is the one
# writable path (file state, dead letters): the root filesystem can be mounted read-only.
RUN groupadd --system --gid 10001 trigger \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/trigger \
      --shell /usr/sbin/nologin trigger \
 && mkdir -p /etc/trigger/rules /var/lib/trigger \
 && chown 10001:10001 /var/lib/trigger
WORKDIR /var/lib/trigger
# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001
# Webhooks, OSS pushes, /healthz, /readyz, /status and /metrics.
EXPOSE 8080
ENTRYPOINT ["trigger"]
CMD ["run", "--config", "/etc/trigger/config.yaml"]
