"""Time, injected.

Everything in the gateway that stamps or waits takes a ``Clock`` (client-go's ``clock.Clock``), so
tests step a fake one instead of sleeping: record ``created``/``updated``/``expires``, the receive
time of log lines, and the retention sweeper's interval. The operator has its own copy of this
small protocol; the gateway does not import operator code.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences mean anything."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def now_ms(clock: Clock) -> int:
    """The clock's wall time as integer milliseconds since the epoch (the storage unit)."""
    return int(clock.now().timestamp() * 1000)
