"""The ``LogSink`` contract, run against ``DirectorySink`` and ``GatewaySink`` (talking to a real
aiohttp server that implements the gateway's internal log contract), plus what is particular to
each."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest
from gateway_harness import start_gateway_app

from controller.logs.cursor import Cursor
from controller.logs.errors import ChecksumMismatch, OffsetMismatch, SinkRejected, SinkUnavailable
from controller.logs.sinks import DirectorySink, GatewaySink, NullSink
from logs_fakes import FakeGateway

C1 = Cursor("2025-06-01T10:00:00.000000001Z", 1, 6)
C2 = Cursor("2025-06-01T10:00:01.000000000Z", 2, 12)


@pytest.fixture
async def gateway():
    fake = FakeGateway()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(params=["directory", "gateway-fake", "gateway-app"])
async def sink(request, tmp_path, gateway, session):
    """Each sink: the directory one, GatewaySink against the contract's fake, and GatewaySink
    against the real gateway app (SQLite), which implements the same internal API."""
    if request.param == "directory":
        yield DirectorySink(tmp_path, fsync=True)
    elif request.param == "gateway-fake":
        yield GatewaySink(gateway.url, gateway.token, session)
    else:
        running = await start_gateway_app(tmp_path)
        try:
            yield GatewaySink(running.internal_url, "gateway-token", session)
        finally:
            await running.stop()


async def pieces(*parts: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise ConnectionResetError("the source broke mid-body")


async def test_a_new_log_is_empty(sink):
    state = await sink.state("job-1")
    assert (state.size, state.cursor, state.complete, state.retained) == (0, None, False, False)


async def test_append_stores_bytes_and_cursor_together(sink):
    assert await sink.append("job-1", 0, b"hello\n", C1) == 6
    assert await sink.append("job-1", 6, pieces(b"wor", b"ld\n", b"par"), C2) == 15
    state = await sink.state("job-1")
    assert (state.size, state.cursor) == (15, C2)  # 3 bytes past the cursor: an open line


async def test_no_cursor_keeps_the_stored_one(sink):
    await sink.append("job-1", 0, b"hello\n", C1)
    assert await sink.append("job-1", 6, b"partial line", None) == 18
    assert (await sink.state("job-1")).cursor == C1


async def test_an_append_at_the_wrong_offset_says_what_is_held(sink):
    await sink.append("job-1", 0, b"hello\n", C1)
    for offset in (0, 5, 7):
        with pytest.raises(OffsetMismatch) as caught:
            await sink.append("job-1", offset, b"x", None)
        assert caught.value.size == 6
    assert (await sink.state("job-1")).size == 6


async def test_a_body_that_breaks_keeps_the_old_cursor(sink):
    await sink.append("job-1", 0, b"hello\n", C1)
    with pytest.raises((ConnectionResetError, SinkUnavailable)):
        await sink.append("job-1", 6, pieces(b"world\n", fail=True), C2)
    state = await sink.state("job-1")
    assert state.cursor == C1
    assert 6 <= state.size <= 12  # whatever arrived is kept; the shipper skips it on resume


async def test_finalize_verifies_and_seals(sink):
    data = b"hello\nworld\n"
    await sink.append("job-1", 0, data, C2)
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(ChecksumMismatch):
        await sink.finalize("job-1", 12, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(OffsetMismatch) as caught:
        await sink.finalize("job-1", 11, digest)
    assert caught.value.size == 12
    assert not (await sink.state("job-1")).complete
    assert await sink.finalize("job-1", 12, digest) == digest
    state = await sink.state("job-1")
    assert state.complete and state.size == 12
    with pytest.raises((SinkRejected, OffsetMismatch)):
        await sink.append("job-1", 12, b"more", None)


async def test_finalize_without_a_digest_uses_the_sinks_own(sink):
    await sink.append("job-1", 0, b"resumed by another process\n", None)
    assert await sink.finalize("job-1", 27, None) == hashlib.sha256(b"resumed by another process\n").hexdigest()


async def test_an_empty_log_can_be_finalised(sink):
    assert await sink.finalize("job-empty", 0, hashlib.sha256(b"").hexdigest()) == hashlib.sha256(b"").hexdigest()
    assert (await sink.state("job-empty")).complete


@pytest.mark.parametrize("name", [pytest.param("../etc", id="traversal"), pytest.param("Job", id="uppercase"),
                                  pytest.param("a/b", id="slash"), pytest.param("", id="empty")])
async def test_bad_execution_names_are_refused(sink, name):
    with pytest.raises(SinkRejected):
        await sink.state(name)
    with pytest.raises(SinkRejected):
        await sink.append(name, 0, b"x", None)


async def test_executions_are_independent(sink):
    await sink.append("job-1", 0, b"one\n", None)
    await sink.append("job-2", 0, b"two two\n", None)
    assert [(await sink.state(n)).size for n in ("job-1", "job-2")] == [4, 8]


# -- DirectorySink ---------------------------------------------------------------------------


async def test_directory_layout_and_checksum_file(tmp_path):
    sink = DirectorySink(tmp_path)
    await sink.append("job-1", 0, b"hello\nworld\n", C2)
    digest = await sink.finalize("job-1", 12, None)
    folder = tmp_path / "tasks" / "job-1"
    assert (folder / "log.txt").read_bytes() == b"hello\nworld\n"
    assert (folder / "log.cursor").read_text() == str(C2)
    assert sorted(p.name for p in folder.iterdir()) == ["log.cursor", "log.sha256", "log.txt"]
    assert (folder / "log.sha256").read_text() == f"{digest}  log.txt\n"
    subprocess.run(["sha256sum", "-c", "log.sha256"], cwd=folder, check=True, capture_output=True)


async def test_directory_an_empty_log_is_an_empty_file(tmp_path):
    """A container that wrote nothing: sealed at 0 without any append, it is a file like any log."""
    sink = DirectorySink(tmp_path)
    await sink.finalize("job-1", 0, None)
    folder = tmp_path / "tasks" / "job-1"
    assert (folder / "log.txt").read_bytes() == b""
    subprocess.run(["sha256sum", "-c", "log.sha256"], cwd=folder, check=True, capture_output=True)


async def test_directory_crash_between_bytes_and_cursor(tmp_path):
    sink = DirectorySink(tmp_path)
    await sink.append("job-1", 0, b"hello\n", C1)
    with (tmp_path / "tasks" / "job-1" / "log.txt").open("ab") as f:
        f.write(b"world\n")  # the data went out, the process died before the cursor
    state = await sink.state("job-1")
    assert (state.size, state.cursor) == (12, C1)


async def test_directory_cursor_past_the_data_is_corruption(tmp_path):
    sink = DirectorySink(tmp_path)
    await sink.append("job-1", 0, b"hello\nworld\n", C2)
    (tmp_path / "tasks" / "job-1" / "log.txt").write_bytes(b"hel")
    with pytest.raises(SinkRejected):
        await sink.state("job-1")


# -- GatewaySink -----------------------------------------------------------------------------


async def test_gateway_sends_the_token_and_the_cursor(gateway, session):
    sink = GatewaySink(gateway.url, "wrong", session)
    with pytest.raises(SinkUnavailable) as caught:  # a token rotation: retried, for a bounded time
        await sink.state("job-1")
    assert caught.value.verdict.reason == "unauthorized" and caught.value.verdict.give_up_after is not None
    sink = GatewaySink(gateway.url + "/", gateway.token, session)
    await sink.append("job-1", 0, b"hello\n", C1)
    assert gateway.logs["job-1"].cursor == str(C1)


async def test_gateway_transient_failures_are_unavailable_with_retry_after(gateway, session):
    sink = GatewaySink(gateway.url, gateway.token, session)
    gateway.fail_next = [503]
    with pytest.raises(SinkUnavailable) as caught:
        await sink.append("job-1", 0, b"x", None)
    assert caught.value.retry_after == 0
    gateway.fail_next = [400]
    with pytest.raises(SinkRejected):
        await sink.append("job-1", 0, b"x", None)
    assert await sink.append("job-1", 0, b"x", None) == 1


async def test_gateway_down_is_unavailable(session):
    sink = GatewaySink("http://127.0.0.1:9", "t", session)  # discard port: connection refused
    with pytest.raises(SinkUnavailable):
        await sink.state("job-1")


async def test_null_sink_retains_and_takes_nothing():
    sink = NullSink()
    assert (await sink.state("job-1")).retained
    with pytest.raises(SinkRejected):
        await sink.append("job-1", 0, b"x", None)
