"""Two gateway processes on one PostgreSQL and one blob directory (issue 16, "horizontal
gateway"): any replica takes any request, a replica killed (SIGKILL) mid-upload hands over, and a
follow on a replica that received none of the uploads sees every byte.

The client is the operator's real ``GatewaySink`` (``controller.logs.sinks``) driven by a small
loop that does what the operator's shipper does with its answers: an ``OffsetMismatch`` resumes at
the size it carries, a ``SinkUnavailable`` (a verdict that says retry: transport errors, 5xx,
``upload_in_progress``) asks ``state`` and resumes there, anything else fails the test. The
uploads reach the replicas through a round-robin HTTP proxy (``RoundRobinProxy``), as through a
Service; the proxy answers 502 for a replica that does not answer and stops sending to it, as
endpoints drop a pod that died. Not the whole operator against a devcluster: see the report of
the branch for why.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections import Counter
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pgserver import create_database, drop_database, postgres_server  # noqa: F401 - session fixture
from test_gateway_shutdown import TOKEN, GatewayProcess, source_log, until

from controller.logs.cursor import Cursor
from controller.logs.errors import OffsetMismatch, SinkUnavailable
from controller.logs.sinks import GatewaySink
from gateway.ledger import SHARED_STORE_NEEDED, SQLITE_SINGLE_REPLICA

KB, MB = 1 << 10, 1 << 20
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class RoundRobinProxy:
    """An HTTP proxy on a free loopback port sending each request to the next live backend.
    ``routed`` counts requests per backend; a backend that fails to answer gets a 502 (the
    client retries) and is taken out of the rotation."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.alive = [True] * len(backends)
        self.routed: Counter[int] = Counter()
        #: Status codes answered to the client, the proxy's own 502s included.
        self.statuses: Counter[int] = Counter()
        #: Index of the backend each PUT of an execution's log went to, in order.
        self.uploads: dict[str, list[int]] = {}
        self._next = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> "RoundRobinProxy":
        self._http = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _pick(self) -> int:
        for _ in self.backends:
            i, self._next = self._next, (self._next + 1) % len(self.backends)
            if self.alive[i]:
                return i
        raise web.HTTPBadGateway(text="no live backend")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        i = self._pick()
        self.routed[i] += 1
        if request.method == "PUT" and request.path.endswith("/logs"):
            self.uploads.setdefault(request.path.split("/")[3], []).append(i)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_any():
                yield chunk

        try:
            async with self._http.request(
                request.method, self.backends[i] + request.path_qs, headers=headers,
                data=body() if request.can_read_body else None,
            ) as upstream:
                self.statuses[upstream.status] += 1
                response = web.StreamResponse(status=upstream.status)
                for k, v in upstream.headers.items():
                    if k.lower() not in _HOP:
                        response.headers[k] = v
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
            self.alive[i] = False  # as endpoints drop a dead pod
            self.statuses[502] += 1
            raise web.HTTPBadGateway(text=f"backend {i} did not answer") from None


class Shipper:
    """What the operator's shipper does with a ``GatewaySink``'s answers, for one known log."""

    def __init__(self, sink: GatewaySink, execution: str, source: bytes, batch: int) -> None:
        self.sink = sink
        self.execution = execution
        self.source = source
        self.batch = batch
        self.retried: Counter[str] = Counter()

    def cursor_at(self, end: int) -> Cursor:
        return Cursor("2026-01-01T10:00:00.000000001Z", 1 + self.source.count(b"\n", 0, end), end)

    async def resume_offset(self) -> int:
        while True:
            try:
                state = await self.sink.state(self.execution)
            except SinkUnavailable as exc:
                self.retried[exc.verdict.reason] += 1
                await asyncio.sleep(0.05)  # the shipper's backoff, shortened
                continue
            assert state.cursor is None or state.cursor.size <= state.size
            return state.size

    async def append(self, offset: int, body: bytes | AsyncIterator[bytes], end: int) -> int | None:
        """The new size, or None after a retried failure (resume from ``state``)."""
        try:
            return await self.sink.append(self.execution, offset, body, self.cursor_at(end))
        except OffsetMismatch as exc:
            self.retried["offset-mismatch"] += 1
            return exc.size
        except SinkUnavailable as exc:  # a SinkRejected (not retried) fails the test
            self.retried[exc.verdict.reason] += 1
            await asyncio.sleep(0.05)
            return None

    async def ship(self, offset: int = 0, stop: int | None = None) -> int:
        """Upload from ``offset``; up to ``stop`` (then answer where it stands), else all of it
        and finalize."""
        end_at = len(self.source) if stop is None else stop
        while offset < end_at:
            end = min(offset + self.batch, end_at)
            size = await self.append(offset, self.source[offset:end], end)
            offset = size if size is not None else await self.resume_offset()
        if stop is not None:
            return offset
        digest = await self.sink.finalize(self.execution, len(self.source), hashlib.sha256(self.source).hexdigest())
        assert digest == hashlib.sha256(self.source).hexdigest()
        return offset


