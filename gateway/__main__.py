"""``fabric-task-gateway``: parse flags and ``FABRIC_GATEWAY_*`` environment variables into one
``Settings`` tree, configure JSON logs, serve until SIGTERM/SIGINT.

Every flag has an environment variable; a flag given on the command line wins. The internal
token is read from ``FABRIC_GATEWAY_INTERNAL_TOKEN`` or from a file (``--internal-token-file``,
e.g. a mounted Secret), never from a flag, so it does not show in ``ps``. The public API's user
tokens come from ``--user-tokens-file`` (YAML/JSON, ``gateway.auth``); without it the public API
is open (a warning is logged), and ``--require-auth`` refuses to start instead. Both files are
reloaded while the gateway runs, on change and on SIGHUP (``gateway.auth_live``); at startup a
bad file is fatal, later it keeps the previous tokens.
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

from gateway.auth import TokenTable, TokensFileError, parse_user_tokens
from gateway.clock import RealClock
from gateway.settings import (
    AuthSettings,
    HttpSettings,
    KubeSettings,
    LogSettings,
    RetentionSettings,
    S3Settings,
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
    opt("--replicas", "REPLICAS", defaults.storage.replicas, int, "gateway replicas the deployment runs (more than 1 needs PostgreSQL and a shared blob store; checked at startup)")
    opt("--blob-dir", "BLOB_DIR", defaults.storage.blob_dir, str, "directory of the local log store")
    opt("--blob-url", "BLOB_URL", "", str, "s3://bucket[/prefix]: logs in S3-compatible storage instead of --blob-dir (credentials: FABRIC_GATEWAY_S3_ACCESS_KEY_ID/_SECRET_ACCESS_KEY or the AWS_* chain)")
    opt("--s3-endpoint", "S3_ENDPOINT", None, str, "URL of an S3-compatible server (unset: AWS)")
    opt("--s3-region", "S3_REGION", defaults.s3.region, str, "S3 region")
    opt("--s3-path-style", "S3_PATH_STYLE", defaults.s3.path_style, _env_bool, "address buckets as endpoint/bucket (most S3-compatible servers)")
    opt("--s3-part-bytes", "S3_PART_BYTES", defaults.s3.part_bytes, int, "bytes per stored part of a log (at least 5 MiB)")
    opt("--s3-part-concurrency", "S3_PART_CONCURRENCY", defaults.s3.part_concurrency, int, "parts of one upload stored at once")
    opt("--s3-lifecycle-margin-days", "S3_LIFECYCLE_MARGIN_DAYS", defaults.s3.lifecycle_margin_days, int, "bucket rule expiring tasks/ after retention + this many days (0: no rule)")
    opt("--internal-token-file", "INTERNAL_TOKEN_FILE", None, str, "file holding the operator's bearer token")
    opt("--user-tokens-file", "USER_TOKENS_FILE", None, str, "YAML/JSON file of the public API's user tokens and their namespaces (unset: /v1 is open)")
    opt("--require-auth", "REQUIRE_AUTH", False, _env_bool, "refuse to start without --user-tokens-file")
    opt("--token-reload-interval", "TOKEN_RELOAD_INTERVAL", defaults.auth.reload_interval_seconds, float, "seconds between looks at the token files for a change (SIGHUP: at once)")
    opt("--token-rotation-grace", "TOKEN_ROTATION_GRACE", defaults.auth.rotation_grace_seconds, float, "seconds a token removed from a token file keeps working after the reload that removed it")
    opt("--auth-failure-burst", "AUTH_FAILURE_BURST", defaults.auth.failure_burst, int, "wrong tokens one source address may present before it gets 429")
    opt("--auth-failure-refill", "AUTH_FAILURE_REFILL", defaults.auth.failure_refill_per_second, float, "wrong-token tries a source address earns back per second")
    opt("--retention-days", "RETENTION_DAYS", defaults.retention.ttl_seconds / 86400, float, "days a record and its log are kept after their last write")
    opt("--sweep-interval", "SWEEP_INTERVAL", defaults.retention.sweep_interval_seconds, float, "seconds between retention sweeps")
    opt("--max-body-bytes", "MAX_BODY_BYTES", defaults.http.max_json_bytes, int, "largest JSON request body")
    opt("--max-log-bytes", "MAX_LOG_BYTES", defaults.logs.max_log_bytes, int, "largest log of one execution")
    opt("--fsync", "FSYNC", defaults.storage.fsync, _env_bool, "fsync logs before acknowledging uploads")
    opt("--shutdown-timeout", "SHUTDOWN_TIMEOUT", defaults.http.shutdown_timeout, float, "seconds shutdown waits at most for in-flight requests (uploads are cut at once; the rest get half, then are cancelled)")
    opt("--log-level", "LOG_LEVEL", defaults.log_level, str, "debug, info, warning or error")
    opt("--kubeconfig", "KUBECONFIG", None, str, "kubeconfig for the schedule operations (unset and no --in-cluster: they answer 503)")
    opt("--in-cluster", "IN_CLUSTER", defaults.kube.in_cluster, _env_bool, "use the pod's ServiceAccount for the schedule operations")
    opt("--namespace", "NAMESPACE", defaults.kube.namespace, str, "namespace of Tasks when a request names none")
    opt("--invoke-image", "INVOKE_IMAGE", defaults.kube.invoke_image, str, "image of the built-in invoke action")
    opt("--agent-url-template", "AGENT_URL_TEMPLATE", defaults.kube.agent_url_template, str,
        "where agents live, with {agent} (given to invoke Tasks as FABRIC_AGENT_URL_TEMPLATE)")
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
    user_tokens = _user_tokens(args.user_tokens_file, token)
    if args.require_auth and user_tokens is None:
        raise SystemExit(
            "fabric-task-gateway: --require-auth is set but no user tokens are: "
            "set --user-tokens-file (FABRIC_GATEWAY_USER_TOKENS_FILE)"
        )
    if args.kubeconfig and args.in_cluster:
        raise SystemExit("fabric-task-gateway: --kubeconfig and --in-cluster exclude each other")
    if args.blob_url and not args.blob_url.startswith("s3://"):
        raise SystemExit("fabric-task-gateway: --blob-url must be s3://bucket[/prefix] (local logs: --blob-dir)")
    if args.token_reload_interval <= 0 or args.token_rotation_grace < 0:
        raise SystemExit("fabric-task-gateway: --token-reload-interval must be positive, --token-rotation-grace not negative")
    if args.auth_failure_burst < 1 or args.auth_failure_refill <= 0:
        raise SystemExit("fabric-task-gateway: --auth-failure-burst must be at least 1, --auth-failure-refill positive")
    if args.replicas < 1:
        raise SystemExit("fabric-task-gateway: --replicas must be at least 1")
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
        storage=StorageSettings(database_url=args.database_url, blob_dir=args.blob_dir, fsync=args.fsync,
                                replicas=args.replicas),
        auth=AuthSettings(
            internal_token=token,
            user_tokens=user_tokens,
            require_auth=args.require_auth,
            internal_token_file=args.internal_token_file or None,
            user_tokens_file=args.user_tokens_file or None,
            reload_interval_seconds=args.token_reload_interval,
            rotation_grace_seconds=args.token_rotation_grace,
            failure_burst=args.auth_failure_burst,
            failure_refill_per_second=args.auth_failure_refill,
        ),
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
            agent_url_template=args.agent_url_template,
        ),
        s3=S3Settings(
            url=args.blob_url,
            endpoint_url=args.s3_endpoint,
            region=args.s3_region,
            path_style=args.s3_path_style,
            lifecycle_margin_days=args.s3_lifecycle_margin_days,
            part_bytes=args.s3_part_bytes,
            part_concurrency=args.s3_part_concurrency,
            access_key_id=env.get(ENV_PREFIX + "S3_ACCESS_KEY_ID", ""),
            secret_access_key=env.get(ENV_PREFIX + "S3_SECRET_ACCESS_KEY", ""),
        ),
        log_level=args.log_level,
    )


def _user_tokens(path: str | None, internal_token: str) -> TokenTable | None:
    """The user-tokens file's table, or None without a file. Messages never quote the file's text."""
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise SystemExit(f"fabric-task-gateway: cannot read --user-tokens-file {path}: {exc.strerror or exc}") from None
    try:
        table = parse_user_tokens(text, source=path)
    except TokensFileError as exc:
        raise SystemExit(f"fabric-task-gateway: {exc}") from None
    if table.lookup(internal_token) is not None:
        raise SystemExit(f"fabric-task-gateway: {path}: a user token equals the internal token; use separate tokens")
    return table


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
