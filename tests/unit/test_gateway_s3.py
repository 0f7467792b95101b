"""The S3 blob store (``gateway.blobs_s3``) against a real S3-compatible server (SeaweedFS, started
by ``tools/s3server.sh``): what only S3 has to get right. The shared behaviour (uploads, rows,
ranges, follow) runs against S3 in ``test_gateway_api.py`` and ``test_gateway_follow.py``.

- a dropped upload keeps the parts that were stored, and a retry resumes exactly there;
- a crash between a part's index object and the part (an orphan) or after a part: the stored size
  is the sum of the parts, the next append resumes the index from the last part's state;
- small requests merge into few parts while the log grows; finalize seals the parts, copying none;
- finalize refuses a wrong checksum and leaves the log appendable;
- a tail or a page of a ~100 MB log fetches a bounded number of bytes, growing or sealed;
- a reader whose parts are merged away under it lists again and continues;
- retention removes every object; the lifecycle rule is applied at startup.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import uuid
from typing import Any, AsyncIterator

import aiohttp
import pytest
import structlog
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from s3server import S3Server, s3_server  # noqa: F401 - the session fixture

from gateway.blobs_s3 import MIN_PART, S3BlobStore, parse_s3_url
from gateway.errors import ChecksumMismatch, Conflict, Unavailable
from gateway.logrows import RowQuery, query_rows
from gateway.server import start
from gateway.settings import AuthSettings, HttpSettings, RetentionSettings, S3Settings, Settings, StorageSettings

TOKEN = "s3-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(server: S3Server, bucket: str, **kw: Any) -> S3Settings:
    return S3Settings(
        url=f"s3://{bucket}/gw", endpoint_url=server.endpoint,
        access_key_id=server.access_key_id, secret_access_key=server.secret_access_key, **kw,
    )


@pytest.fixture
async def bucket(s3_server: S3Server) -> str:  # noqa: F811
    return await s3_server.new_bucket()


@pytest.fixture
async def store(s3_server: S3Server, bucket: str) -> AsyncIterator[S3BlobStore]:  # noqa: F811
    st = S3BlobStore(settings_for(s3_server, bucket, part_bytes=MIN_PART), lifecycle_days=37)
    await st.open()
    yield st
    await st.close()


async def keys(server: S3Server, bucket: str, execution: str) -> list[str]:
    async with server.client() as s3:
        page = await s3.list_objects_v2(Bucket=bucket, Prefix=f"gw/tasks/{execution}/")
        return sorted(o["Key"].split(f"{execution}/", 1)[1] for o in page.get("Contents", []))


def lines(first: int, count: int) -> bytes:
    return b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(first, first + count))


async def put_log(store: S3BlobStore, execution: str, data: bytes, *, chunk: int = 1 << 20, ts: int = 1000) -> int:
    async with store.append(execution) as log:
        for i in range(0, len(data), chunk):
            await log.write(data[i : i + chunk], ts + i // chunk)
        return await log.sync()


async def rows_of(store: S3BlobStore, execution: str, **q: Any) -> Any:
    return await store.rows(execution, RowQuery(**q), max_row_bytes=64 << 10, max_response_bytes=8 << 20)


def test_s3_urls() -> None:
    assert parse_s3_url("s3://logs") == ("logs", "")
    assert parse_s3_url("s3://logs/a/b/") == ("logs", "a/b/")
    for bad in ("http://x/y", "s3:///p", "s3://b?x=1"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


async def test_small_requests_merge_into_few_parts_and_finalize_copies_nothing(
    store: S3BlobStore, s3_server: S3Server, bucket: str  # noqa: F811
) -> None:
    # Large parts, then small requests (each one stored as a part, merged into the trailing small
    # parts by the binary-counter rule of blobs_s3_parts.merge_run).
    data = lines(0, 260_000)  # ~15 MB
    big = 11 << 20
    assert await put_log(store, "comp-1", data[:big]) == big  # parts of 5 MiB, 5 MiB and 1 MiB
    pos = big
    for step in (100, 70_000, 1, 2 << 20, 3_000):
        async with store.append("comp-1") as log:
            await log.write(data[pos : pos + step], 5000)
            pos = await log.sync()
    assert await put_log(store, "comp-1", data[pos:]) == len(data)
    stat = await store.finalize("comp-1", len(data), hashlib.sha256(data).hexdigest())
    assert stat.sealed and stat.size == len(data)
    names = await keys(s3_server, bucket, "comp-1")
    # 5 MiB, 5 MiB, 1 MiB, then: 100 B stays alone (1 MiB > 100 B), 70 kB absorbs it, 1 B stays
    # alone, 2 MiB absorbs 1 B, 70 kB and the 1 MiB tail, 3 kB stays alone, the last ~70 kB absorbs
    # it: 4 parts where each request's part would be 9; finalize copies none of them.
    sizes = [int(n.split("-")[1]) - int(n.split("/")[1].split("-")[0]) for n in names if n.startswith("parts/")]
    assert sizes[:2] == [5 << 20, 5 << 20] and len(sizes) == 4, sizes
    assert sizes[2] == (1 << 20) + 70_000 + 100 + 1 + (2 << 20) and sum(sizes) == len(data)
    assert "log.done" in names and "log.started" not in names and "log.txt" not in names
    got = b"".join([c async for c in store.read_raw("comp-1", 0, len(data))])
    assert got == data
    page = await rows_of(store, "comp-1", tail=3)
    assert [r.text for r in page.rows] == [lines(i, 1)[:-1].decode() for i in range(259_997, 260_000)]
    assert page.total_lines == 260_000
    # Idempotent; more bytes are refused.
    assert (await store.finalize("comp-1", len(data), None)).sha256 == stat.sha256
    with pytest.raises(Conflict) as refused:
        async with store.append("comp-1"):
            pass
    assert refused.value.code == "log_finalized" and refused.value.extra["size"] == len(data)


async def test_finalize_checksum_mismatch_changes_nothing(store: S3BlobStore, s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    data = lines(0, 1000)
    await put_log(store, "sum-1", data)
    with pytest.raises(ChecksumMismatch) as wrong:
        await store.finalize("sum-1", len(data), "0" * 64)
    assert wrong.value.code == "checksum_mismatch" and wrong.value.extra["sha256"] == hashlib.sha256(data).hexdigest()
    with pytest.raises(ChecksumMismatch) as short:
        await store.finalize("sum-1", len(data) - 1, None)
    assert short.value.code == "size_mismatch" and short.value.extra["size"] == len(data)
    assert "log.done" not in await keys(s3_server, bucket, "sum-1")
    more = lines(1000, 10)
    async with store.append("sum-1") as log:  # still open for bytes
        await log.write(more, 2000)
    assert (await store.finalize("sum-1", len(data) + len(more), hashlib.sha256(data + more).hexdigest())).sealed


async def test_crash_between_and_after_parts_resumes_exactly(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    settings = settings_for(s3_server, bucket, part_bytes=MIN_PART)
    data = lines(0, 400_000)  # ~23 MB
    first = S3BlobStore(settings)
    await first.open()
    stored = await put_log(first, "crash-1", data[: 16 << 20])
    await first.close()  # the process is gone: its running hash too
    names = await keys(s3_server, bucket, "crash-1")
    parts = sorted(n for n in names if n.startswith("parts/"))
    assert len(parts) == 4 and stored == 16 << 20
    # A crash after the last part's index object was written but before the part: delete the part.
    last = int(parts[-1].split("/")[1].split("-")[0])
    async with s3_server.client() as s3:
        await s3.delete_object(Bucket=bucket, Key=f"gw/tasks/crash-1/{parts[-1]}")
    second = S3BlobStore(settings)
    await second.open()
    try:
        stat = await second.stat("crash-1")
        assert stat is not None and stat.size == last  # the sum of the parts that are there
        assert b"".join([c async for c in second.read_raw("crash-1", 0, last)]) == data[:last]
        page = await rows_of(second, "crash-1", tail=2)  # the orphan index object is ignored
        assert [r.line for r in page.rows] == [page.total_lines - 1, page.total_lines]
        # The shipper resumes at the stored size; the index builder resumes from the last part.
        assert await put_log(second, "crash-1", data[last:], ts=9000) == len(data)
        assert any(k.startswith(f"index/{last:020d}-") for k in await keys(s3_server, bucket, "crash-1"))
        await second.finalize("crash-1", len(data), hashlib.sha256(data).hexdigest())  # hashed from the parts
        everything = await rows_of(second, "crash-1", after=1000, limit=3)
        assert [r.text for r in everything.rows] == [lines(i, 1)[:-1].decode() for i in (1000, 1001, 1002)]
        assert everything.total_lines == 400_000
        late = await rows_of(second, "crash-1", since_ms=9000, limit=1)
        first_late = data[:last].count(b"\n")  # 'last' is a part boundary; lines are whole here
        assert late.rows[0].line == first_late + 1 + (0 if data[last - 1 : last] == b"\n" else 1)
    finally:
        await second.close()


async def test_tail_of_a_100mb_log_reads_a_bounded_number_of_bytes(store: S3BlobStore) -> None:
    data = lines(0, 1_800_000)  # ~100 MB
    assert await put_log(store, "big-1", data, chunk=4 << 20) == len(data)

    async def cost(**q: Any) -> tuple[int, Any]:
        before = store.bytes_read
        page = await rows_of(store, "big-1", **q)
        return store.bytes_read - before, page

    expected = [lines(i, 1)[:-1].decode() for i in range(1_799_900, 1_800_000)]
    fetched, page = await cost(tail=100)  # growing: the parts' index objects
    assert [r.text for r in page.rows] == expected and page.total_lines == 1_800_000
    assert fetched < 512 << 10, fetched
    fetched, page = await cost(after=900_000, limit=100)
    assert page.rows[0].text == lines(900_000, 1)[:-1].decode() and fetched < (1 << 20) + (512 << 10), fetched
    await store.finalize("big-1", len(data), hashlib.sha256(data).hexdigest())
    fetched, page = await cost(tail=100)  # sealed: the same index objects and parts
    assert [r.text for r in page.rows] == expected
    assert fetched < 512 << 10, fetched
    before = store.bytes_read
    assert b"".join([c async for c in store.read_raw("big-1", len(data) - 100, len(data))]) == data[-100:]
    assert store.bytes_read - before == 100


async def test_a_reader_continues_when_its_parts_are_merged_away(store: S3BlobStore, s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    data = lines(0, 200_000)  # ~11 MB: 5 MiB, 5 MiB and a small tail part
    await put_log(store, "race-1", data)
    view = await store._view("race-1")  # a reader's snapshot of the growing log...
    assert view is not None
    more = lines(200_000, 30_000)  # ...whose tail part the next request absorbs...
    await put_log(store, "race-1", more)
    async with store.append("race-1"):
        pass  # ...and the next session deletes the run the merged part replaced
    assert len([k for k in await keys(s3_server, bucket, "race-1") if k.startswith("parts/")]) == 3
    page = await asyncio.to_thread(query_rows, view, RowQuery(tail=2), max_row_bytes=1 << 16, max_response_bytes=1 << 20)
    assert [r.text for r in page.rows] == [lines(i, 1)[:-1].decode() for i in (199_998, 199_999)]
    assert page.total_lines == 200_000  # the snapshot's lines, read from the merged part
    assert b"".join([c async for c in store.read_raw("race-1", 0, len(data) + len(more))]) == data + more
    await store.finalize("race-1", len(data) + len(more), hashlib.sha256(data + more).hexdigest())
    page = await rows_of(store, "race-1", tail=1)
    assert page.total_lines == 230_000 and page.rows[0].text == lines(229_999, 1)[:-1].decode()


async def test_retention_delete_removes_every_object_and_lifecycle_is_set(
    store: S3BlobStore, s3_server: S3Server, bucket: str  # noqa: F811
) -> None:
    await put_log(store, "gone-1", lines(0, 10))
    async with store.append("gone-1") as log:
        await log.write(lines(10, 10), 1)
        await log.sync()
        await log.commit_cursor("c-1")
    assert (await store.stat("gone-1")).cursor == "c-1"
    keep = False

    async def still_expired() -> bool:
        return not keep

    keep = True
    assert not await store.delete("gone-1", only_if=still_expired)  # a write made it live again
    assert await keys(s3_server, bucket, "gone-1")
    keep = False
    assert await store.delete("gone-1", only_if=still_expired)
    assert await keys(s3_server, bucket, "gone-1") == []
    assert await store.stat("gone-1") is None and await rows_of(store, "gone-1") is None
    assert not await store.delete("gone-1")
    assert store.lifecycle_status == "applied"
    async with s3_server.client() as s3:
        rules = (await s3.get_bucket_lifecycle_configuration(Bucket=bucket))["Rules"]
    ours = [r for r in rules if r["ID"] == "fabric-gateway-gw"]
    assert len(ours) == 1 and ours[0]["Expiration"]["Days"] == 37
    assert ours[0].get("Filter", {}).get("Prefix", ours[0].get("Prefix")) == "gw/tasks/"


async def test_upload_resumes_after_a_dropped_connection_over_http(s3_server: S3Server, bucket: str, tmp_path: Any) -> None:  # noqa: F811
    """The gateway on S3: a body cut mid-way keeps the parts stored (whole bytes), the shipper
    resumes at the answered size, and the secret key never reaches the logs."""
    buf = io.StringIO()
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
        storage=StorageSettings(database_url=f"sqlite:///{tmp_path}/tasks.db", blob_dir=str(tmp_path / "unused")),
        auth=AuthSettings(internal_token=TOKEN),
        retention=RetentionSettings(ttl_seconds=30 * 86400),
        s3=settings_for(s3_server, bucket, part_bytes=MIN_PART),
    )
    running = await start(settings, clock=FakeClock(), registry=CollectorRegistry(), logger=structlog.wrap_logger(structlog.PrintLogger(file=buf)))
    data = lines(0, 250_000)  # ~14 MB: two whole parts arrive before the drop
    try:
        host, port = running.public_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (f"PUT /internal/tasks/drop-1/logs?offset=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
             f"Content-Length: {len(data)}\r\n\r\n").encode()
        )
        sent = 11_000_000
        for i in range(0, sent, 500_000):
            writer.write(data[i : i + 500_000])
            await writer.drain()
        await _until_received(running.public_url, 2 * MIN_PART)  # two whole parts, then the drop
        writer.transport.abort()
        async with aiohttp.ClientSession() as http:
            size = 0
            for _ in range(200):
                async with http.get(f"{running.public_url}/internal/tasks/drop-1/logs/state", headers=AUTH) as resp:
                    state = await resp.json()
                async with http.put(f"{running.public_url}/internal/tasks/drop-1/logs?offset={state['size']}", data=b"", headers=AUTH) as resp:
                    if resp.status == 200:
                        size = (await resp.json())["size"]
                        break
                await asyncio.sleep(0.05)
            assert 0 < size <= sent
            async with http.get(f"{running.public_url}/v1/tasks/drop-1/logs/raw", headers={"Range": f"bytes=0-{size - 1}"}) as resp:
                assert await resp.read() == data[:size]
            async with http.put(f"{running.public_url}/internal/tasks/drop-1/logs?offset={size}", data=data[size:], headers=AUTH) as resp:
                assert (await resp.json()) == {"size": len(data)}
            body = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            async with http.post(f"{running.public_url}/internal/tasks/drop-1/logs/finalize", json=body, headers=AUTH) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{running.public_url}/v1/tasks/drop-1/logs", params={"tail": "1"}) as resp:
                rows = await resp.json()
            assert rows["totalLines"] == 250_000 and rows["logState"] == "complete"
    finally:
        await running.stop()
    assert s3_server.secret_access_key not in buf.getvalue()
    assert re.search(r"s3://t-[0-9a-f]+/gw", buf.getvalue())  # where logs live is logged, without keys


async def test_a_missing_bucket_fails_at_startup(s3_server: S3Server) -> None:  # noqa: F811
    st = S3BlobStore(settings_for(s3_server, "no-such-" + uuid.uuid4().hex[:8]))
    with pytest.raises(Exception) as failed:
        await st.open()
    assert "HeadBucket" in str(failed.value)


async def _until_received(url: str, at_least: int, timeout: float = 30.0) -> None:
    """Wait until the gateway's ``gateway_log_bytes_received_total`` (bytes handed to the blob
    store) reaches ``at_least``."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
            received = next((float(line.split()[1]) for line in text.splitlines()
                             if line.startswith("gateway_log_bytes_received_total ")), 0.0)
            if received >= at_least:
                return
            assert asyncio.get_running_loop().time() < deadline, f"only {received} bytes received"
            await asyncio.sleep(0.02)


