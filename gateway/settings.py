"""The gateway's settings: one frozen tree, built only by ``__main__`` (flags + ``FABRIC_GATEWAY_*``)
or by a test, and passed explicitly. No module reads the environment; no field uses ``None`` to
mean "test".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.auth import TokenTable


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    """Address the public listener binds (``0.0.0.0`` in a pod)."""

    port: int = 8090
    """Port of the public API (``/v1``, ``/openapi.json``, ``/healthz``, ``/readyz``, ``/metrics``).
    0 picks a free port (tests)."""

    internal_port: int | None = None
    """When set, the internal API (``/internal``) is served only on this port and answers 404 on
    the public one, so a NetworkPolicy can restrict the port to the operator's pods. When unset,
    every route is served on ``port`` (local development)."""

    max_json_bytes: int = 1 << 20
    """Largest JSON request body accepted; larger ones get 413."""

    shutdown_timeout: float = 8.0
    """Bound, in seconds, on how long shutdown (SIGTERM) waits for in-flight requests. Uploads and
    follows end at once, at a consistent point (``api_internal``, ``follow``), so this bounds the
    rest: a download to a slow client, a request stuck in storage. Requests still running after
    half of it are cancelled and get the other half to unwind; then the stores close. Keep it well
    under the pod's ``terminationGracePeriodSeconds`` (manifests/gateway/deployment.yaml)."""


@dataclass(frozen=True)
class StorageSettings:
    database_url: str = "sqlite:///./.gateway/tasks.db"
    """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
    ``postgresql://user:password@host:port/db``. May hold a password: never log it unredacted."""

    blob_dir: str = "./.gateway/blobs"
    """Directory of the local blob store; logs live at ``tasks/<execution>/log.txt`` below it."""

    sqlite_readers: int = 4
    """Reader threads (one connection each) of the SQLite store; writes use one more thread."""

    postgres_pool_size: int = 10
    """Largest number of PostgreSQL connections held by the pool."""

    ledger_pool_size: int = 32
    """PostgreSQL only: connections of the upload ledger's own pool (``ledger_postgres``). Each
    log upload in progress holds one while its body streams (its lock is a transaction), so this
    bounds concurrent uploads per replica; one more waits ``upload_lock_timeout``, then 503."""

    replicas: int = 1
    """How many gateway replicas the deployment runs (``--replicas``), as the operator of the
    gateway declares it: only used to say at startup whether the storage fits. More than one needs
    PostgreSQL (the upload ledger) and a blob store every replica sees (S3, or one shared
    ReadWriteMany volume); with SQLite the gateway warns that it is single-replica."""

    fsync: bool = True
    """fsync the log (and its index) before answering an upload with the stored size, so a size
    the operator was told is never lost by a crash of the gateway's machine."""


@dataclass(frozen=True)
class AuthSettings:
    internal_token: str = field(default="", repr=False)
    """Bearer token the operator presents on ``/internal``. Compared in constant time; never
    logged or shown in a repr. Empty refuses every internal request. Never accepted on ``/v1``."""

    user_tokens: TokenTable | None = field(default=None, repr=False)
    """The user tokens of the public API (``/v1``) with their namespace scopes, as sha256 digests
    (``gateway.auth``), from ``--user-tokens-file``. ``None``: no file was configured and the
    public API is open to anyone who reaches the port (local development; a warning is logged
    at startup). Never accepted on ``/internal``."""

    require_auth: bool = False
    """Refuse to start without ``user_tokens`` (production: a missing Secret must not silently
    open the API)."""

    internal_token_file: str | None = None
    """File ``internal_token`` was read from; reloaded when it changes (``gateway.auth_live``).
    None: the token came from the environment (or a test) and never changes."""

    user_tokens_file: str | None = None
    """File ``user_tokens`` was read from; reloaded when it changes. None: never reloaded."""

    reload_interval_seconds: float = 10.0
    """Seconds between two looks (``os.stat``) at the token files; SIGHUP looks at once."""

    rotation_grace_seconds: float = 300.0
    """A token removed from a file by a reload keeps working this many seconds after that reload
    (both old and new tokens work while clients move over); 0: it stops at once."""

    failure_burst: int = 10
    """Failed authentications (401) one source address may make before it is refused with 429."""

    failure_refill_per_second: float = 0.5
    """Rate at which a source earns failed tries back (one every 2 s by default)."""

    failure_max_sources: int = 10_000
    """Source addresses whose failures are remembered at most (least recently failed forgotten)."""


@dataclass(frozen=True)
class RetentionSettings:
    ttl_seconds: int = 30 * 24 * 3600
    """A record and its log blob expire this long after the record was last written (upsert or
    log upload). Each write pushes the expiry forward."""

    sweep_interval_seconds: float = 3600.0
    """Seconds between two sweeps."""

    batch_size: int = 500
    """Records removed per database round trip during a sweep."""


