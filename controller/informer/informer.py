"""``Informer``: list + watch one resource into a ``Store`` and tell handlers what changed.

client-go's reflector and shared informer, in one asyncio task:

1. **List** in pages (``limit=page_size`` + ``continue``), a consistent read. The result
   replaces the store: objects not seen before are delivered as adds, objects whose
   resourceVersion changed as updates, and objects that disappeared as deletes carrying their
   last known state.
2. **Watch** from the list's resourceVersion with bookmarks. Every event, BOOKMARK included,
   advances the resourceVersion; bookmarks reach no handler.
3. When the watch ends (the error's verdict comes from ``controller.retry.classify``):

   - the server closed it (its timeout)          -> re-watch from the last resourceVersion
   - verdict relist (410 Gone, ERROR or HTTP)    -> relist at once (our version expired)
   - nothing heard for ``silence_timeout``       -> the watchdog cancels it; re-watch
   - verdict retry, unbounded (transport error,  -> back off (honour Retry-After); re-watch
     429, 5xx, 408)
   - anything else (403 RBAC, even while it is   -> back off; relist (what we may see may have
     retried, 404 no CRD, ...)                      changed)
   - closed at once having delivered nothing     -> back off; re-watch (no hot loop)

   A failed list is backed off and retried; an informer never gives up. Backoff is a
   ``controller.retry.Backoff`` set as client-go's reflector: 0.8 s doubling to 30 s, each wait
   stretched by a random factor in [1, 2) -- so it settles in [30, 60) s, about 0.02 QPS per
   informer -- and reset after 2 minutes without a failure.
4. **Resync**: every ``resync_period`` each cached object is re-delivered as ``on_update(obj, obj)``
   so level-triggered consumers re-check it (handlers tell a resync by ``old is new``).

Handlers are plain functions called synchronously from the informer's task; they must be quick
(typically: enqueue a key) and must not mutate the objects. A handler's exception is logged and
counted, and does not stop delivery. Updates whose resourceVersion did not change are not
delivered, except by resync.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import structlog

from controller.clock import Clock
from controller.informer.metrics import InformerMetrics
from controller.informer.store import Delta, IndexFunc, Store, object_key, resource_version
from controller.informer.store import strip_managed_fields
from controller.kube.client import KubeClient
from controller.kube.errors import KubeError
from controller.kube.resources import Resource
from controller.retry import RELIST, RETRY, Backoff, BackoffPolicy, verdict_of

log = structlog.get_logger(__name__)

OnAdd = Callable[[dict[str, Any]], None]
OnUpdate = Callable[[dict[str, Any], dict[str, Any]], None]
OnDelete = Callable[[dict[str, Any]], None]

RESYNC_BATCH = 100
"""Objects re-delivered by a resync between two yields to the event loop."""

SHORT_WATCH_SECONDS = 1.0
"""A watch that ends normally this soon having delivered nothing is treated as a failure."""


@dataclass(frozen=True)
class _Handler:
    on_add: OnAdd | None
    on_update: OnUpdate | None
    on_delete: OnDelete | None


def reflector_backoff(initial: float, maximum: float) -> BackoffPolicy:
    """client-go's reflector backoff: ``initial`` doubling to ``maximum``, each wait times a random
    factor in [1, 2), reset after 2 minutes without a failure."""
    return BackoffPolicy(initial=2 * initial, maximum=2 * maximum, jitter=0.5, reset_after=120.0)


class Informer:
    """Keeps ``store`` in step with one resource (optionally one namespace / label selector)."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        clock: Clock,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_period: float = 300.0,
        watch_timeout: float = 300.0,
        silence_timeout: float = 90.0,
        backoff_initial: float = 0.8,
        backoff_max: float = 30.0,
        page_size: int = 500,
        indexers: dict[str, IndexFunc] | None = None,
        name: str | None = None,
        metrics: InformerMetrics | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """
        ``transform``: applied to every object before it is cached or handed to handlers (client-go's
        ``SetTransform``), e.g. to drop fields nobody reads; it must keep metadata.
        ``resync_period``: seconds between resyncs; ``0`` disables them.
        ``watch_timeout``: the server ends each watch after between 1× and 2× this (randomised,
        as client-go does, so that informers do not reconnect in lockstep).
        ``silence_timeout``: a watch that delivers no event, bookmark included, for this long is
        presumed dead; keep it above the server's bookmark interval (about 60 s).
        """
        resource.path(namespace)  # a cluster-scoped resource with a namespace fails here, not later
        self._client = client
        self._resource = resource
        self._clock = clock
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._resync_period = resync_period
        self._watch_timeout = watch_timeout
        self._silence_timeout = silence_timeout
        self._page_size = page_size
        self._backoff = Backoff(reflector_backoff(backoff_initial, backoff_max), clock)
        """Used only by the ``run`` task."""
        self.name = name or (f"{resource.plural}@{namespace}" if namespace else resource.plural)
        self._metrics = metrics or InformerMetrics()
        self._transform = transform or (lambda obj: obj)
        self._log = log.bind(informer=self.name)

        self.store = Store()
        """The cache. Written only by the ``run`` task; read by anyone (each read decodes a copy)."""
        if indexers:
            self.store.add_indexers(indexers)
        self._handlers: list[_Handler] = []
        """Appended by ``add_handler`` (any task); iterated by the ``run`` task."""
        self._synced = asyncio.Event()
        """Set by the ``run`` task once the first list has been delivered; never cleared."""
        self._resource_version: str | None = None
        """Last resourceVersion seen (list or event, bookmarks included); the next watch starts
        there. Written only by the ``run`` task."""
        self._last_heard = 0.0
        """``clock.monotonic()`` of the current watch's start or last event. Written by the watch
        consumer, read by its watchdog; both are children of the ``run`` task."""
        self._running = False

    # -- public --------------------------------------------------------------------------------

    def add_handler(
        self,
        on_add: OnAdd | None = None,
        on_update: OnUpdate | None = None,
        on_delete: OnDelete | None = None,
    ) -> None:
        """Register handlers. If the informer has synced already, ``on_add`` is called at once for
        every cached object, so a late handler sees the same world as an early one."""
        handler = _Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if self.has_synced and on_add is not None:
            for obj in self.store.list():
                self._call(handler, "on_add", obj)

    @property
    def has_synced(self) -> bool:
        """The first full list has been stored and delivered to the handlers."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def last_sync_resource_version(self) -> str | None:
        """The resourceVersion the cache is current as of (last list, event or bookmark)."""
        return self._resource_version

    async def run(self) -> None:
        """List and watch until cancelled. Own the task; cancel and await it to stop."""
        if self._running:
            raise RuntimeError(f"informer {self.name} is already running")
        self._running = True
        resync = asyncio.create_task(self._resync_forever(), name=f"informer-resync:{self.name}")
        try:
            await self._list_and_watch_forever()
        finally:
            resync.cancel()
            await asyncio.wait({resync})
            self._running = False

    # -- list and watch ------------------------------------------------------------------------

    async def _list_and_watch_forever(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                reason = await self._watch()
            except KubeError as exc:
                verdict = verdict_of(exc)
                if not need_list and verdict.action is RELIST:
                    self._log.info("informer.watch_expired",
                                   resource_version=self._resource_version)
                    self._metrics.watch_restarted(self.name, "expired")
                    need_list = True
                    continue
                if not need_list:
                    self._metrics.watch_restarted(self.name, "error")
                    need_list = verdict.action is not RETRY or verdict.give_up_after is not None
                await self._back_off(exc, listing=need_list)
                continue
            except Exception as exc:  # a bug in event handling: keep the cache alive, but loudly
                self._log.exception("informer.internal_error")
                need_list = True
                await self._back_off(exc, listing=True)
                continue
            self._metrics.watch_restarted(self.name, "silence" if reason == "silence" else "closed")
            if reason == "short":
                await self._back_off(None, listing=False)

    async def _back_off(self, exc: BaseException | None, *, listing: bool) -> None:
        # An informer never gives up, whatever the verdict: only its Retry-After is used here.
        retry_after = verdict_of(exc).retry_after if exc is not None else None
        delay = self._backoff.next(None) or 0.0
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._log.warning(
            "informer.backoff",
            error=repr(exc) if exc is not None else "watch closed immediately",
            seconds=round(delay, 3),
            then="list" if listing else "watch",
        )
        await self._clock.sleep(delay)

    async def _list(self) -> None:
        items: list[dict[str, Any]] = []
        continue_token: str | None = None
        list_version: str | None = None
        while True:
            page = await self._client.list(
                self._resource,
                namespace=self._namespace,
                label_selector=self._label_selector,
                field_selector=self._field_selector,
                limit=self._page_size,
                continue_token=continue_token,
            )
            for item in page.get("items") or ():
                # Items of built-in kinds come without apiVersion/kind; watch objects have them.
                item.setdefault("apiVersion", self._resource.api_version)
                item.setdefault("kind", self._resource.kind)
                items.append(self._transform(item))
            metadata = page.get("metadata") or {}
            list_version = metadata.get("resourceVersion") or list_version
            continue_token = metadata.get("continue") or None
            if continue_token is None:
                break
        deltas = self.store.replace(items, list_version)
        self._resource_version = list_version
        self._metrics.relisted(self.name)
        self._log.debug("informer.listed", objects=len(items), resource_version=list_version)
        self._deliver(deltas)
        self._synced.set()

    def _deliver(self, deltas: list[Delta]) -> None:
        for old, new in deltas:
            if old is None and new is not None:
                self._notify("on_add", new)
            elif new is None and old is not None:
                self._notify("on_delete", old)
            elif old is not None and new is not None:
                if resource_version(old) != resource_version(new):
                    self._notify("on_update", old, new)

    async def _watch(self) -> str:
        """One watch, until it ends: ``"closed"``, ``"short"`` or ``"silence"``; errors raise."""
        started = self._last_heard = self._clock.monotonic()
        events = self._client.watch(
            self._resource,
            namespace=self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            resource_version=self._resource_version,
            timeout_seconds=int(self._watch_timeout * (1.0 + random.random())),
            allow_bookmarks=True,
        )
        consume = asyncio.create_task(self._consume(events), name=f"informer-watch:{self.name}")
        watchdog = asyncio.create_task(self._watchdog(), name=f"informer-watchdog:{self.name}")
        try:
            await asyncio.wait({consume, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watchdog.cancel()
            consume.cancel()
            await asyncio.wait({consume, watchdog})
        if consume.cancelled():
            self._log.warning("informer.watch_silent", seconds=self._silence_timeout,
                              resource_version=self._resource_version)
            return "silence"
        delivered = consume.result()  # raises the watch's error
        if delivered == 0 and self._clock.monotonic() - started < SHORT_WATCH_SECONDS:
            return "short"
        return "closed"

    async def _consume(self, events: Any) -> int:
        delivered = 0
        async with aclosing(events):
            async for event in events:
                self._last_heard = self._clock.monotonic()
                self._apply(event)
                delivered += 1
        return delivered

    async def _watchdog(self) -> None:
        """Returns once the watch has been silent for ``silence_timeout``."""
        while True:
            remaining = self._last_heard + self._silence_timeout - self._clock.monotonic()
            if remaining <= 0:
                return
            await self._clock.sleep(remaining)

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = self._transform(obj)
        if kind in ("ADDED", "MODIFIED"):
            old, new = self.store.upsert(obj)
            if old is None:
                self._notify("on_add", new)
            elif resource_version(old) != resource_version(new):
                self._notify("on_update", old, new)
        elif kind == "DELETED":
            self.store.delete(object_key(obj))
            self._notify("on_delete", strip_managed_fields(obj))
        elif kind != "BOOKMARK":
            self._log.warning("informer.unknown_event", type=kind)
            return
        version = resource_version(obj)
        if version:
            self._resource_version = version
            self.store.resource_version = version

    # -- resync and delivery -------------------------------------------------------------------

    async def _resync_forever(self) -> None:
        if self._resync_period <= 0:
            return
        await self._synced.wait()
        while True:
            await self._clock.sleep(self._resync_period)
            # One object decoded at a time (the store holds them encoded), yielding to the other
            # tasks every RESYNC_BATCH objects: a resync of thousands must not stall the lease
            # renewal or the watches.
            for done, key in enumerate(self.store.keys(), 1):
                obj = self.store.get(key)
                if obj is not None:
                    self._notify("on_update", obj, obj)
                if done % RESYNC_BATCH == 0:
                    await asyncio.sleep(0)

    def _notify(self, which: str, *objs: dict[str, Any]) -> None:
        for handler in list(self._handlers):
            self._call(handler, which, *objs)

    def _call(self, handler: _Handler, which: str, *objs: dict[str, Any]) -> None:
        fn = getattr(handler, which)
        if fn is None:
            return
        try:
            fn(*objs)
        except Exception:
            self._metrics.handler_failed(self.name)
            self._log.exception("informer.handler_failed", handler=which,
                                key=_safe_key(objs[-1]))


def _safe_key(obj: dict[str, Any]) -> str:
    try:
        return object_key(obj)
    except ValueError:
        return "?"
