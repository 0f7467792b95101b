"""Graceful shutdown of the real gateway process (``python -m gateway``, SQLite + blob directory):
SIGTERM during a slow, never-ending upload ends the upload at a consistent point, answers it so
the operator's sink retries, ends a follower, and the process exits; a second gateway on the same
database and directory then takes the resume at the stored size and the finished log is
byte-identical to the source.

The gateway under test gets an hour of ``--shutdown-timeout``, so a gateway that waited for its
uploads to end would not exit for an hour: ``EXIT_BOUND`` is a failure bound, generous on a loaded
machine, not a timing assertion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from gateway_harness import start_gateway_app

from controller.logs.cursor import Cursor
from controller.logs.errors import SinkUnavailable
from controller.logs.sinks import GatewaySink

TOKEN = "shutdown-test-token"
REPO = Path(__file__).resolve().parents[2]
EXIT_BOUND = 60.0
"""Seconds the test waits for the process to exit after SIGTERM (or to listen) before failing."""
PATIENT = 3600.0
"""``--shutdown-timeout`` of the gateway under test: far beyond ``EXIT_BOUND``."""
MB = 1 << 20
C1 = Cursor("2026-01-01T10:00:00.000000001Z", 40, MB)
C2 = Cursor("2026-01-01T10:00:09.000000000Z", 400, 10 * MB)


def source_log(size: int) -> bytes:
    """``size`` bytes of numbered lines (whole lines except perhaps the last)."""
    out = bytearray()
    n = 0
    while len(out) < size:
        out += f"2026-01-01T10:00:00.{n:09d}Z stdout F line {n} {'x' * (n % 97)}\n".encode()
        n += 1
    return bytes(out[:size])


class GatewayProcess:
    """One ``python -m gateway`` on a free loopback port; its JSON log lines are collected (the
    pipe is drained all the time, so the process never blocks on it)."""

    def __init__(self, root: Path, shutdown_timeout: float = PATIENT, *, database_url: str | None = None,
                 blob_dir: Path | None = None, args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.shutdown_timeout = shutdown_timeout
        #: Default: SQLite and blobs under ``root``; replicas share a PostgreSQL URL and a blob dir.
        self.database_url = database_url or f"sqlite:///{root / 'tasks.db'}"
        self.blob_dir = blob_dir or root / "blobs"
        self.args = args
        self.lines: list[dict] = []
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self) -> "GatewayProcess":
        env = dict(os.environ, FABRIC_GATEWAY_INTERNAL_TOKEN=TOKEN)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", "0",
            "--database-url", self.database_url, "--blob-dir", str(self.blob_dir),
            "--shutdown-timeout", str(self.shutdown_timeout), *self.args,
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(listening))
        self.url = await asyncio.wait_for(listening, EXIT_BOUND)
        return self

    async def _read(self, listening: asyncio.Future) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.decode(errors="replace").rstrip()}
            self.lines.append(line)
            if line.get("event") == "gateway listening" and not listening.done():
                listening.set_result(line["public"])
        if not listening.done():
            listening.set_exception(AssertionError(f"gateway exited before listening: {self.lines[-20:]}"))

    def events(self, name: str) -> list[dict]:
        return [line for line in self.lines if line.get("event") == name]

    async def terminate(self) -> int:
        """SIGTERM, then the exit code; fails the test if the process outlives ``EXIT_BOUND``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), EXIT_BOUND)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"gateway still running {EXIT_BOUND}s after SIGTERM: {self.lines[-20:]}") from None
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


@pytest.fixture
async def gateways(tmp_path: Path) -> AsyncIterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        await gateway.kill()


