"""``add_after``: the queue plus one timer heap (client-go ``util/workqueue/delaying_queue.go``).

Delayed items wait in a single heap ordered by deadline on the injected ``Clock``; one background
task (the *delay loop*) sleeps until the earliest deadline, moves every due item into the queue
with ``add``, and sleeps again. An ``add_after`` that puts a new earliest deadline on the heap wakes
the loop so it re-arms its sleep. An item waits at most once: a second ``add_after`` for an item
already waiting keeps the earlier of the two deadlines.

Lifecycle: the delay loop is started lazily by the first ``add_after`` with a positive delay (so
``add_after`` must then be called with an event loop running), and ``shut_down()`` /
``shut_down_with_drain()`` cancel it; ``await q.shut_down()`` waits until it has exited. Items still
waiting at shutdown are dropped, as in client-go.

Every ``add_after`` counts as a retry in ``workqueue_retries_total`` (client-go does the same).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from controller.clock import Clock
from controller.workqueue.metrics import WorkqueueMetrics
from controller.workqueue.queue import BackgroundExit, Queue, T


class DelayingQueue(Queue[T]):
    """A ``Queue`` with ``add_after``."""

    def __init__(self, *, name: str, clock: Clock, metrics: WorkqueueMetrics | None = None) -> None:
        super().__init__(name=name, clock=clock, metrics=metrics)
        # Min-heap of (deadline, seq, item). An entry is live iff _deadlines[item] == (deadline,
        # seq); entries superseded by an earlier deadline stay behind, stale, and are skipped when
        # they reach the top. Pushed by add_after(), popped only by the delay loop.
        self._heap: list[tuple[float, int, T]] = []
        # item -> (deadline, seq) of its one live heap entry; an item is here exactly while it
        # waits for its deadline. Written by add_after() and the delay loop.
        self._deadlines: dict[T, tuple[float, int]] = {}
        self._seq = itertools.count()
        # Set by add_after() when the heap gets a new earliest live entry; cleared by the delay loop
        # each time round, before it looks at the heap.
        self._heap_changed = asyncio.Event()
        # The delay loop; created by the first positive add_after(), cancelled by shutdown.
        self._delay_task: asyncio.Task[None] | None = None

    def add_after(self, item: T, delay: float) -> None:
        """Add ``item`` once ``delay`` seconds of the clock have passed; ``delay <= 0`` adds now."""
        if self._shutting_down:
            return
        self._metrics.retry()
        if delay <= 0:
            self.add(item)
            return
        deadline = self._clock.monotonic() + delay
        current = self._deadlines.get(item)
        if current is not None and current[0] <= deadline:
            return
        entry = (deadline, next(self._seq), item)
        self._deadlines[item] = entry[:2]
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._heap_changed.set()
        self._start_delay_loop()

    @property
    def waiting(self) -> int:
        """Items waiting for their deadline."""
        return len(self._deadlines)

    def _start_delay_loop(self) -> None:
        if self._delay_task is None:
            self._delay_task = asyncio.get_running_loop().create_task(
                self._delay_loop(), name=f"workqueue[{self.name}].delay"
            )

    def _stop_background(self) -> BackgroundExit:
        self._heap.clear()
        self._deadlines.clear()
        task = self._delay_task
        if task is not None:
            task.cancel()
        return BackgroundExit(task)

    async def _delay_loop(self) -> None:
        while not self._shutting_down:
            self._heap_changed.clear()
            self._release_due(self._clock.monotonic())
            if not self._heap:
                await self._heap_changed.wait()
                continue
            timeout = self._heap[0][0] - self._clock.monotonic()
            await _first_of(self._clock.sleep(timeout), self._heap_changed.wait())

    def _release_due(self, now: float) -> None:
        """Add every item whose deadline has passed; leave a live entry (or nothing) on top."""
        while self._heap:
            deadline, seq, item = self._heap[0]
            if self._deadlines.get(item) != (deadline, seq):
                heapq.heappop(self._heap)  # stale: superseded by an earlier deadline
                continue
            if deadline > now:
                return
            heapq.heappop(self._heap)
            del self._deadlines[item]
            self.add(item)


async def _first_of(*coros: Any) -> None:
    """Run the coroutines until the first finishes; cancel and await the others."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
