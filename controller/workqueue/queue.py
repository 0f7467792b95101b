"""The dedup FIFO at the bottom of the workqueue (client-go ``util/workqueue/queue.go``).

An item is a hashable key (for us, a Task's namespace/name). Adding an item that is already waiting
does nothing; adding an item that a worker is processing marks it dirty and it is queued again when
the worker calls ``done``. So however often an object changes, each key is queued at most once and
processed by at most one worker at a time, and a change seen during processing is never lost.

Urgent items: ``add(item, urgent=True)`` puts the item ahead of every item added normally (FIFO
among urgent ones), also when it is already waiting in the normal order, like controller-runtime's
priority queue with two levels. The operator uses it for a Task that has never been reconciled
or whose spec changed, so a burst of new Tasks gets its Jobs before the status updates of Tasks
already running. Urgency is a hint for one hand-out: an item re-queued by ``done()`` or
``add_after`` waits in the normal order.

Everything here runs on one event loop; the methods other than ``get`` and
``shut_down_with_drain`` are synchronous and never yield, so no locks are needed.

Shutdown: ``shut_down()`` stops accepting adds and wakes every parked ``get()``. ``get()`` keeps
handing out what is already queued, then raises ``ShutDown`` (client-go's ``Get`` returning
``shutdown=true``), so a worker loop is ``while True: item = await q.get() ...`` and ends by the
exception. ``shut_down_with_drain()`` does the same and also waits until every handed-out item has
been ``done()``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Generator, Hashable
from typing import Any, Generic, TypeVar

from controller.clock import Clock
from controller.workqueue.metrics import NOOP_QUEUE_METRICS, QueueMetrics, WorkqueueMetrics

T = TypeVar("T", bound=Hashable)


class ShutDown(Exception):
    """``get()`` on a queue that is shut down and has nothing left to hand out."""


class BackgroundExit:
    """What ``shut_down()`` returns: awaiting it waits until the queue's background task has exited.

    ``shut_down()`` stays synchronous (callable from ``finally`` blocks and signal handlers); it has
    already cancelled the task, and ``await q.shut_down()`` additionally waits for it to finish.
    Not awaiting it is harmless: this is not a coroutine, so nothing warns.
    """

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self._task = task

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})


class Queue(Generic[T]):
    """Dedup FIFO with dirty/processing sets. See the module docstring for the contract."""

    def __init__(self, *, name: str, clock: Clock, metrics: WorkqueueMetrics | None = None) -> None:
        self.name = name
        self._clock = clock
        self._metrics: QueueMetrics = (
            NOOP_QUEUE_METRICS if metrics is None else metrics.for_queue(name, clock)
        )
        # The order of work: _urgent first, then _queue. An item is *waiting* when it is dirty and
        # not processing; every waiting item has exactly one live entry in _queue, and maybe one
        # more in _urgent (add(urgent=True) of an item already waiting). The entry get() meets
        # first hands the item out; the other one is then stale (the item is processing, or not
        # dirty) and get() skips it. _waiting counts waiting items, so len() stays exact.
        self._queue: deque[T] = deque()
        self._urgent: deque[T] = deque()
        self._urgent_set: set[T] = set()  # items with a live entry in _urgent
        self._waiting = 0
        # Everything that needs processing: all of _queue, plus items re-added while being
        # processed (those are in _processing too, and done() moves them into _queue).
        self._dirty: set[T] = set()
        # Items handed out by get() and not yet done(). An item is never handed to two getters at
        # once: get() only hands out items from _queue, and an item in here is never in _queue.
        self._processing: set[T] = set()
        # Parked get() callers, oldest first. Each append to _queue wakes one (it re-checks the
        # queue when it runs, like a condition variable); shutdown wakes all.
        self._getters: deque[asyncio.Future[None]] = deque()
        # shut_down_with_drain() callers waiting for _processing to become empty.
        self._drainers: list[asyncio.Future[None]] = []
        # Set once by shut_down*(); from then on adds are ignored and get() raises when empty.
        self._shutting_down = False
        # True while shut_down_with_drain() waits; a plain shut_down() clears it to stop the wait.
        self._draining = False

    # -- adding ------------------------------------------------------------------------------

    def add(self, item: T, *, urgent: bool = False) -> None:
        """Mark ``item`` as needing processing. No-op if already dirty or after shutdown, except
        that ``urgent`` moves an item already waiting ahead of the normal order."""
        if self._shutting_down:
            return
        if item in self._dirty:
            if urgent and item not in self._processing and item not in self._urgent_set:
                self._urgent.append(item)
                self._urgent_set.add(item)
            return
        self._metrics.add(item)
        self._dirty.add(item)
        if item in self._processing:
            return  # queued by done()
        self._queue.append(item)
        self._waiting += 1
        if urgent:
            self._urgent.append(item)
            self._urgent_set.add(item)
        self._wake_one_getter()

    # -- handing out -------------------------------------------------------------------------

    async def get(self) -> T:
        """Wait for an item and take it; the caller must call ``done(item)`` afterwards.

        Raises ``ShutDown`` once the queue is shut down and nothing is queued.
        """
        while not self._waiting:
            if self._shutting_down:
                raise ShutDown(self.name)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # Woken for an item but cancelled before taking it: pass the wake-up on.
                    self._wake_one_getter()
                elif waiter in self._getters:
                    self._getters.remove(waiter)
                raise
        item = self._pop_waiting()
        self._metrics.get(item)
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        """Finish processing ``item``; if it was added again meanwhile, queue it now.

        Unknown items are ignored (as in client-go).
        """
        if item not in self._processing:
            return
        self._metrics.done(item)
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._waiting += 1
            self._wake_one_getter()
        if not self._processing:
            _wake_all(self._drainers)

    def __len__(self) -> int:
        """Items waiting to be handed out (not those being processed, not delayed ones)."""
        return self._waiting

    # -- shutdown ----------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shut_down(self) -> BackgroundExit:
        """Stop accepting adds, wake every getter, and stop background work.

        Queued items are still handed out by ``get()``; it raises ``ShutDown`` when none are left.
        Also ends a pending ``shut_down_with_drain()`` wait. Await the result to wait for the
        background task to exit.
        """
        self._shutting_down = True
        self._draining = False
        _wake_all(self._getters)
        _wake_all(self._drainers)
        return self._stop_background()

    async def shut_down_with_drain(self) -> None:
        """Like ``shut_down()``, then wait until every handed-out item is ``done()``."""
        self._shutting_down = True
        self._draining = True
        _wake_all(self._getters)
        stopped = self._stop_background()
        while self._processing and self._draining:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._drainers:
                    self._drainers.remove(waiter)
        await stopped

    def _stop_background(self) -> BackgroundExit:
        """Cancel background work (none here; the delaying queue has its timer loop)."""
        return BackgroundExit(None)

    # -- internals ---------------------------------------------------------------------------

    def _pop_waiting(self) -> T:
        """The next waiting item, urgent ones first; skips stale entries (see ``__init__``)."""
        while self._urgent:
            item = self._urgent.popleft()
            self._urgent_set.discard(item)
            if item in self._dirty and item not in self._processing:
                self._waiting -= 1
                return item
        while True:
            item = self._queue.popleft()
            if item in self._dirty and item not in self._processing:
                self._waiting -= 1
                return item

    def _wake_one_getter(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _wake_all(waiters: deque[asyncio.Future[None]] | list[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.pop()
        if not waiter.done():
            waiter.set_result(None)


__all__ = ["BackgroundExit", "Queue", "ShutDown"]