async def received_bytes(http: aiohttp.ClientSession, url: str) -> float:
    """The gateway's ``gateway_log_bytes_received_total``: bytes its upload handlers took in."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("gateway_log_bytes_received_total "):
            return float(line.split()[1])
    return 0.0


async def until(probe, message: str) -> None:
    """Wait for ``probe()`` (a look at the gateway's state) to hold; fail after ``EXIT_BOUND``."""
    try:
        async with asyncio.timeout(EXIT_BOUND):
            while not await probe():
                await asyncio.sleep(0.05)  # the interval between two looks
    except TimeoutError:
        raise AssertionError(f"not reached in {EXIT_BOUND}s: {message}") from None


async def test_sigterm_mid_upload_stores_a_consistent_prefix_and_exits_and_the_next_gateway_takes_the_resume(
        tmp_path: Path, gateways: list[GatewayProcess]) -> None:
    data = source_log(10 * MB)
    first = await GatewayProcess(tmp_path).start()
    gateways.append(first)
    sent_before_stall = 3 * MB  # past the blob store's 2 MiB batch: some of it is on disk
    stall = asyncio.Event()  # never set: the upload hangs like a followed pod log that runs on

    async def slow_body() -> AsyncIterator[bytes]:
        for at in range(C1.size, C1.size + sent_before_stall, 64 << 10):
            yield data[at:at + (64 << 10)]
        await stall.wait()
        yield data[C1.size + sent_before_stall:]

    async with aiohttp.ClientSession() as http:
        sink = GatewaySink(first.url, TOKEN, http)
        assert await sink.append("exec-1", 0, data[:C1.size], C1) == C1.size
        upload = asyncio.create_task(sink.append("exec-1", C1.size, slow_body(), C2))
        follow = await http.get(f"{first.url}/v1/tasks/exec-1/logs/follow")
        assert follow.status == 200
        followed = bytearray(await follow.content.readexactly(C1.size))
        async def stalled() -> bool:
            return await received_bytes(http, first.url) >= C1.size + sent_before_stall

        await until(stalled, "the stalled upload's first bytes reached the gateway")

        assert await first.terminate() == 0

        with pytest.raises(SinkUnavailable, match="503"):  # what the shipper retries on
            await upload
        async for chunk in follow.content.iter_any():  # the follow ends cleanly, not cut
            followed += chunk
        follow.release()
        [cut] = first.events("log upload cut by shutdown")
        assert first.events("gateway stopped")

        second = await GatewayProcess(tmp_path).start()
        gateways.append(second)
        sink = GatewaySink(second.url, TOKEN, http)
        state = await sink.state("exec-1")
        # The stored bytes are what the first gateway said it stored, a prefix of the source; the
        # cursor is the last complete upload's (the cut body's cursor was never stored).
        assert state.size == cut["size"]
        assert C1.size < state.size <= C1.size + sent_before_stall
        assert state.cursor == C1
        assert not state.complete
        assert bytes(followed) == data[:len(followed)]
        async with http.get(f"{second.url}/v1/tasks/exec-1/logs/raw") as response:
            assert response.status == 200
            assert await response.read() == data[:state.size]

        # The resume at the stored size (the shipper skips what is stored past its cursor).
        assert await sink.append("exec-1", state.size, data[state.size:], C2) == len(data)
        digest = hashlib.sha256(data).hexdigest()
        assert await sink.finalize("exec-1", len(data), digest) == digest
        async with http.get(f"{second.url}/v1/tasks/exec-1/logs/raw") as response:
            assert await response.read() == data
        assert await second.terminate() == 0


async def test_sigterm_with_nothing_in_flight_exits_cleanly(tmp_path: Path, gateways: list[GatewayProcess]) -> None:
    gateway = await GatewayProcess(tmp_path).start()
    gateways.append(gateway)
    assert await gateway.terminate() == 0
    assert gateway.events("gateway stopped")
    assert not gateway.events("log upload cut by shutdown")


async def test_a_second_signal_does_not_cut_a_shutdown_short(tmp_path: Path, gateways: list[GatewayProcess]) -> None:
    """A download to a client that reads nothing keeps the shutdown busy for half of
    ``--shutdown-timeout``; a second SIGTERM then (``./dev``: Ctrl-C, then its own SIGTERM) must
    not kill the process: it still closes its stores and exits 0."""
    gateway = await GatewayProcess(tmp_path, shutdown_timeout=8).start()
    gateways.append(gateway)
    async with aiohttp.ClientSession() as http:
        sink = GatewaySink(gateway.url, TOKEN, http)
        assert await sink.append("exec-3", 0, source_log(8 * MB), None) == 8 * MB
        stalled = await http.get(f"{gateway.url}/v1/tasks/exec-3/logs/raw")  # and never read
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        await until(lambda: _has(gateway, "gateway shutting down"), "the shutdown began")
        assert await gateway.terminate() == 0
        stalled.release()
    assert gateway.events("gateway stopped")


async def _has(gateway: GatewayProcess, event: str) -> bool:
    return bool(gateway.events(event))


async def test_an_upload_arriving_while_draining_is_refused_at_once_with_retry_after(tmp_path: Path) -> None:
    running = await start_gateway_app(tmp_path)
    try:
        running.state.draining.set()
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{running.internal_url}/internal/tasks/exec-2/logs", params={"offset": "0"},
                                data=b"line\n", headers={"Authorization": "Bearer gateway-token"}) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert (await response.json())["error"]["code"] == "shutting_down"
            assert await running.state.blobs.stat("exec-2") is None
    finally:
        await running.stop()