async def test_append_cuts_the_parts_past_the_acknowledged_size(store: S3BlobStore, s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    """Several replicas (``blobs_ledger``): parts a dead replica stored past the size the upload
    ledger acknowledged are deleted, with their index objects, before the next append; the log
    then continues at the acknowledged size, rows and checksum as if the tail never was."""
    data = lines(0, 150_000)  # ~8.6 MB
    assert await put_log(store, "cut-1", data[: 5 << 20]) == 5 << 20  # acknowledged: one part
    assert await put_log(store, "cut-1", data[5 << 20 : 6 << 20]) == 6 << 20  # the dead replica's tail
    with pytest.raises(Unavailable, match="no part"):  # not a part boundary: refuse, change nothing
        async with store.append("cut-1", acknowledged=(5 << 20) + 10):
            pass
    with pytest.raises(Unavailable, match="lost parts"):
        async with store.append("cut-1", acknowledged=7 << 20):
            pass
    async with store.append("cut-1", acknowledged=5 << 20) as log:
        assert log.size == 5 << 20
        await log.write(data[5 << 20 :], 5000)
        assert await log.sync() == len(data)
    assert f"index/{5 << 20:020d}-{len(data):020d}" in await keys(s3_server, bucket, "cut-1")  # the new part's
    await store.finalize("cut-1", len(data), hashlib.sha256(data).hexdigest())
    page = await rows_of(store, "cut-1", tail=1)
    assert page.total_lines == 150_000 and page.rows[0].text == lines(149_999, 1)[:-1].decode()


async def test_a_merged_part_past_the_acknowledged_size_is_cut_back_to_its_run(
    store: S3BlobStore, s3_server: S3Server, bucket: str  # noqa: F811
) -> None:
    """A dead replica's session merged the acknowledged small tail part into a part reaching past
    the acknowledged size: the next session chains through the run the merged part replaced (kept
    until a session starts past the merged part's end), deletes the merged part, and continues at
    the acknowledged size."""
    data = lines(0, 150_000)  # ~8.6 MB
    small = (5 << 20) + 100_000
    assert await put_log(store, "merge-cut-1", data[:small]) == small  # acknowledged: 5 MiB + a small tail part
    assert await put_log(store, "merge-cut-1", data[small : small + 400_000]) == small + 400_000  # merges the tail; unacknowledged
    names = await keys(s3_server, bucket, "merge-cut-1")
    merged = f"parts/{5 << 20:020d}-{small + 400_000:020d}"
    assert merged in names and f"parts/{5 << 20:020d}-{small:020d}" in names  # the run stays
    assert (await store.stat("merge-cut-1")).size == small + 400_000  # the longest chain
    async with store.append("merge-cut-1", acknowledged=small) as log:
        assert log.size == small
        await log.write(data[small:], 7000)
        assert await log.sync() == len(data)
    names = await keys(s3_server, bucket, "merge-cut-1")
    assert merged not in names and f"index/{merged[6:]}" not in names
    assert b"".join([c async for c in store.read_raw("merge-cut-1", 0, len(data))]) == data
    await store.finalize("merge-cut-1", len(data), hashlib.sha256(data).hexdigest())
    page = await rows_of(store, "merge-cut-1", tail=1)
    assert page.total_lines == 150_000 and page.rows[0].text == lines(149_999, 1)[:-1].decode()


async def test_a_log_composed_by_an_earlier_gateway_is_still_read(store: S3BlobStore, s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    """Earlier gateways sealed a log by composing it into log.txt + log.idx (and deleting the
    parts); those logs read, finalize idempotently and delete as before."""
    from gateway.logindex import IndexBuilder

    data = lines(0, 50_000)
    records = IndexBuilder().feed(data, 4242)
    digest = hashlib.sha256(data).hexdigest()
    async with s3_server.client() as s3:
        for name, body in (
            ("log.txt", data), ("log.idx", b"".join(r.pack() for r in records)),
            ("log.done", b'{"size": %d, "sha256": "%s"}' % (len(data), digest.encode())),
        ):
            await s3.put_object(Bucket=bucket, Key=f"gw/tasks/old-1/{name}", Body=body)
    stat = await store.stat("old-1")
    assert stat is not None and stat.sealed and stat.size == len(data) and stat.sha256 == digest
    page = await rows_of(store, "old-1", tail=2)
    assert [r.text for r in page.rows] == [lines(i, 1)[:-1].decode() for i in (49_998, 49_999)]
    assert page.total_lines == 50_000
    assert b"".join([c async for c in store.read_raw("old-1", 100, len(data))]) == data[100:]
    assert (await store.finalize("old-1", len(data), digest)).sealed
    with pytest.raises(Conflict):
        async with store.append("old-1"):
            pass
    assert await store.delete("old-1") and await keys(s3_server, bucket, "old-1") == []
