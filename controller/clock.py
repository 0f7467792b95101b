"""Time, injected.

Everything that waits or reads the time takes a ``Clock`` so tests can step a fake one instead of
sleeping (client-go's ``clock.Clock``). ``monotonic`` is for durations and deadlines; ``now`` is
wall-clock UTC for timestamps written to the API server.
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
