"""``fabric-task-gateway``: parse flags and ``FABRIC_GATEWAY_*`` environment variables into one
``Settings`` tree, configure JSON logs, serve until SIGTERM/SIGINT.

Every flag has an environment variable; a flag given on the command line wins. The internal
token is read from ``FABRIC_GATEWAY_INTERNAL_TOKEN`` or from a file (``--internal-token-file``,
e.g. a mounted Secret), never from a flag, so it does not show in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any, Mapping, Sequence

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from gateway.clock import RealClock
from gateway.settings import (
    AuthSettings,
    HttpSettings,
    KubeSettings,
    LogSettings,
    RetentionSettings,
    Settings,
    StorageSettings,
)

ENV_PREFIX = "FABRIC_GATEWAY_"


def _env_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fabric-task-gateway", description=__doc__.split("\n\n")[0])

    def opt(flag: str, env_name: str, default: Any, kind: Any, help_text: str) -> None:
        raw = env.get(ENV_PREFIX + env_name)
        value = kind(raw) if raw is not None else default
        p.add_argument(flag, default=value, type=kind, help=f"{help_text} [env {ENV_PREFIX}{env_name}; default {default}]")

    defaults = Settings()
    opt("--host", "HOST", defaults.http.host, str, "listen address")
    opt("--port", "PORT", defaults.http.port, int, "public API port")
    opt("--internal-port", "INTERNAL_PORT", None, int, "serve /internal only on this port (unset: on --port)")
    opt("--database-url", "DATABASE_URL", defaults.storage.database_url, str, "sqlite:///path or postgresql://user:pass@host/db")
    opt("--blob-dir", "BLOB_DIR", defaults.storage.blob_dir, str, "directory of the local log store")
    opt("--internal-token-file", "INTERNAL_TOKEN_FILE", None, str, "file holding the operator's bearer token")
    opt("--retention-days", "RETENTION_DAYS", defaults.retention.ttl_seconds / 86400, float, "days a record and its log are kept after their last write")
    opt("--sweep-interval", "SWEEP_INTERVAL", defaults.retention.sweep_interval_seconds, float, "seconds between retention sweeps")
    opt("--max-body-bytes", "MAX_BODY_BYTES", defaults.http.max_json_bytes, int, "largest JSON request body")
    opt("--max-log-bytes", "MAX_LOG_BYTES", defaults.logs.max_log_bytes, int, "largest log of one execution")
    opt("--fsync", "FSYNC", defaults.storage.fsync, _env_bool, "fsync logs before acknowledging uploads")
    opt("--shutdown-timeout", "SHUTDOWN_TIMEOUT", defaults.http.shutdown_timeout, float, "seconds in-flight requests get on shutdown")
    opt("--log-level", "LOG_LEVEL", defaults.log_level, str, "debug, info, warning or error")
    opt("--kubeconfig", "KUBECONFIG", None, str, "kubeconfig for the schedule operations (unset and no --in-cluster: they answer 503)")
    opt("--in-cluster", "IN_CLUSTER", defaults.kube.in_cluster, _env_bool, "use the pod's ServiceAccount for the schedule operations")
    opt("--namespace", "NAMESPACE", defaults.kube.namespace, str, "namespace of Tasks when a request names none")
    opt("--invoke-image", "INVOKE_IMAGE", defaults.kube.invoke_image, str, "image of the built-in invoke action")
    return p


def settings_from(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    args = parser(env).parse_args(argv)
    token = env.get(ENV_PREFIX + "INTERNAL_TOKEN", "")
    if args.internal_token_file:
        with open(args.internal_token_file) as f:
            token = f.read().strip()
    if not token:
        raise SystemExit(
            "fabric-task-gateway: no internal token: set FABRIC_GATEWAY_INTERNAL_TOKEN or --internal-token-file"
        )
    if args.kubeconfig and args.in_cluster:
        raise SystemExit("fabric-task-gateway: --kubeconfig and --in-cluster exclude each other")
    if args.retention_days <= 0:
        raise SystemExit("fabric-task-gateway: --retention-days must be positive")
    return Settings(
        http=HttpSettings(
            host=args.host,
            port=args.port,
            internal_port=args.internal_port,
            max_json_bytes=args.max_body_bytes,
            shutdown_timeout=args.shutdown_timeout,
        ),
        storage=StorageSettings(database_url=args.database_url, blob_dir=args.blob_dir, fsync=args.fsync),
        auth=AuthSettings(internal_token=token),
        retention=RetentionSettings(
            ttl_seconds=int(args.retention_days * 86400),
            sweep_interval_seconds=args.sweep_interval,
        ),
        logs=LogSettings(max_log_bytes=args.max_log_bytes),
        kube=KubeSettings(
            kubeconfig=args.kubeconfig,
            in_cluster=args.in_cluster,
            namespace=args.namespace,
            invoke_image=args.invoke_image,
        ),
        log_level=args.log_level,
    )


def configure_logging(level: str) -> Any:
    """JSON lines on stdout for the gateway's own events and for library loggers (aiohttp,
    asyncpg) alike."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise SystemExit(f"fabric-task-gateway: unknown log level {level!r}")
    shared = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    return structlog.get_logger("gateway")


def main(argv: Sequence[str] | None = None) -> None:
    settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    logger = configure_logging(settings.log_level)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    from gateway.server import serve

    try:
        asyncio.run(serve(settings, clock=RealClock(), registry=registry, logger=logger))
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the handler was installed
        pass


if __name__ == "__main__":
    main()
