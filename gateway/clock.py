"""Time, injected: the gateway uses the operator's ``Clock`` protocol and ``RealClock``
(``controller.clock`` is a leaf module with no I/O beyond reading the time), so tests step one
fake clock for both. Everything in the gateway that stamps or waits takes a ``Clock``: record
``created``/``updated``/``expires``, the receive time of log lines, the retention sweeper.
"""

from __future__ import annotations

from controller.clock import Clock, RealClock

__all__ = ["Clock", "RealClock", "now_ms"]


def now_ms(clock: Clock) -> int:
    """The clock's wall time as integer milliseconds since the epoch (the storage unit)."""
    return int(clock.now().timestamp() * 1000)
