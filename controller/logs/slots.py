"""When the log shipper pool may open another stream, and which queued log it opens: its policy.

Pure bookkeeping on times passed in (monotonic seconds): no I/O, no asyncio, no clock of its own.
``LogShipperPool`` owns one ``StreamSlots``, tells it when a stream opens, reads bytes and closes,
and asks it ``may_start(now)`` and ``next_change(now)``; ``next_job`` orders its queue.

Moving and waiting streams. A stream is *moving* while it reads bytes from the API server: it read
some in the last ``idle_after`` seconds, or it opened that recently. Otherwise it is *waiting* and
uses no bandwidth: a follow that has caught up with a quiet pod, a backoff after an error, the
server preparing a read (kwok scans a log from its start to find a ``sinceTime``), the drain after
the pod ended, the sink sealing the log. A waiting stream should not keep a queued log from
starting, so a new stream starts while

    moving < max_streams   and   open < max_streams + max_waiting

``max_waiting`` bounds what the API server and memory see (each open stream holds a connection and
at most two batches); 0 makes ``max_streams`` a plain cap on open streams. A waiting stream that
moves again is never stopped (a running pod's lines would rotate away meanwhile): the moving count
may then exceed ``max_streams`` for a while, and no stream starts until it is below again.

Order (``next_job``): a queued pod that still runs goes first, since its kubelet rotates lines
away while it waits, while a finished pod's log no longer changes; otherwise submit order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotPolicy:
    max_streams: int
    """Streams moving bytes at once; a new one starts only while fewer move."""
    max_waiting: int = 0
    """Streams that may stay open beyond ``max_streams`` while they read nothing."""
    idle_after: float = 2.0
    """Seconds without a byte read after which an open stream counts as waiting."""

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_waiting < 0 or self.idle_after <= 0:
            raise ValueError("max_streams >= 1, max_waiting >= 0 and idle_after > 0 are required")


class StreamSlots:
    """The open streams and when each last read a byte; see the module."""

    def __init__(self, policy: SlotPolicy) -> None:
        self.policy = policy
        # Execution -> monotonic time of its stream's last byte read, or of its opening before the
        # first. Exactly the pool's open streams: added by opened(), removed by closed().
        self._last: dict[str, float] = {}

    @property
    def open(self) -> int:
        return len(self._last)

    def opened(self, execution: str, now: float) -> None:
        self._last[execution] = now

    def read(self, execution: str, now: float) -> None:
        """``execution``'s stream read bytes at ``now`` (called per chunk: keep it a dict write)."""
        if execution in self._last:
            self._last[execution] = now

    def closed(self, execution: str) -> None:
        self._last.pop(execution, None)

    def moving(self, now: float) -> int:
        idle_after = self.policy.idle_after
        return sum(1 for last in self._last.values() if now - last < idle_after)

    def may_start(self, now: float) -> bool:
        p = self.policy
        return len(self._last) < p.max_streams + p.max_waiting and self.moving(now) < p.max_streams

    def next_change(self, now: float) -> float | None:
        """The earliest time after ``now`` at which ``may_start`` turns true with no stream opening,
        reading or closing meanwhile (a moving stream turns waiting); None: never."""
        p = self.policy
        if len(self._last) >= p.max_streams + p.max_waiting:
            return None  # only a close makes room
        turning = sorted(last + p.idle_after for last in self._last.values() if now - last < p.idle_after)
        excess = len(turning) - p.max_streams  # moving streams beyond the last one allowed
        return turning[excess] if excess >= 0 else None


def next_job(running: Sequence[bool]) -> int:
    """Index of the queued log to start next, given for each (in submit order) whether its pod
    still runs: the first running one, else the first."""
    for index, still_running in enumerate(running):
        if still_running:
            return index
    return 0
