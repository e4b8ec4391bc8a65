"""The ECS container definition of the Parley service (pure data)."""

from __future__ import annotations

from typing import Final

from .config import StackConfig
from .policies import MEDIA_PREFIX

CONTAINER_NAME: Final = "parley"
CONTAINER_PORT: Final = 8080
# live streams: PARLEY_STREAM_PORT, a listener that keeps no buffer per idle connection
STREAM_PORT: Final = 8081
STREAM_PATH: Final = "/v1/messages/*/stream"  # the load balancer sends these to STREAM_PORT
REDIS_PORT: Final = 6379
SECRET_KEY_VARIABLE: Final = "PARLEY_SECRET_KEY"
KEEPALIVE_SECONDS: Final = 60  # below the load balancer's idle timeout (90 s)
IDLE_CONNECTION_SECONDS: Final = 120  # above it
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"

# The image is python:3.11-slim based and has no curl; urllib does the same job.
_HEALTH_PROBE: Final = (
    "import sys, urllib.request; "
    f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}{HEALTH_PATH}', "
    "timeout=3).status == 200 else 1)"
)


def environment(
    cfg: StackConfig, redis_host: str, media_bucket: str | None = None
) -> dict[str, str]:
    """The service's environment: bind address, storage, cache, auth mode, and the bucket
    uploaded files go to (every task shares it; a task's own disk only spools uploads)."""
    env = {
        "PARLEY_HOST": "0.0.0.0",
        "PARLEY_PORT": str(CONTAINER_PORT),
        "PARLEY_STREAM_PORT": str(STREAM_PORT),
        "PARLEY_STORAGE": "dynamodb",
        "PARLEY_DYNAMODB_TABLE_PREFIX": cfg.prefix,
        "PARLEY_REDIS_URL": f"redis://{redis_host}:{REDIS_PORT}",
        "PARLEY_AUTH": "token",
        # Live streams write a keep-alive a minute, below the load balancer's idle timeout
        # (ALB_IDLE_TIMEOUT); an idle stream costs nothing else. Idle client connections
        # are kept longer than the load balancer keeps its own, so it never reuses one
        # that Parley is closing.
        "PARLEY_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),
        "PARLEY_REQUEST_TIMEOUT": str(IDLE_CONNECTION_SECONDS),
        "AWS_REGION": cfg.region,
    }
    if media_bucket:
        env["PARLEY_MEDIA_URL"] = f"s3://{media_bucket}/{MEDIA_PREFIX}"
    return env


def container_definitions(
    cfg: StackConfig,
    *,
    image: str,
    redis_host: str,
    log_group: str,
    secret_key_arn: str,
    media_bucket: str | None = None,
) -> list[dict[str, object]]:
    """The task's single container, as ECS's ``containerDefinitions`` JSON structure.

    The server secret is not in the definition: ECS reads it from Secrets Manager
    (``secret_key_arn``) when the task starts and hands it to the container only.
    """
    env = environment(cfg, redis_host, media_bucket)
    return [
        {
            "name": CONTAINER_NAME,
            "image": image,
            "essential": True,
            "portMappings": [
                {"containerPort": port, "hostPort": port, "protocol": "tcp"}
                for port in (CONTAINER_PORT, STREAM_PORT)
            ],
            "environment": [{"name": key, "value": value} for key, value in sorted(env.items())],
            "secrets": [{"name": SECRET_KEY_VARIABLE, "valueFrom": secret_key_arn}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group,
                    "awslogs-region": cfg.region,
                    "awslogs-stream-prefix": CONTAINER_NAME,
                },
            },
            "healthCheck": {
                "command": ["CMD", "python", "-c", _HEALTH_PROBE],
                "interval": 30,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 15,
            },
            # Long-polls and event streams hold one socket per waiting client.
            "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
            "stopTimeout": 30,
        }
    ]
