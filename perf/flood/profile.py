"""What a flood run does: Tasks, log sizes, arrival, operator settings, targets.

Pure: parses YAML text or mappings into frozen dataclasses; no I/O beyond reading the profile
file it is given. Built-in profiles are the YAML files in ``perf/profiles/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
_UNITS = {"": 1, "k": 1000, "ki": 1024, "m": 1000**2, "mi": 1024**2, "g": 1000**3, "gi": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?)?[bB]?\s*$")


def parse_size(value: int | str) -> int:
    """``100Mi`` -> 104857600; ``1G`` -> 10**9; ints pass through."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (examples: 4Mi, 100Mi, 1Gi, 65536)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def size_label(size: int) -> str:
    """104857600 -> ``100mi``: short, lower case, valid in a namespace name."""
    for unit, factor in (("gi", 1024**3), ("mi", 1024**2), ("ki", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}b"


@dataclass(frozen=True)
class LogClass:
    """Executions whose pod writes ``size`` bytes of log content."""
    size: int
    one_off: int = 0
    """One-off Tasks of this size (one execution each)."""
    scheduled: int = 0
    """Scheduled Tasks (``* * * * *``) of this size; each is suspended once its first Job exists, so
    it contributes one execution (more if a second minute fires first; all are tracked)."""
    bytes_per_second: int | None = None
    """How fast its pods write (real containers) or how long they run (kwok); default the profile's
    ``run_for_bytes_per_second``. On a real node a writer faster than its log's share of the shipper
    loses what the kubelet rotates away before it is read."""

    @property
    def tasks(self) -> int:
        return self.one_off + self.scheduled


@dataclass(frozen=True)
class OperatorSettings:
    """Flags of the operator the harness starts (ignored when it attaches to a running one)."""
    workers: int = 16
    log_max_streams: int = 8
    log_queue_size: int | None = None
    log_bytes_per_second: int = 0
    """Aggregate limit over all streams; 0 is unlimited."""
    log_requests_per_second: float | None = None
    gateway_requests_per_second: float | None = None
    extra_args: tuple[str, ...] = ()

    def args(self) -> list[str]:
        out = ["--workers", str(self.workers), "--log-max-streams", str(self.log_max_streams),
               "--log-bytes-per-second", str(self.log_bytes_per_second)]
        if self.log_queue_size is not None:
            out += ["--log-queue-size", str(self.log_queue_size)]
        if self.log_requests_per_second is not None:
            out += ["--log-requests-per-second", str(self.log_requests_per_second)]
        if self.gateway_requests_per_second is not None:
            out += ["--gateway-requests-per-second", str(self.gateway_requests_per_second)]
        return out + list(self.extra_args)


@dataclass(frozen=True)
class Targets:
    """What the run is judged against. Correctness (every byte verified, none lost, Jobs cleaned
    up) is always a target; these are the performance ones."""
    throughput_vs_curl: float = 0.9
    """Aggregate shipping throughput over that of the same number of parallel curls (0: not a
    target, e.g. for logs too small for throughput to mean anything)."""
    operator_peak_rss_mb: float = 150.0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    logs: tuple[LogClass, ...]
    arrival_per_second: float = 0.0
    """Task creations per second; 0 creates them all at once (a burst)."""
    concurrency: int = 8
    """Create calls in flight, for the Tasks and for the direct Job-create baseline alike."""
    task_pool: str | None = None
    """Put on every Task as ``spec.taskPool``; the harness creates no pool (apply one with
    ``manifests``) and works whether or not pool admission exists."""
    manifests: tuple[str, ...] = ()
    """Extra YAML files applied before the run (e.g. a TaskPool) and deleted after it."""
    run_for_bytes_per_second: int = 20 * 1024 * 1024
    container_image: str = "busybox:1.36"
    """Image of the writer containers on real nodes (sh, yes, head): busybox from a registry, or on
    the devcluster's real node its local ``fabric-base:dev`` (``devcluster/images.sh``)."""
    """A kwok pod stays Running ``size / this`` seconds (at least ``min_run_seconds``), so logs are
    partly followed while the pod runs and partly read after it ended; a container (kind, real
    cluster) writes at about this rate."""
    min_run_seconds: float = 2.0
    sink: Literal["gateway", "dir"] = "gateway"
    gateway_fsync: bool = True
    operator: OperatorSettings = field(default_factory=OperatorSettings)
    baseline_parallel: int | None = None
    """Parallel curls in the aggregate baseline; default: the operator's log streams."""
    baseline_size: int | None = None
    """Log size the curl/kubectl baselines read; default: the size with the most executions."""
    direct_create: bool = True
    scheduled_first: bool = False
    """Create the scheduled Tasks before the baselines, so the wait for their first minute overlaps
    them (keeps the smoke test short; their logs then compete with the baselines a little)."""
    sample_seconds: float = 1.0
    timeout_seconds: float = 3600.0
    """From the first Task created until every execution's log is final."""
    cleanup_timeout_seconds: float = 120.0
    """How long stored executions' Jobs may take to be deleted by the operator."""
    targets: Targets = field(default_factory=Targets)

    @property
    def tasks(self) -> int:
        return sum(c.tasks for c in self.logs)

    @property
    def one_off(self) -> int:
        return sum(c.one_off for c in self.logs)

    @property
    def total_bytes(self) -> int:
        return sum(c.size * c.tasks for c in self.logs)

    def parallel(self) -> int:
        return self.baseline_parallel or self.operator.log_max_streams

    def baseline_log_size(self) -> int:
        if self.baseline_size:
            return self.baseline_size
        return max(self.logs, key=lambda c: (c.tasks, -c.size)).size

    def bytes_per_second(self, size: int) -> int:
        """How fast the pods of the class of ``size`` write."""
        rate = next((c.bytes_per_second for c in self.logs if c.size == size), None)
        return rate or self.run_for_bytes_per_second

    def run_for(self, size: int) -> str:
        """Go duration for ``fabric.dev/kwok-run-for``."""
        return f"{max(self.min_run_seconds, size / self.bytes_per_second(size)):.1f}s"


def from_mapping(doc: dict[str, Any]) -> Profile:
    """A profile from parsed YAML; sizes may be written as ``100Mi``. Unknown keys are errors."""
    doc = dict(doc)
    known = {f.name for f in fields(Profile)}
    unknown = set(doc) - known
    if unknown:
        raise ValueError(f"unknown profile keys: {sorted(unknown)} (known: {sorted(known)})")
    logs = tuple(LogClass(size=parse_size(c["size"]), one_off=int(c.get("one_off", 0)),
                          scheduled=int(c.get("scheduled", 0)),
                          bytes_per_second=parse_size(c["bytes_per_second"]) if c.get("bytes_per_second") else None)
                 for c in doc.pop("logs"))
    if not logs or any(c.tasks <= 0 or c.size <= 0 for c in logs):
        raise ValueError("logs: every class needs a size > 0 and at least one Task")
    if len({c.size for c in logs}) != len(logs):
        raise ValueError("logs: one class per size")
    operator = OperatorSettings(**{k: (tuple(v) if k == "extra_args" else v)
                                   for k, v in (doc.pop("operator", None) or {}).items()})
    operator = replace(operator, log_bytes_per_second=parse_size(operator.log_bytes_per_second))
    targets = Targets(**(doc.pop("targets", None) or {}))
    for key in ("run_for_bytes_per_second", "baseline_size"):
        if doc.get(key) is not None:
            doc[key] = parse_size(doc[key])
    if "manifests" in doc:
        doc["manifests"] = tuple(doc["manifests"] or ())
    return Profile(logs=logs, operator=operator, targets=targets, **doc)


def load(name_or_path: str) -> Profile:
    """A built-in profile by name (``perf/profiles/<name>.yaml``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES / f"{name_or_path}.yaml"
    if not path.exists():
        builtin = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise SystemExit(f"no profile {name_or_path!r}; built-in: {', '.join(builtin)}")
    doc = yaml.safe_load(path.read_text())
    doc.setdefault("name", path.stem)
    return from_mapping(doc)
