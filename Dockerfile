# syntax=docker/dockerfile:1
#
# Parley's container image.
#
#   docker build -t parley .
#   docker run -p 8080:8080 parley
#
# Stage 1 builds a wheel of Parley and installs it, with the Redis, PostgreSQL and DynamoDB
# extras, into a virtualenv at /opt/parley. Stage 2 copies only that virtualenv onto a clean
# python:3.11-slim and runs it as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
RUN python -m venv /opt/parley \
    && /opt/parley/bin/pip install --upgrade pip wheel

COPY pyproject.toml README.md ./
COPY src ./src

RUN /opt/parley/bin/pip wheel --no-deps --wheel-dir /build/dist . \
    && /opt/parley/bin/pip install "$(ls /build/dist/parley-*.whl)[redis,postgres,dynamodb]" \
    && /opt/parley/bin/python -c "import parley"


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="Parley" \
      org.opencontainers.image.description="Messaging backend: users, private and group messages, blocking, polling over HTTP" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/parley/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PARLEY_HOST=0.0.0.0 \
    PARLEY_PORT=8080

RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /home/parley --create-home \
       --shell /usr/sbin/nologin parley

COPY --from=builder /opt/parley /opt/parley

WORKDIR /home/parley
USER 10001:10001

EXPOSE 8080

# The slim image has no curl; Python's urllib probes the liveness endpoint instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3).status == 200 else 1)"]

CMD ["parley", "serve", "--host", "0.0.0.0", "--port", "8080"]
