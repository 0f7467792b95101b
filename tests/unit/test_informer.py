"""Informer semantics against a fake API server that replays scripted list and watch responses.

The server is real aiohttp on 127.0.0.1; only its answers are scripted. Time is a fake clock the
tests step, so backoff, the watchdog and resync run without sleeping.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry

from controller.informer import Informer, PrometheusInformerMetrics, Store
from controller.kube import JOBS, TASKS, KubeClient

pytestmark = pytest.mark.timeout(10)

NS = "ns"
SILENCE = 90.0


# -- time -------------------------------------------------------------------------------------


async def parked(clock: FakeClock, at_least: float = 0.0, at_most: float = float("inf")) -> float:
    """Wait, in real time (loopback I/O happens meanwhile), until the clock's earliest sleeper is
    due between ``at_least`` and ``at_most`` seconds from now; return how far off it is."""
    async with asyncio.timeout(5):
        while True:
            deadline = clock.next_deadline
            if deadline is not None and at_least <= deadline - clock.monotonic() <= at_most:
                return deadline - clock.monotonic()
            await asyncio.sleep(0.002)


# -- fake API server ----------------------------------------------------------------------------

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeApi:
    """Answers each list and each watch with the next scripted reply, in order.

    A request with no reply scripted yet waits for one, like a server that has nothing to say.
    """

    def __init__(self) -> None:
        self.url = ""
        self.lists: asyncio.Queue[Reply] = asyncio.Queue()
        self.watches: asyncio.Queue[Reply] = asyncio.Queue()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        """(list|watch, path, query) of every request, in arrival order."""
        self.hangups = 0
        """Watches that ended because the client went away."""

    def script(self, *, lists: list[Reply] = (), watches: list[Reply] = ()) -> None:
        for reply in lists:
            self.lists.put_nowait(reply)
        for reply in watches:
            self.watches.put_nowait(reply)

    def requests(self, kind: str) -> list[dict[str, str]]:
        return [query for seen_kind, _, query in self.seen if seen_kind == kind]

    async def until(self, kind: str, count: int) -> dict[str, str]:
        """Wait until ``count`` requests of ``kind`` arrived; returns the last one's query."""
        await until(lambda: len(self.requests(kind)) >= count)
        return self.requests(kind)[count - 1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = "watch" if request.query.get("watch") == "true" else "list"
        self.seen.append((kind, request.path, dict(request.query)))
        reply = await (self.watches if kind == "watch" else self.lists).get()
        return await reply(request)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.002)


def page(items: list[dict[str, Any]], rv: str, cont: str | None = None) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            metadata["continue"] = cont
        return web.json_response({"kind": "List", "apiVersion": "v1", "metadata": metadata,
                                  "items": items})

    return reply


def http(code: int, reason: str, headers: dict[str, str] | None = None) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response({"kind": "Status", "code": code, "reason": reason,
                                  "message": reason}, status=code, headers=headers)

    return reply


