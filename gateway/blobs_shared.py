"""What a blob store keeps per execution in memory, between requests, whatever its backend: the
lock that makes appends, finalize and delete of one execution exclusive, and the running sha256 of
the log's stored bytes (so ``finalize`` need not read the log again). No I/O.

Both are per process. Alone (SQLite) a store assumes one gateway process writes a given
execution's log; with several replicas (PostgreSQL) ``blobs_ledger`` takes the database's lock
around these, and a cached hash is used only when its size is the log's. Readers never take the
lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator

from gateway.errors import Unavailable


class ExecutionLocks:
    """One ``asyncio.Lock`` per execution, created on first use and dropped by the last user."""

    def __init__(self) -> None:
        #: execution -> (lock, users). An entry exists while some task holds or waits for the lock;
        #: the last user out removes it. Only touched on the event loop.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, execution: str, timeout: float | None) -> AsyncIterator[None]:
        """Hold ``execution``'s lock; waiting longer than ``timeout`` seconds raises 503
        ``upload_in_progress`` (``None``: wait as long as it takes)."""
        lock, users = self._locks.get(execution, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[execution] = (lock, users + 1)
        try:
            if timeout is None:
                await lock.acquire()
            else:
                try:
                    await asyncio.wait_for(lock.acquire(), timeout)
                except asyncio.TimeoutError:
                    # Transient: usually a retry racing the server's notice that the previous
                    # connection dropped. 503 + Retry-After: try the same offset again shortly.
                    raise Unavailable(
                        f"another upload of {execution!r} is still running; retry",
                        code="upload_in_progress",
                        headers={"Retry-After": "1"},
                    ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock_, users = self._locks[execution]
            if users <= 1:
                del self._locks[execution]
            else:
                self._locks[execution] = (lock_, users - 1)


@dataclass
class HashState:
    size: int
    hasher: Any  # hashlib sha256 object; hashes exactly the first ``size`` bytes of the log


class HashCache:
    """execution -> ``HashState``, most recently used last, at most ``capacity`` entries (a few
    hundred bytes each). Written only by the holder of the execution's lock."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, HashState] = OrderedDict()

    def take(self, execution: str) -> HashState | None:
        """Remove and return the state (an append session owns it until it puts it back)."""
        return self._states.pop(execution, None)

    def peek(self, execution: str) -> HashState | None:
        return self._states.get(execution)

    def put(self, execution: str, state: HashState) -> None:
        self._states[execution] = state
        self._states.move_to_end(execution)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def drop(self, execution: str) -> None:
        self._states.pop(execution, None)
