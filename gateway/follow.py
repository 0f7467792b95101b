"""Following an execution's log while it grows: ``GET /v1/tasks/{execution}/logs/follow``.

The operator streams each live pod log into this gateway (``PUT /internal/tasks/{execution}/logs``)
and seals it when the pod is done (``finalize``), so following the stored blob *is* following the
pod, and it keeps working when the pod is gone: one call, one source, no switch-over between a
pod-log proxy and the store (and no Kubernetes access needed to read logs).

``LogEvents`` wakes followers when an upload or a finalize of their execution ended in this
process. A follower subscribes *before* it looks at the store's state, so an upload landing
between the look and the wait is never missed; it also wakes every ``poll_interval`` seconds, which
picks up bytes a long upload has already written to the file before its request ended, a log
deleted by the sweeper, a record marked ``lost``, and -- with several replicas -- uploads and
finalizes that another replica took (``stat`` then answers the acknowledged size from the upload
ledger, ``blobs_ledger``): bounded latency of about ``poll_interval`` after their acknowledgement.

Memory is bounded: the stream sends the store's read chunks as they come, waiting on the client
(``write`` drains), and holds nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Callable

from gateway.blobs import BlobStore
from gateway.records import RecordStore


class LogEvents:
    """Per-execution wake-ups from uploads and finalize to followers.

    ``_waiting`` maps an execution to the event its current followers wait on; ``notify`` sets and
    drops it (the next subscriber makes a fresh one). Only the event loop's thread touches it.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Event] = {}

    def subscribe(self, execution: str) -> asyncio.Event:
        event = self._waiting.get(execution)
        if event is None:
            event = self._waiting[execution] = asyncio.Event()
        return event

    def notify(self, execution: str) -> None:
        event = self._waiting.pop(execution, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        """Wake every follower (shutdown: each sees ``stopping()`` and ends)."""
        for execution in list(self._waiting):
            self.notify(execution)

    def __len__(self) -> int:
        return len(self._waiting)


async def follow_chunks(
    blobs: BlobStore,
    records: RecordStore,
    events: LogEvents,
    execution: str,
    offset: int,
    *,
    poll_interval: float,
    idle_timeout: float,
    stopping: Callable[[], bool],
    monotonic: Callable[[], float],
) -> AsyncIterator[bytes]:
    """The log's bytes from ``offset``: what is stored, then what arrives, until the log is sealed
    and all of it was yielded. Also ends (without error) when the log is deleted, the record says
    ``lost``, no byte arrived for ``idle_timeout`` seconds, or ``stopping()`` (shutdown; checked
    after each chunk and each wake-up, and ``LogEvents.notify_all`` wakes the waiting followers):
    the client resumes with ``offset`` = bytes received."""
    pos = offset
    seen = False  # the log existed at some look: its disappearing later means it was deleted
    last_progress = monotonic()
    while True:
        woken = events.subscribe(execution)
        stat = await blobs.stat(execution)
        seen = seen or stat is not None
        if stat is not None and stat.size > pos:
            try:
                async with contextlib.aclosing(blobs.read_raw(execution, pos, stat.size)) as chunks:
                    async for chunk in chunks:
                        pos += len(chunk)
                        yield chunk
                        if stopping():
                            return  # shutdown: not the rest of a long stored log first
            except FileNotFoundError:  # removed by retention while we read
                return
            last_progress = monotonic()
            continue
        if stat is not None and stat.sealed:
            return
        if stat is None and seen:
            return  # deleted by retention
        record = await records.get(execution)
        if record is not None and record.get("log_state") == "lost":
            return  # the operator gave up on this log: nothing more will come
        if stopping() or monotonic() - last_progress >= idle_timeout:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(woken.wait(), poll_interval)