@dataclass(frozen=True)
class LogSettings:
    max_log_bytes: int = 16 << 30
    """Largest log accepted for one execution; an upload past it gets 413."""

    max_row_bytes: int = 64 << 10
    """A row's ``text`` is cut to this many bytes (``truncated: true``); grep looks at the same
    prefix. The raw download always has the whole line."""

    max_rows: int = 10_000
    """Largest ``limit``/``tail`` of one logs-as-rows request."""

    max_response_bytes: int = 8 << 20
    """A logs-as-rows page stops adding rows past this many bytes of text (``hasMore: true``)."""

    max_grep_bytes: int = 256
    """Longest ``grep`` pattern, substring or regex."""

    follow_poll_interval: float = 0.5
    """Seconds between two looks at a followed log's state when no upload woke the follower
    (uploads and finalize in this process wake it at once)."""

    follow_idle_timeout: float = 600.0
    """A follow of a log that is not sealed ends after this many seconds without a new byte; the
    client resumes with ``offset`` = the bytes it received."""

    upload_lock_timeout: float = 5.0
    """Seconds an upload waits for another upload of the same execution to end (a retry racing
    the server's notice of the dropped first try) before answering 409 ``upload_in_progress``."""


@dataclass(frozen=True)
class KubeSettings:
    """Kubernetes access for the schedule operations (pause, resume, delete, run now, invoke).
    Neither ``kubeconfig`` nor ``in_cluster``: no access, and those routes answer 503."""

    kubeconfig: str | None = None
    """Path of a kubeconfig file (its current context is used)."""

    in_cluster: bool = False
    """Use the pod's ServiceAccount (``KUBERNETES_SERVICE_HOST`` and the mounted token)."""

    namespace: str = "default"
    """Namespace of the Tasks when a request names none (``?namespace=``)."""

    request_timeout: float = 30.0
    """Seconds one Kubernetes API request may take."""

    invoke_image: str = "fabric-tasks:dev"
    """Image of the built-in invoke action that ``POST /v1/agents/{agent}/invoke`` Tasks run: the
    project's one image, which has the ``sys-invoke-skill`` entry point (the same default as
    ``taskctl agents invoke``)."""

    invoke_command: tuple[str, ...] = ("sys-invoke-skill",)
    """Command of that image: the invoke action's console script (``invoke/``)."""

    agent_url_template: str | None = None
    """Where agents live, for the Tasks ``POST /v1/agents/{agent}/invoke`` creates: a URL with
    ``{agent}`` (e.g. ``http://agents.fabric.svc:8080/agents/{agent}``), given to the action as
    ``FABRIC_AGENT_URL_TEMPLATE``. Unset: the Tasks carry none (the image's own configuration)."""

    @property
    def enabled(self) -> bool:
        return bool(self.kubeconfig) or self.in_cluster


@dataclass(frozen=True)
class S3Settings:
    """Log blobs in S3-compatible object storage (``blobs_s3``) instead of ``storage.blob_dir``.
    Unset ``url``: the local directory. Credentials left empty come from botocore's usual chain
    (``AWS_*`` environment, shared files, instance or pod identity)."""

    url: str = ""
    """``s3://bucket`` or ``s3://bucket/prefix``: logs live at ``<prefix>/tasks/<execution>/``."""

    endpoint_url: str | None = None
    """An S3-compatible server's URL (``http://seaweedfs:8333``); None: AWS for ``region``."""

    region: str = "us-east-1"

    access_key_id: str = field(default="", repr=False)

    secret_access_key: str = field(default="", repr=False)
    """Never logged or shown in a repr."""

    path_style: bool = True
    """Address buckets as ``endpoint/bucket/key`` (most S3-compatible servers) rather than
    ``bucket.endpoint/key``."""

    lifecycle_margin_days: int = 7
    """At startup the gateway sets a bucket lifecycle rule expiring ``<prefix>/tasks/`` objects
    ``retention`` + this many days after they were written (a backstop for blobs the sweeper
    missed); 0 sets no rule. Records with a longer ``ttlSeconds`` outlive it: use 0 then."""

    part_bytes: int = 16 << 20
    """An upload stores its bytes as part objects of about this many bytes (at least 5 MiB, S3's
    smallest multipart part); a request's last, smaller part is merged into later ones
    (``blobs_s3_parts``), so a 1 GiB log is about 64 objects however it was shipped. Memory per
    upload: (``part_concurrency`` + 1) parts."""

    part_concurrency: int = 3
    """Parts of one upload stored at once, while the next one fills."""

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logs: LogSettings = field(default_factory=LogSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    log_level: str = "info"
    """Level of the gateway's own structured log: debug, info, warning, error."""