def stream(api: FakeApi, *events: dict[str, Any], hang: bool = False) -> Reply:
    """A watch that sends ``events`` then closes, or with ``hang`` stays open until hung up."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        if hang:
            try:
                await asyncio.Future()
            except asyncio.CancelledError:
                api.hangups += 1
                raise
        await response.write_eof()
        return response

    return reply


def task(name: str, rv: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "fabric.dev/v1alpha1",
        "kind": "Task",
        "metadata": {
            "name": name, "namespace": NS, "resourceVersion": rv, "labels": labels,
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        },
        "spec": {"skillName": "s", "actionName": "a"},
    }


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def bookmark(rv: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Task", "apiVersion": "fabric.dev/v1alpha1",
                                           "metadata": {"resourceVersion": rv}}}


def expired() -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version"}}


def rv_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["resourceVersion"]


class Calls:
    """Records handler calls as ("add"|"update"|"delete", name, rv...) tuples."""

    def __init__(self, informer: Informer) -> None:
        self.log: list[tuple[str, ...]] = []
        self.objects: list[dict[str, Any]] = []
        self.resyncs: list[str] = []
        informer.add_handler(self.add, self.update, self.delete)

    def add(self, obj: dict[str, Any]) -> None:
        self.objects.append(obj)
        self.log.append(("add", obj["metadata"]["name"], rv_of(obj)))

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.objects.append(new)
        if old is new:
            self.resyncs.append(new["metadata"]["name"])
        else:
            self.log.append(("update", new["metadata"]["name"], rv_of(old), rv_of(new)))

    def delete(self, obj: dict[str, Any]) -> None:
        self.objects.append(obj)
        self.log.append(("delete", obj["metadata"]["name"], rv_of(obj)))


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@pytest.fixture
async def kube(api: FakeApi) -> AsyncIterator[KubeClient]:
    client = KubeClient(api.url, request_timeout=2.0)
    yield client
    await client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_informer(kube: KubeClient, clock: FakeClock, **options: Any) -> Informer:
    options.setdefault("resync_period", 0)
    return Informer(kube, options.pop("resource", TASKS), clock=clock, namespace=NS,
                    silence_timeout=SILENCE, **options)


@asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[asyncio.Task[None]]:
    runner = asyncio.create_task(informer.run())
    try:
        yield runner
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        leftovers = [t for t in asyncio.all_tasks()
                     if t.get_name().startswith("informer-") and not t.done()]
        assert leftovers == [], "run() must not leave tasks behind"


# -- specification ------------------------------------------------------------------------------


async def test_initial_list_follows_continue_tokens_then_watches_from_the_list_version(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([task("a", "5"), task("b", "6")], "10", cont="page-2"),
                      page([task("c", "7")], "10")],
               watches=[stream(api, hang=True)])
    informer = make_informer(kube, clock)
    calls = Calls(informer)
    async with running(informer):
        await informer.wait_synced()
        watch = await api.until("watch", 1)

    assert calls.log == [("add", "a", "5"), ("add", "b", "6"), ("add", "c", "7")]
    assert api.requests("list") == [{"limit": "500"}, {"limit": "500", "continue": "page-2"}]
    assert api.seen[0][1] == "/apis/fabric.dev/v1alpha1/namespaces/ns/tasks"
    assert watch["resourceVersion"] == "10"
    assert watch["allowWatchBookmarks"] == "true"
    assert 300 <= int(watch["timeoutSeconds"]) <= 600
    assert informer.has_synced and informer.last_sync_resource_version == "10"
    assert sorted(informer.store.keys()) == ["ns/a", "ns/b", "ns/c"]


async def test_watch_events_update_the_cache_and_reach_handlers(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([task("a", "5")], "10")],
               watches=[stream(api,
                               event("ADDED", task("b", "11")),
                               event("MODIFIED", task("a", "12")),
                               event("MODIFIED", task("a", "12")),  # same version: not delivered
                               event("DELETED", task("b", "13")),
                               hang=True)])
    informer = make_informer(kube, clock)
    calls = Calls(informer)
    async with running(informer):
        await until(lambda: len(calls.log) == 4)
        assert informer.last_sync_resource_version == "13"

    assert calls.log == [("add", "a", "5"), ("add", "b", "11"), ("update", "a", "5", "12"),
                         ("delete", "b", "13")]
    assert informer.store.keys() == ["ns/a"]
    assert rv_of(informer.store.get("ns/a")) == "12"


async def test_bookmark_advances_the_version_without_calling_handlers(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([task("a", "5")], "10")],
               watches=[stream(api, bookmark("20")), stream(api, hang=True)])
    informer = make_informer(kube, clock)
    calls = Calls(informer)
    async with running(informer):
        rewatch = await api.until("watch", 2)

    assert rewatch["resourceVersion"] == "20"
    assert calls.log == [("add", "a", "5")]
    assert informer.last_sync_resource_version == "20"


async def test_a_watch_closed_by_the_server_is_reopened_from_the_last_event_version(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    registry = CollectorRegistry()
    api.script(lists=[page([task("a", "5")], "10")],
               watches=[stream(api, event("MODIFIED", task("a", "15"))), stream(api, hang=True)])
    informer = make_informer(kube, clock, metrics=PrometheusInformerMetrics(registry))
    calls = Calls(informer)
    async with running(informer):
        rewatch = await api.until("watch", 2)

    assert rewatch["resourceVersion"] == "15"
    assert len(api.requests("list")) == 1, "a normal close must not relist"
    assert calls.log == [("add", "a", "5"), ("update", "a", "5", "15")]
    assert registry.get_sample_value("informer_watch_restarts_total",
                                     {"informer": "tasks@ns", "reason": "closed"}) == 1


@pytest.mark.parametrize(
    "watches",
    [
        pytest.param(lambda api: [stream(api, event("MODIFIED", task("b", "12")), expired())],
                     id="error-event-410"),
        pytest.param(lambda api: [stream(api, event("MODIFIED", task("b", "12"))),
                                  http(410, "Gone")],
                     id="http-410"),
    ],
)
async def test_an_expired_watch_relists_and_synthesises_deletes_with_the_last_known_state(
        api: FakeApi, kube: KubeClient, clock: FakeClock, watches):
    api.script(lists=[page([task("a", "5"), task("b", "6"), task("c", "7")], "10"),
                      page([task("a", "5"), task("c", "15"), task("d", "16")], "20")],
               watches=[*watches(api), stream(api, hang=True)])
    informer = make_informer(kube, clock)
    calls = Calls(informer)
    async with running(informer):
        # The clock never moves here: a relist after 410 is immediate, never backed off.
        last_watch = await api.until("watch", len(watches(api)) + 1)

    assert calls.log == [
        ("add", "a", "5"), ("add", "b", "6"), ("add", "c", "7"),
        ("update", "b", "6", "12"),
        # the relist: a is unchanged (nothing delivered), c changed, d is new, b is gone
        ("update", "c", "7", "15"), ("add", "d", "16"), ("delete", "b", "12"),
    ]
    assert sorted(informer.store.keys()) == ["ns/a", "ns/c", "ns/d"]
    assert last_watch["resourceVersion"] == "20"


async def test_server_errors_back_off_with_jitter_then_recover(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[http(500, "InternalError"), page([task("a", "5")], "10")],
               watches=[http(429, "TooManyRequests", {"Retry-After": "5"}),
                        stream(api, hang=True)])
    informer = make_informer(kube, clock)
    calls = Calls(informer)
    async with running(informer):
        first = await parked(clock, at_most=10)
        assert 0.8 <= first < 1.6 and not informer.has_synced
        clock.advance(first + 0.01)
        await informer.wait_synced()

        throttled = await parked(clock, at_least=5, at_most=5)  # Retry-After beats 1.6..3.2 s
        assert throttled == 5
        assert len(api.requests("watch")) == 1
        clock.advance(5)
        rewatch = await api.until("watch", 2)

    assert rewatch["resourceVersion"] == "10"
    assert len(api.requests("list")) == 2, "429 on a watch re-watches; it does not relist"
    assert calls.log == [("add", "a", "5")]


async def test_a_permanent_watch_error_backs_off_then_relists(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([task("a", "5")], "10"), page([task("a", "5")], "11")],
               watches=[http(403, "Forbidden"), stream(api, hang=True)])
    informer = make_informer(kube, clock)
    async with running(informer):
        await informer.wait_synced()
        delay = await parked(clock, at_most=10)
        clock.advance(delay + 0.01)
        rewatch = await api.until("watch", 2)

    assert len(api.requests("list")) == 2
    assert rewatch["resourceVersion"] == "11"


async def test_a_watch_that_closes_at_once_with_nothing_is_backed_off(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([], "10")], watches=[stream(api), stream(api, hang=True)])
    informer = make_informer(kube, clock)
    async with running(informer):
        delay = await parked(clock, at_most=10)
        assert len(api.requests("watch")) == 1
        clock.advance(delay + 0.01)
        rewatch = await api.until("watch", 2)
    assert rewatch["resourceVersion"] == "10"


async def test_a_silent_watch_is_cancelled_by_the_watchdog_and_reopened(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    registry = CollectorRegistry()
    api.script(lists=[page([task("a", "5")], "10")],
               watches=[stream(api, bookmark("11"), hang=True), stream(api, hang=True)])
    informer = make_informer(kube, clock, metrics=PrometheusInformerMetrics(registry))
    async with running(informer):
        await api.until("watch", 1)
        await until(lambda: informer.last_sync_resource_version == "11")
        await parked(clock, at_least=SILENCE, at_most=SILENCE)
        clock.advance(SILENCE - 1)
        assert await parked(clock, at_least=1, at_most=1) == 1, "the watchdog waits on, 1 s to go"
        assert len(api.requests("watch")) == 1, "not silent long enough yet"
        clock.advance(1)
        rewatch = await api.until("watch", 2)
        await until(lambda: api.hangups == 1)  # the silent connection was closed

    assert rewatch["resourceVersion"] == "11"
    assert len(api.requests("list")) == 1
    assert registry.get_sample_value("informer_watch_restarts_total",
                                     {"informer": "tasks@ns", "reason": "silence"}) == 1


async def test_managed_fields_are_stripped_before_caching_and_delivery(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([task("a", "5")], "10")],
               watches=[stream(api, event("ADDED", task("b", "11")),
                               event("DELETED", task("a", "12")), hang=True)])
    informer = make_informer(kube, clock)
    calls = Calls(informer)
    async with running(informer):
        await until(lambda: len(calls.log) == 3)

    assert len(calls.objects) == 3
    for obj in [*calls.objects, *informer.store.list()]:
        assert "managedFields" not in obj["metadata"]
        assert obj["spec"] == {"skillName": "s", "actionName": "a"}


def job(name: str, rv: str, task_name: str) -> dict[str, Any]:
    # List items of built-in kinds carry no apiVersion/kind, as the real API server sends them.
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": rv,
                         "labels": {"fabric.dev/task": task_name}}}


def by_task(obj: dict[str, Any]) -> list[str]:
    label = obj["metadata"].get("labels", {}).get("fabric.dev/task")
    return [label] if label else []


async def test_index_lookups_follow_adds_updates_and_deletes(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    moved = {**job("j2", "12", "t2"), "apiVersion": "batch/v1", "kind": "Job"}
    api.script(lists=[page([job("j1", "5", "t1"), job("j2", "6", "t1"), job("j3", "7", "t2")],
                           "10")],
               watches=[stream(api, bookmark("11"), hang=True),
                        stream(api, event("MODIFIED", moved),
                               event("DELETED", job("j1", "13", "t1")), hang=True)])
    informer = make_informer(kube, clock, resource=JOBS, indexers={"by_task": by_task})

    def names(value: str) -> list[str]:
        return [o["metadata"]["name"] for o in informer.store.by_index("by_task", value)]

    async with running(informer):
        await until(lambda: informer.last_sync_resource_version == "11")
        assert api.seen[0][1] == "/apis/batch/v1/namespaces/ns/jobs"
        assert (names("t1"), names("t2")) == (["j1", "j2"], ["j3"])
        assert informer.store.get("ns/j1")["kind"] == "Job"
        assert informer.store.get("ns/j1")["apiVersion"] == "batch/v1"

        await parked(clock, at_least=SILENCE, at_most=SILENCE)
        clock.advance(SILENCE)  # force the second watch
        await until(lambda: informer.last_sync_resource_version == "13")

    assert (names("t1"), names("t2"), names("t3")) == ([], ["j2", "j3"], [])


async def test_resync_redelivers_every_cached_object_as_an_update_of_itself(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    api.script(lists=[page([task("a", "5"), task("b", "6")], "10")],
               watches=[stream(api, hang=True)])
    informer = make_informer(kube, clock, resync_period=60)
    calls = Calls(informer)
    async with running(informer):
        await parked(clock, at_least=60, at_most=60)
        assert calls.resyncs == []
        clock.advance(60)
        await until(lambda: len(calls.resyncs) == 2)

    assert sorted(calls.resyncs) == ["a", "b"]
    assert calls.log == [("add", "a", "5"), ("add", "b", "6")]  # no "real" updates


async def test_a_late_handler_sees_existing_objects_and_a_failing_handler_harms_no_one(
        api: FakeApi, kube: KubeClient, clock: FakeClock):
    registry = CollectorRegistry()
    api.script(lists=[page([task("a", "5")], "10")],
               watches=[stream(api, event("ADDED", task("b", "11")), hang=True)])
    informer = make_informer(kube, clock, metrics=PrometheusInformerMetrics(registry))

    def explode(obj: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    informer.add_handler(on_add=explode)
    early = Calls(informer)
    async with running(informer):
        await until(lambda: len(early.log) == 2)
        late = Calls(informer)

    assert early.log == [("add", "a", "5"), ("add", "b", "11")]
    assert sorted(late.log) == [("add", "a", "5"), ("add", "b", "11")]
    assert registry.get_sample_value("informer_handler_errors_total",
                                     {"informer": "tasks@ns"}) == 2


# -- the store on its own -----------------------------------------------------------------------


def test_store_replace_reports_adds_changes_and_deletions_and_keeps_indices_exact() -> None:
    store = Store()
    store.add_indexers({"by_task": by_task})
    store.replace([job("j1", "1", "t1"), job("j2", "2", "t1")], "2")
    deltas = store.replace([job("j2", "3", "t2"), {**job("n1", "4", "t3"), "metadata": {
        "name": "n1", "resourceVersion": "4", "labels": {"fabric.dev/task": "t3"}}}], "4")

    summary = [(old and old["metadata"]["name"], new and rv_of(new)) for old, new in deltas]
    assert summary == [("j2", "3"), (None, "4"), ("j1", None)]
    assert store.keys() == ["ns/j2", "n1"], "cluster-scoped objects are keyed by name alone"
    assert store.index_keys("by_task", "t1") == []
    assert store.index_keys("by_task", "t2") == ["ns/j2"]
    assert store.resource_version == "4"
    with pytest.raises(KeyError):
        store.by_index("no-such-index", "x")


def test_a_store_gives_back_what_was_cached_and_each_read_its_own_copy() -> None:
    """Objects are held encoded (store.py): every read decodes a fresh copy, equal to what was
    stored, so a reader changing what it got changes nothing in the cache."""
    store = Store()
    store.add_indexers({"by_phase": lambda obj: [obj["status"]["phase"]]})
    pod = {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "1"},
           "status": {"phase": "Running", "n": 1.5, "ok": True, "none": None, "text": "é \u2028 😀"}}
    store.upsert(copy.deepcopy(pod))
    first = store.get("ns/p")
    assert first == pod and store.list() == [pod] and store.by_index("by_phase", "Running") == [pod]
    first["status"]["phase"] = "Failed"
    assert store.get("ns/p") == pod and store.index_keys("by_phase", "Failed") == []
    old, new = store.upsert({**pod, "status": {"phase": "Succeeded"}})
    assert old == pod and store.index_keys("by_phase", "Running") == [] and store.index_keys("by_phase", "Succeeded") == ["ns/p"]
    assert store.delete("ns/p") == new and len(store) == 0