@pytest.fixture
async def database(postgres_server: str) -> AsyncIterator[str]:  # noqa: F811
    url = await create_database(postgres_server)
    yield url
    await drop_database(url)


@pytest.fixture
async def replicas(database: str, tmp_path: Path) -> AsyncIterator[list[GatewayProcess]]:
    blobs = tmp_path / "shared-blobs"
    started: list[GatewayProcess] = []
    try:
        for i in range(2):
            gw = GatewayProcess(
                tmp_path / f"replica-{i}", database_url=database, blob_dir=blobs,
                args=("--replicas", "2", "--fsync", "false"),
            )
            (tmp_path / f"replica-{i}").mkdir()
            started.append(await gw.start())
        yield started
    finally:
        for gw in started:
            await gw.kill()


async def _raw(http: aiohttp.ClientSession, base: str, execution: str) -> bytes:
    async with http.get(f"{base}/v1/tasks/{execution}/logs/raw") as response:
        assert response.status == 200, await response.text()
        return await response.read()


async def test_uploads_alternate_between_replicas_and_survive_a_sigkill_mid_upload(
    replicas: list[GatewayProcess], tmp_path: Path
) -> None:
    assert all(gw.events(SHARED_STORE_NEEDED) for gw in replicas)
    proxy = await RoundRobinProxy([gw.url for gw in replicas]).start()
    try:
        async with aiohttp.ClientSession() as http:
            sink = GatewaySink(proxy.url, TOKEN, http)
            logs = {f"ex-{i}": source_log((2 + i) * MB + 123 * i) for i in range(4)}
            shippers = [Shipper(sink, ex, data, 256 * KB) for ex, data in logs.items()]
            # First halves, one log after the other, so that each log's PUTs strictly alternate
            # between the two replicas (the rest, after the kill, runs concurrently).
            halfway = [await s.ship(0, len(s.source) // 2) for s in shippers]
            assert all(set(proxy.uploads[s.execution]) == {0, 1} for s in shippers), proxy.uploads
            victim_log = source_log(12 * MB)

            # The victim: a streamed PUT that stops after 5 MiB until the test has killed the
            # replica holding it.
            victim = Shipper(sink, "ex-victim", victim_log, 4 * MB)
            assert await victim.append(0, victim_log[: 1 * MB], 1 * MB) == 1 * MB
            release = asyncio.Event()

            async def stalled() -> AsyncIterator[bytes]:
                for pos in range(1 * MB, 6 * MB, 256 * KB):
                    yield victim_log[pos:pos + 256 * KB]
                await release.wait()
                yield victim_log[6 * MB:7 * MB]

            streaming = asyncio.create_task(victim.append(1 * MB, stalled(), 7 * MB))
            log_file = tmp_path / "shared-blobs/tasks/ex-victim/log.txt"
            await until(lambda: _grown(log_file, 3 * MB), "the victim's replica wrote past the acknowledged size")
            holder = proxy.uploads["ex-victim"][-1]
            replicas[holder].proc.send_signal(signal.SIGKILL)
            await replicas[holder].proc.wait()
            release.set()
            assert await streaming is None  # refused as retryable (no answer, or the proxy's 502)

            await asyncio.gather(
                victim.ship(await victim.resume_offset()), *(s.ship(at) for s, at in zip(shippers, halfway))
            )

            survivor = replicas[1 - holder].url
            for shipper in [victim, *shippers]:
                assert await _raw(http, survivor, shipper.execution) == shipper.source, shipper.execution
                state = await sink.state(shipper.execution)
                assert state.complete and state.size == len(shipper.source)
        retried = sum((s.retried for s in [victim, *shippers]), Counter())
        # Only answers the operator's sink retries, and the kill was noticed at least once.
        assert set(retried) <= {"unreachable", "server-error", "offset-mismatch"}, retried
        assert retried["unreachable"] + retried["server-error"] >= 1
        assert log_file.stat().st_size == len(victim_log)
    finally:
        await proxy.close()


async def _grown(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size > size


async def test_follow_on_a_replica_that_received_no_upload_sees_every_byte(replicas: list[GatewayProcess]) -> None:
    writer, reader = replicas
    data = source_log(3 * MB + 17)
    async with aiohttp.ClientSession() as http:
        sink = GatewaySink(writer.url, TOKEN, http)
        shipper = Shipper(sink, "ex-follow", data, 512 * KB)
        assert await shipper.append(0, data[: 100 * KB], 100 * KB) == 100 * KB
        async with http.get(f"{reader.url}/v1/tasks/ex-follow/logs/follow") as followed:
            assert followed.status == 200
            first = await followed.content.readexactly(100 * KB)  # what was there
            await shipper.ship(100 * KB)  # the rest, sealed, all through the writer
            rest = await followed.content.read()  # ends once the reader sees the log sealed
        assert first + rest == data
        assert not shipper.retried


async def test_a_retry_on_another_replica_waits_for_the_upload_still_running(replicas: list[GatewayProcess]) -> None:
    """The race a second replica used to lose: the first PUT still streams into replica a (the
    shipper gave up on it) when its retry reaches replica b. b must not append beside it: it
    answers 503 ``upload_in_progress`` (retried) while a holds the execution, and afterwards the
    offset says where to resume. One log, never interleaved."""
    a, b = replicas
    data = source_log(4 * MB)
    async with aiohttp.ClientSession() as http:
        via_a = Shipper(GatewaySink(a.url, TOKEN, http), "ex-race", data, MB)
        via_b = Shipper(GatewaySink(b.url, TOKEN, http), "ex-race", data, MB)
        release = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield data[: MB // 2]
            await release.wait()
            yield data[MB // 2: MB]

        first = asyncio.create_task(via_a.append(0, stalled(), MB))
        await until(lambda: _received(http, a.url, MB // 2), "replica a took the first half MiB")
        assert await via_b.append(0, data[:MB], MB) is None
        assert via_b.retried == Counter({"server-error": 1})  # 503 upload_in_progress, retried
        release.set()
        assert await first == MB
        assert await via_b.append(0, data[:MB], MB) == MB  # offset mismatch: resume at a's size
        await via_b.ship(MB)
        assert await _raw(http, a.url, "ex-race") == data


async def _received(http: aiohttp.ClientSession, url: str, size: int) -> bool:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return any(line.startswith("gateway_log_bytes_received_total ") and float(line.split()[1]) >= size
               for line in text.splitlines())


async def test_sqlite_says_it_is_single_replica_when_more_are_declared(tmp_path: Path) -> None:
    gw = await GatewayProcess(tmp_path, args=("--replicas", "2")).start()
    try:
        [warning] = gw.events(SQLITE_SINGLE_REPLICA)
        assert warning["level"] == "warning" and warning["replicas"] == 2
    finally:
        await gw.kill()
    alone = await GatewayProcess(tmp_path / "alone").start()
    try:
        assert not alone.events(SQLITE_SINGLE_REPLICA) and not alone.events(SHARED_STORE_NEEDED)
    finally:
        await alone.kill()
