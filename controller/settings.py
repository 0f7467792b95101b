"""The operator's settings: one frozen tree, built only in ``__main__`` from flags and environment.

Nothing else reads the environment. Every field says what it controls and why its default is what
it is (kopf's ``OperatorSettings``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KubeSettings:
    kubeconfig: str | None = None
    """Path of a kubeconfig; None: in-cluster config inside a pod, else $KUBECONFIG or ~/.kube/config."""

    context: str | None = None
    """kubeconfig context to use; None: the current context."""


@dataclass(frozen=True)
class ReconcileSettings:
    workers: int = 16
    """Concurrent reconciles. A Task is never reconciled by two workers at once (the workqueue
    guarantees it), so this only bounds parallelism across Tasks. Reconciles spend their time
    waiting for the API server, so more workers than cores pays: 16 gave 3x the Task->Job throughput
    of 4 in perf/operator_bench.py."""

    namespace: str | None = None
    """Watch only this namespace; None watches all (needs the ClusterRole in manifests/rbac.yaml)."""

    resync_seconds: float = 300.0
    """Every cached Task is reconciled again this often even without events (drift repair)."""

    execution_history: int = 10
    """How many recent executions a Task's status lists."""

    drain_seconds: float = 20.0
    """On shutdown, how long in-flight reconciles may take to finish before they are cancelled."""

    status_window_seconds: float = 2.0
    """Status changes of executions still in flight are coalesced over this window: transitions
    that land within it (a short run's Pending -> Running -> Succeeded, an end and its stored log)
    are one status write. A change that settles every execution is written at once. 0 writes
    every change at once (controller/reconcile/task.py)."""

    status_log_window_seconds: float = 30.0
    """When every execution ended but a log is still being stored, the end is held at most this
    long, so it goes out with the stored log in one write (a log waits for a free stream in a
    burst; alone, it is stored within a second or two of its pod's end). 0: no such hold."""


@dataclass(frozen=True)
class LeaderElectionSettings:
    enabled: bool = True
    """Only the holder of the Lease reconciles; others keep warm caches and wait. Makes two
    replicas safe."""

    lease_name: str = "fabric-task-operator"
    lease_namespace: str = "default"
    """Namespace of the Lease; in-cluster this is the operator's own namespace (POD_NAMESPACE)."""

    identity: str = ""
    """This replica's name in the Lease; __main__ fills it with the pod name or host + pid."""

    lease_duration_seconds: float = 15.0
    """How long a Lease is honoured after its last renewal before another replica may take it
    (client-go's default)."""

    renew_deadline_seconds: float = 10.0
    """A leader that could not renew for this long (counted from the start of its last successful
    renewal; a hung request is abandoned at that point) stops its workers and exits. Must be
    shorter than the lease duration; the difference is the time the workers get to stop before
    another replica may take over (controller/leader.py states the invariant)."""

    retry_period_seconds: float = 2.0
    """How often a leader renews and a candidate retries. Must be shorter than the renew deadline."""


@dataclass(frozen=True)
class OpsSettings:
    bind_host: str = "0.0.0.0"
    metrics_port: int = 8080
    """Serves /metrics (Prometheus text format)."""

    health_port: int = 8081
    """Serves /healthz (the process is alive) and /readyz (caches synced)."""


@dataclass(frozen=True)
class GatewaySettings:
    url: str | None = None
    """Base URL of the task gateway's internal API; None runs without a gateway (history stays in
    the cluster, logs go to ``LogSettings.directory`` if set)."""

    token: str = field(default="", repr=False)
    """Bearer token for the internal API (never logged), as read at startup."""

    token_file: str | None = None
    """File ``token`` was read from (``--gateway-token-file``, a mounted Secret): re-read when it
    changes (``controller.gateway_token.FileToken``). None: ``token`` came from the environment."""

    requests_per_second: float = 20.0
    """Status updates sent per second at most; transitions coalesce per execution beyond that."""

    max_in_flight: int = 8


@dataclass(frozen=True)
class LogSettings:
    directory: str | None = None
    """Store logs under ``<directory>/tasks/<execution>/log.txt`` when there is no gateway (a
    PersistentVolume in-cluster). With neither, logs stay in the cluster (taskpool-history mode)."""

    max_streams: int = 8
    """Pod logs moving bytes at once; more wait in the queue (``controller.logs.slots``)."""

    max_waiting_streams: int = 8
    """Streams that may stay open beyond ``max_streams`` while they read nothing (a follow that
    has caught up with a quiet pod, a backoff, a read the server is still preparing), so they do
    not keep queued logs from starting. 0: ``max_streams`` caps open streams."""

    idle_after_seconds: float = 2.0
    """A stream that read no byte for this long counts as waiting (``max_waiting_streams``)."""

    queue_size: int = 100
    """Executions waiting for a stream. A full queue makes the reconciler look again later rather
    than wait, so Task reconciles never stall behind log shipping."""

    requests_per_second: float = 10.0
    """New log requests (connects and resumes) per second against the API server, all streams."""

    bytes_per_second: float | None = None
    """Aggregate log bytes per second, all streams; None: unlimited."""

    handover_seconds: float = 20.0
    """On shutdown, after the Lease is released, log streams go on this long so the next leader
    takes them over without a pause a log rotation could fall into; each ends as soon as the
    next leader has appended to its log (``controller/logs/pool.py``)."""

    release_after_seconds: float = 3600.0
    """A finished pod's log finalizer is removed after this long even if its log could not be
    stored, so no pod is kept forever; the loss is recorded on the Task."""

    delete_finished_jobs: bool = True
    """Delete a finished Job once its log is stored (and its record confirmed by the gateway).
    False keeps Jobs as history (CronJob history limits still apply)."""


@dataclass(frozen=True)
class Settings:
    kube: KubeSettings = field(default_factory=KubeSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    logs: LogSettings = field(default_factory=LogSettings)
    log_level: str = "info"
    log_format: str = "json"
    """"json" (one object per line, for log collectors) or "console" (for people)."""
