"""The read side both backends implement, and the options of a listing and of a log read.

``Backend`` is the narrow seam: ``kube_backend.KubeBackend`` (Task resources, Jobs, Pods, pod
logs) and ``gateway_backend.GatewayBackend`` (the gateway's ``/v1`` API) answer the same calls with
the same views, so every verb prints the same thing whichever answered. Log lines go to a
``LogSink`` as they arrive: nothing buffers a whole log (except ``--newest-first`` on Kubernetes,
which must read to the end before printing backwards).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

from .errors import UsageError
from .views import ExecutionView, TaskView

STATUSES = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Active", "Paused", "Invalid")


def canonical_status(text: str) -> str:
    """``paused``/``PAUSED`` -> ``Paused``; an unknown status is a usage error naming the known ones."""
    for status in STATUSES:
        if status.lower() == text.strip().lower():
            return status
    raise UsageError(f"unknown status {text!r}; use one of {', '.join(STATUSES)}")


@dataclass(frozen=True)
class ListQuery:
    scheduled: bool | None = None
    """True: scheduled tasks only; False: one-off only; None: both."""
    statuses: tuple[str, ...] = ()
    """Canonical statuses (``canonical_status``); any of them matches."""
    skills: tuple[str, ...] = ()
    since: datetime | None = None
    """Only tasks/executions started (or created) at or after this time."""
    limit: int | None = None


def status_matches(status: str | None, wanted: tuple[str, ...]) -> bool:
    if not wanted:
        return True
    return (status or "").lower() in {w.lower() for w in wanted}


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail: int | None = None
    since: timedelta | None = None
    timestamps: bool = False
    grep: str | None = None
    regex: bool = False
    ignore_case: bool = False
    offset: int = 0
    limit: int | None = None
    newest_first: bool = False
    container: str | None = None

    def matcher(self) -> Callable[[str], bool] | None:
        """Client-side ``--grep`` (the gateway greps server-side)."""
        if self.grep is None:
            return None
        flags = re.IGNORECASE if self.ignore_case else 0
        try:
            pattern = re.compile(self.grep if self.regex else re.escape(self.grep), flags)
        except re.error as exc:
            raise UsageError(f"--grep {self.grep!r} is not a valid regular expression: {exc}") from exc
        return lambda text: pattern.search(text) is not None


class LogSink(Protocol):
    def line(self, text: str, ts: datetime | None) -> None:
        """One log line (without its newline) and, when known and asked for, its timestamp."""

    def raw(self, chunk: bytes) -> None:
        """Bytes of a raw download, as they arrive."""


@dataclass
class LineWindow:
    """Applies ``offset``/``limit`` to lines as they pass; ``full`` once the limit is reached."""

    offset: int = 0
    limit: int | None = None
    seen: int = field(default=0)
    taken: int = field(default=0)

    def admit(self) -> bool:
        self.seen += 1
        if self.seen <= self.offset:
            return False
        if self.limit is not None and self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    @property
    def full(self) -> bool:
        return self.limit is not None and self.taken >= self.limit


class Backend(Protocol):
    """What every read verb needs. Errors are ``taskctl.errors`` classes, translated inside."""

    name: str
    """``kube`` or ``gateway`` (shown in errors and ``--help``)."""

    async def list_tasks(self, query: ListQuery) -> list[TaskView]:
        """Tasks (not executions), newest first."""

    async def list_executions(self, task: str, query: ListQuery) -> list[ExecutionView]:
        """The executions of one task, newest first; ``NotFoundError`` for an unknown task."""

    async def describe(self, name: str) -> TaskView:
        """One task with its executions (and Events, on Kubernetes)."""

    async def logs(self, target: str, options: LogOptions, sink: LogSink) -> str:
        """Send the log of ``target`` (a task: its newest execution; or an execution) to ``sink``;
        return the execution's name. With ``follow``, return once the execution has finished and
        its last line was sent."""

    async def raw_log(self, target: str, sink: LogSink) -> str:
        """Send the stored (or, on Kubernetes, the pod's whole) log unmodified; return the name."""

    async def recorded_spec(self, execution: str) -> tuple[str, dict[str, Any], str | None]:
        """What ``rerun`` repeats: (namespace, the Task spec ``execution`` was made from, a note
        when that spec is only approximated); ``NotFoundError`` for an unknown execution."""

    async def close(self) -> None: ...
