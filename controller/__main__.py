"""``fabric-task-operator``: flags and environment -> ``Settings`` -> run.

Every flag has an environment variable (``FABRIC_OPERATOR_<FLAG>``, upper-case, dashes as
underscores); a flag given on the command line wins. This is the only module that reads either.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import structlog

from controller.app import run
from controller.clock import RealClock
from controller.settings import (
    GatewaySettings,
    KubeSettings,
    LogSettings,
    LeaderElectionSettings,
    OpsSettings,
    ReconcileSettings,
    Settings,
)

ENV_PREFIX = "FABRIC_OPERATOR_"


def _env(flag: str, default):
    value = os.environ.get(ENV_PREFIX + flag.upper().replace("-", "_"))
    if value is None:
        return default
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(value) if default is not None else value


def parse_args(argv: list[str]) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="fabric-task-operator",
        description="Reconciles fabric.dev Tasks into Jobs and CronJobs.",
        epilog=f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG>, e.g. "
               f"{ENV_PREFIX}WORKERS=8.",
    )
    p.add_argument("--kubeconfig", default=_env("kubeconfig", None),
                   help="kubeconfig path (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", default=_env("context", None), help="kubeconfig context")
    p.add_argument("--namespace", default=_env("namespace", None),
                   help="watch only this namespace (default: all namespaces)")
    p.add_argument("--workers", type=int, default=_env("workers", d.reconcile.workers))
    p.add_argument("--resync-seconds", type=float, default=_env("resync-seconds", d.reconcile.resync_seconds))
    p.add_argument("--status-window-seconds", type=float,
                   default=_env("status-window-seconds", d.reconcile.status_window_seconds),
                   help="coalesce status changes of executions in flight over this window (0: write each at once)")
    p.add_argument("--status-log-window-seconds", type=float,
                   default=_env("status-log-window-seconds", d.reconcile.status_log_window_seconds),
                   help="hold an ended execution's status this long at most for its log to be stored")
    p.add_argument("--execution-history", type=int,
                   default=_env("execution-history", d.reconcile.execution_history),
                   help="recent executions listed in a Task's status")
    p.add_argument("--leader-elect", default=_env("leader-elect", d.leader_election.enabled),
                   action=argparse.BooleanOptionalAction)
    p.add_argument("--lease-name", default=_env("lease-name", d.leader_election.lease_name))
    p.add_argument("--lease-namespace",
                   default=_env("lease-namespace", os.environ.get("POD_NAMESPACE", d.leader_election.lease_namespace)))
    p.add_argument("--lease-duration-seconds", type=float,
                   default=_env("lease-duration-seconds", d.leader_election.lease_duration_seconds))
    p.add_argument("--renew-deadline-seconds", type=float,
                   default=_env("renew-deadline-seconds", d.leader_election.renew_deadline_seconds))
    p.add_argument("--retry-period-seconds", type=float,
                   default=_env("retry-period-seconds", d.leader_election.retry_period_seconds))
    p.add_argument("--identity", default=_env("identity", os.environ.get("POD_NAME", "")),
                   help="this replica's name in the Lease (default: $POD_NAME, else host_pid)")
    p.add_argument("--bind-host", default=_env("bind-host", d.ops.bind_host))
    p.add_argument("--metrics-port", type=int, default=_env("metrics-port", d.ops.metrics_port))
    p.add_argument("--health-port", type=int, default=_env("health-port", d.ops.health_port))
    p.add_argument("--gateway-url", default=_env("gateway-url", None),
                   help="task gateway base URL (internal API); history and logs go there")
    p.add_argument("--gateway-token-file", default=_env("gateway-token-file", None),
                   help="file holding the gateway's internal bearer token, re-read when it changes (or set "
                        f"{ENV_PREFIX}GATEWAY_TOKEN)")
    p.add_argument("--gateway-requests-per-second", type=float,
                   default=_env("gateway-requests-per-second", d.gateway.requests_per_second))
    p.add_argument("--log-dir", default=_env("log-dir", None),
                   help="without a gateway: store logs under DIR/tasks/<execution>/log.txt")
    p.add_argument("--log-max-streams", type=int, default=_env("log-max-streams", d.logs.max_streams))
    p.add_argument("--log-max-waiting-streams", type=int,
                   default=_env("log-max-waiting-streams", d.logs.max_waiting_streams),
                   help="streams open beyond --log-max-streams while they read nothing (0: none)")
    p.add_argument("--log-idle-after-seconds", type=float,
                   default=_env("log-idle-after-seconds", d.logs.idle_after_seconds),
                   help="a log stream that read nothing this long counts as waiting")
    p.add_argument("--log-queue-size", type=int, default=_env("log-queue-size", d.logs.queue_size))
    p.add_argument("--log-requests-per-second", type=float,
                   default=_env("log-requests-per-second", d.logs.requests_per_second))
    p.add_argument("--log-bytes-per-second", type=float, default=_env("log-bytes-per-second", 0.0),
                   help="aggregate log bytes/s over all streams (0: unlimited). Below what the "
                        "containers write, follows fall behind and the kubelet's rotations take "
                        "whole files from them (README, 'History and logs')")
    p.add_argument("--log-release-after-seconds", type=float,
                   default=_env("log-release-after-seconds", d.logs.release_after_seconds))
    p.add_argument("--log-handover-seconds", type=float,
                   default=_env("log-handover-seconds", d.logs.handover_seconds),
                   help="on shutdown, how long log streams go on for the next leader to take them over")
    p.add_argument("--keep-finished-jobs", default=_env("keep-finished-jobs", not d.logs.delete_finished_jobs),
                   action=argparse.BooleanOptionalAction,
                   help="keep Jobs after their log is stored (CronJob history limits still apply)")
    p.add_argument("--log-level", default=_env("log-level", d.log_level),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default=_env("log-format", d.log_format), choices=["json", "console"])
    a = p.parse_args(argv)
    if a.renew_deadline_seconds >= a.lease_duration_seconds:
        p.error("--renew-deadline-seconds must be shorter than --lease-duration-seconds")
    if a.workers < 1:
        p.error("--workers must be at least 1")
    if a.log_max_streams < 1 or a.log_queue_size < 1:
        p.error("--log-max-streams and --log-queue-size must be at least 1")
    if a.log_max_waiting_streams < 0 or a.log_idle_after_seconds <= 0:
        p.error("--log-max-waiting-streams must be at least 0 and --log-idle-after-seconds positive")
    token = os.environ.get(ENV_PREFIX + "GATEWAY_TOKEN", "")
    if a.gateway_token_file:
        try:
            token = open(a.gateway_token_file).read().strip()
        except OSError as exc:
            p.error(f"--gateway-token-file: {exc}")
    if a.gateway_url and not token:
        p.error(f"--gateway-url needs a token: --gateway-token-file or {ENV_PREFIX}GATEWAY_TOKEN")
    return Settings(
        kube=KubeSettings(kubeconfig=a.kubeconfig, context=a.context),
        reconcile=ReconcileSettings(
            workers=a.workers, namespace=a.namespace, resync_seconds=a.resync_seconds,
            execution_history=a.execution_history, status_window_seconds=a.status_window_seconds,
            status_log_window_seconds=a.status_log_window_seconds,
        ),
        leader_election=LeaderElectionSettings(
            enabled=a.leader_elect, lease_name=a.lease_name, lease_namespace=a.lease_namespace,
            identity=a.identity or f"{socket.gethostname()}_{os.getpid()}",
            lease_duration_seconds=a.lease_duration_seconds,
            renew_deadline_seconds=a.renew_deadline_seconds,
            retry_period_seconds=a.retry_period_seconds,
        ),
        ops=OpsSettings(bind_host=a.bind_host, metrics_port=a.metrics_port, health_port=a.health_port),
        gateway=GatewaySettings(url=a.gateway_url, token=token, token_file=a.gateway_token_file or None,
                                requests_per_second=a.gateway_requests_per_second),
        logs=LogSettings(
            directory=a.log_dir, max_streams=a.log_max_streams, queue_size=a.log_queue_size,
            max_waiting_streams=a.log_max_waiting_streams, idle_after_seconds=a.log_idle_after_seconds,
            requests_per_second=a.log_requests_per_second, bytes_per_second=a.log_bytes_per_second or None,
            release_after_seconds=a.log_release_after_seconds, handover_seconds=a.log_handover_seconds,
            delete_finished_jobs=not a.keep_finished_jobs,
        ),
        log_level=a.log_level,
        log_format=a.log_format,
    )


def configure_logging(level: str, fmt: str) -> None:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run(settings, RealClock()))


if __name__ == "__main__":
    sys.exit(main())
