"""``BlobStore`` on S3-compatible object storage, through aiobotocore. Same contract as
``blobs_local`` (see ``blobs``); what differs is how an append-only log is kept in a store that
has no append.

Layout under ``s3://bucket/prefix/``::

    tasks/<execution>/parts/<offset:020d>  bytes [offset, offset + size) of the log: one object
                                           per stored batch (about ``part_bytes``, or what one
                                           upload request brought); its metadata ``index-state``
                                           is the line-index builder's state after it
    tasks/<execution>/index/<offset:020d>  the index records (``logindex``) of the lines that
                                           start in that part; absent when none does
    tasks/<execution>/log.started          empty; says the log exists before its first byte
    tasks/<execution>/log.cursor           the uploader's opaque resume cursor
    tasks/<execution>/log.txt, log.idx     the whole log and its whole index, composed by finalize
    tasks/<execution>/log.done             {"size", "sha256"}: sealed (written after log.txt and
                                           log.idx; then the parts go)

Invariants (what makes a crash at any point safe):

- The stored size is the sum of the parts that chain from offset 0 (each starts where the previous
  ends). A part is one PUT, which S3 makes atomic, so after a crash or a dropped connection the
  size is exactly the bytes of the parts that were written, and a retry resumes there.
- A part's index object is written before the part. An index object whose part is missing is an
  orphan (a crash between the two): readers ignore it, the next append at that offset deletes it.
- An append resumes the index builder from the last part's ``index-state``: one HEAD, whatever the
  log's size or its longest line.
- ``finalize`` verifies size and sha256 before it writes anything, composes ``log.txt`` by a
  multipart upload (``UploadPartCopy`` of the parts of at least 5 MiB, server-side; smaller
  neighbours are read and sent as parts of at least 5 MiB, so at most one 5 MiB buffer is held),
  then ``log.idx`` (the index objects concatenated: ~0.04 % of the log), then ``log.done``, then
  deletes the parts. A crash before ``log.done`` leaves the parts, and finalize runs again; a crash
  after it leaves stray parts that the next finalize or the retention delete removes.

Readers (``rows``, ``read_raw``, ``stat``) work from one LIST of the execution's prefix: a consistent
prefix of a growing log, or the sealed log. Logs-as-rows run the pure ``logrows`` query in a
worker thread over a view whose reads hop back to the event loop as ranged GETs: a page or a tail
reads a few index pages and a block or two of the log, never the whole object (``bytes_read``
counts what was fetched). A reader whose parts vanish under it (finalize just composed them)
continues on ``log.txt`` and ``log.idx``: the same bytes and the same records.

Locks and running hashes are per process (``blobs_shared``). Several replicas go through
``blobs_ledger`` (PostgreSQL): its database lock makes an execution's session exclusive across
processes, and ``append`` gets the acknowledged size, deleting the parts of a dead replica's
unacknowledged tail (``_Appender._cut``). Readers may be on any replica.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from gateway.blobs import LogStat
from gateway.blobs_shared import ExecutionLocks, HashCache, HashState
from gateway.errors import ChecksumMismatch, Conflict, PayloadTooLarge, Unavailable
from gateway.ledger import Start, start_decision
from gateway.logindex import RECORD_SIZE, IndexBuilder, IndexRecord
from gateway.logrows import RowPage, RowQuery, query_rows
from gateway.settings import S3Settings

MIN_PART = 5 << 20
"""S3's smallest multipart part (all but the last)."""
READ_CHUNK = 256 << 10
_INDEX_PAGE = 4096
"""Records fetched per ranged GET of ``log.idx`` (96 KiB)."""
_DELETE_BATCH = 1000
_THREAD_WAIT = 300.0
_STATE_META = "index-state"

_log = logging.getLogger("gateway.blobs_s3")
T = TypeVar("T")


class _Missing(FileNotFoundError):
    """An object that the listing had is gone (finalize composed it away, or retention removed
    the log). A ``FileNotFoundError``, which is how a follower learns its log was deleted."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, ``prefix/`` or ``""``)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, (prefix + "/" if prefix else "")


@dataclass
class _Listing:
    """One LIST of an execution's prefix."""

    parts: list[tuple[int, int]]
    """(offset, size) of the parts chaining from 0, in order."""
    index: dict[int, int]
    """offset -> bytes of ``index/<offset>``, for offsets of chained parts only."""
    files: dict[str, int]
    """Other objects (``log.txt``, ``log.done``, ...) -> size."""
    orphans: list[str] = field(default_factory=list)
    """Keys (relative) of index objects and parts outside the chain."""

    @property
    def size(self) -> int:
        return self.parts[-1][0] + self.parts[-1][1] if self.parts else 0

    @property
    def exists(self) -> bool:
        return bool(self.parts or self.files)

    @property
    def sealed(self) -> bool:
        return "log.done" in self.files


def _part(offset: int) -> str:
    return f"parts/{offset:020d}"


def _index(offset: int) -> str:
    return f"index/{offset:020d}"


class S3BlobStore:
    def __init__(
        self,
        settings: S3Settings,
        *,
        max_log_bytes: int = 16 << 30,
        lock_timeout: float = 5.0,
        lifecycle_days: int = 0,
        threads: int = 4,
    ) -> None:
        if settings.part_bytes < MIN_PART:
            raise ValueError(f"part_bytes must be at least {MIN_PART} (S3's smallest multipart part)")
        self.bucket, self.prefix = parse_s3_url(settings.url)
        self.settings = settings
        self.max_log_bytes = max_log_bytes
        self.lock_timeout = lock_timeout
        self.lifecycle_days = lifecycle_days
        self._threads = threads
        self._client: Any = None
        self._exit: contextlib.AsyncExitStack | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks = ExecutionLocks()
        self._hashes = HashCache()
        #: Bytes of object data fetched by GETs since open (log and index alike); only the event
        #: loop adds to it. What a tail or a page costs, measured.
        self.bytes_read = 0
        #: What happened to the lifecycle rule at open: "off", "applied" or "unsupported".
        self.lifecycle_status = "off"

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        config = AioConfig(
            s3={"addressing_style": "path" if s.path_style else "auto"},
            # Standard mode retries throttling (503 SlowDown) and transient 5xx/connection errors
            # with backoff, 4 attempts; anything else surfaces as a 503 to our client, who retries.
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {"region_name": s.region, "config": config}
        if s.endpoint_url:
            kwargs["endpoint_url"] = s.endpoint_url
        if s.access_key_id or s.secret_access_key:
            kwargs["aws_access_key_id"] = s.access_key_id
            kwargs["aws_secret_access_key"] = s.secret_access_key
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(get_session().create_client("s3", **kwargs))
            await self._call("HeadBucket", self._client.head_bucket(Bucket=self.bucket))
            await self._apply_lifecycle()
        except BaseException:
            await stack.aclose()
            self._client = None
            raise
        self._exit = stack
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="gateway-s3-rows")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.aclose()
        self._client = None

    async def _apply_lifecycle(self) -> None:
        """Expire ``<prefix>tasks/`` objects ``lifecycle_days`` after they were written, where the
        server supports lifecycle rules (log and continue where it does not). Other rules of the
        bucket are kept; ours is replaced by its ID."""
        if self.lifecycle_days <= 0:
            self.lifecycle_status = "off"
            return
        rule_id = "fabric-gateway-" + (self.prefix.rstrip("/") or "root")[:200]
        rule = {
            "ID": rule_id,
            "Filter": {"Prefix": self.prefix + "tasks/"},
            "Status": "Enabled",
            "Expiration": {"Days": self.lifecycle_days},
        }
        try:
            try:
                current = await self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
                rules = [r for r in current.get("Rules", []) if r.get("ID") != rule_id]
            except ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
            await self._client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": [*rules, rule]}
            )
        except (ClientError, BotoCoreError, aiohttp.ClientError) as exc:
            self.lifecycle_status = "unsupported"
            _log.warning(
                "object lifecycle rule not applied (the retention sweeper still deletes expired logs): "
                "bucket=%s prefix=%s error=%s", self.bucket, self.prefix, _code(exc) or type(exc).__name__,
            )
            return
        self.lifecycle_status = "applied"
        _log.info("object lifecycle rule applied: bucket=%s prefix=%stasks/ days=%d", self.bucket, self.prefix, self.lifecycle_days)

    # --- S3 calls, errors translated once --------------------------------------------------------

    def _key(self, execution: str, name: str = "") -> str:
        # ``execution`` is a validated DNS-1123 name (model.check_name): no '/', no '..'.
        return f"{self.prefix}tasks/{execution}/{name}"

    async def _call(self, what: str, op: Awaitable[T]) -> T:
        if self._client is None:
            if asyncio.iscoroutine(op):
                op.close()
            raise Unavailable("the blob store is closed")
        try:
            return await op
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise _Missing(what) from exc
            raise Unavailable(f"object storage refused {what}: {code or 'error'}") from exc
        except (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"object storage unreachable during {what}: {type(exc).__name__}") from exc

    async def _put(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        if metadata:
            kwargs["Metadata"] = metadata
        await self._call("PutObject", self._client.put_object(**kwargs))

    async def _get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes [start, end) (all of it without a range)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None and end is not None:
            if end <= start:
                return b""
            kwargs["Range"] = f"bytes={start}-{end - 1}"

        async def fetch() -> bytes:
            resp = await self._client.get_object(**kwargs)
            async with resp["Body"] as body:
                return await body.read()

        data = await self._call("GetObject", fetch())
        self.bytes_read += len(data)
        return data

    async def _stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The object's bytes [start, end) in chunks of at most ``READ_CHUNK``, as they arrive."""
        if end <= start:
            return
        resp = await self._call(
            "GetObject", self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        )
        async with resp["Body"] as body:
            while True:
                chunk = await self._call("GetObject", body.read(READ_CHUNK))
                if not chunk:
                    return
                self.bytes_read += len(chunk)
                yield chunk

    async def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]
            resp = await self._call(
                "DeleteObjects",
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}),
            )
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise Unavailable(f"object storage refused DeleteObjects: {errors[0].get('Code')}")

    async def _list(self, execution: str) -> _Listing:
        base = self._key(execution)
        parts: dict[int, int] = {}
        index: dict[int, int] = {}
        files: dict[str, int] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
        while True:
            page = await self._call("ListObjectsV2", self._client.list_objects_v2(**kwargs))
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(base):]
                kind, _, offset = rel.partition("/")
                if kind in ("parts", "index") and offset.isdigit():
                    (parts if kind == "parts" else index)[int(offset)] = obj["Size"]
                else:
                    files[rel] = obj["Size"]
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        chain: list[tuple[int, int]] = []
        pos = 0
        for offset in sorted(parts):
            if offset != pos or not parts[offset]:
                break
            chain.append((offset, parts[offset]))
            pos += parts[offset]
        chained = {offset for offset, _ in chain}
        orphans = [_part(o) for o in parts if o not in chained] + [_index(o) for o in index if o not in chained]
        return _Listing(chain, {o: n for o, n in index.items() if o in chained}, files, orphans)

    async def _done(self, execution: str) -> dict[str, Any]:
        return json.loads(await self._get(self._key(execution, "log.done")))

    async def _cursor(self, execution: str, listing: _Listing) -> str | None:
        if "log.cursor" not in listing.files:
            return None
        try:
            return (await self._get(self._key(execution, "log.cursor"))).decode() or None
        except _Missing:
            return None

    # --- appending ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def append(self, execution: str, acknowledged: int | None = None) -> AsyncIterator["_Appender"]:
        async with self._locks.hold(execution, self.lock_timeout):
            appender = _Appender(self, execution)
            await appender.open(self._hashes.take(execution), acknowledged)
            try:
                yield appender
            finally:
                # A cancelled handler (client gone, shutdown) still stores what arrived, and keeps
                # the lock until it has.
                await _finish(appender.aclose())
                if appender.hash_state is not None:
                    self._hashes.put(execution, appender.hash_state)

    # --- finalize ----------------------------------------------------------------------------

    async def finalize(self, execution: str, size: int, sha256: str | None) -> LogStat:
        sha256 = sha256.lower() if sha256 else None
        async with self._locks.hold(execution, self.lock_timeout):
            listing = await self._list(execution)
            cursor = await self._cursor(execution, listing)
            if listing.sealed:
                done = await self._done(execution)
                if listing.parts or listing.orphans:  # a crash after log.done: finish the cleanup
                    await self._delete_parts(execution, listing)
                if done["size"] == size and sha256 in (None, done["sha256"]):
                    return LogStat(size, True, done["sha256"], cursor)
                raise ChecksumMismatch(
                    "the log is already finalized with another size or checksum", size=done["size"], sha256=done["sha256"]
                )
            stored = listing.size
            if stored != size:
                raise ChecksumMismatch(
                    f"finalize says {size} bytes but the gateway holds {stored}", code="size_mismatch", size=stored
                )
            state = self._hashes.peek(execution)
            if state is not None and state.size == stored:
                digest = state.hasher.hexdigest()
            else:  # restarted (or evicted): read the parts once
                hasher = hashlib.sha256()
                for offset, length in listing.parts:
                    async for chunk in self._stream(self._key(execution, _part(offset)), 0, length):
                        hasher.update(chunk)
                digest = hasher.hexdigest()
            if sha256 is not None and digest != sha256:
                raise ChecksumMismatch("sha256 of the stored bytes differs", size=stored, sha256=digest)
            await self._compose(execution, listing.parts)
            index = b"".join([await self._get(self._key(execution, _index(o))) for o, _ in listing.parts if o in listing.index])
            await self._put(self._key(execution, "log.idx"), index)
            await self._put(self._key(execution, "log.done"), json.dumps({"size": size, "sha256": digest}).encode())
            await self._delete_parts(execution, listing)
            self._hashes.drop(execution)
            return LogStat(size, True, digest, cursor)

    async def _delete_parts(self, execution: str, listing: _Listing) -> None:
        keys = [_part(o) for o, _ in listing.parts] + [_index(o) for o in listing.index] + listing.orphans
        if "log.started" in listing.files:
            keys.append("log.started")
        await self._delete_keys([self._key(execution, k) for k in keys])

    async def _compose(self, execution: str, parts: list[tuple[int, int]]) -> None:
        """Write ``log.txt`` = the parts' bytes, in order, holding at most ``MIN_PART`` bytes."""
        target = self._key(execution, "log.txt")
        total = sum(n for _, n in parts)
        if len(parts) == 1 and total >= MIN_PART:
            source = {"Bucket": self.bucket, "Key": self._key(execution, _part(parts[0][0]))}
            await self._call("CopyObject", self._client.copy_object(Bucket=self.bucket, Key=target, CopySource=source))
            return
        if total < 2 * MIN_PART:  # small: one PUT (a multipart upload needs two parts of 5 MiB)
            body = b"".join([await self._get(self._key(execution, _part(o))) for o, _ in parts])
            await self._put(target, body)
            return
        upload = await self._call(
            "CreateMultipartUpload", self._client.create_multipart_upload(Bucket=self.bucket, Key=target)
        )
        upload_id = upload["UploadId"]
        done: list[dict[str, Any]] = []

        async def send(body: bytes) -> None:
            resp = await self._call(
                "UploadPart",
                self._client.upload_part(Bucket=self.bucket, Key=target, UploadId=upload_id, PartNumber=len(done) + 1, Body=body),
            )
            done.append({"PartNumber": len(done) + 1, "ETag": resp["ETag"]})

        async def copy(key: str, start: int, end: int) -> None:
            resp = await self._call(
                "UploadPartCopy",
                self._client.upload_part_copy(
                    Bucket=self.bucket, Key=target, UploadId=upload_id, PartNumber=len(done) + 1,
                    CopySource={"Bucket": self.bucket, "Key": key}, CopySourceRange=f"bytes={start}-{end - 1}",
                ),
            )
            done.append({"PartNumber": len(done) + 1, "ETag": resp["CopyPartResult"]["ETag"]})

        try:
            buf = bytearray()  # < MIN_PART between steps: the one buffer this holds
            for offset, length in parts:
                key = self._key(execution, _part(offset))
                pos = 0
                if buf:  # top the buffer up to a whole part from this one's head
                    take = min(MIN_PART - len(buf), length)
                    buf += await self._get(key, 0, take)
                    pos = take
                    if len(buf) >= MIN_PART:
                        await send(bytes(buf))
                        buf.clear()
                if pos == length:
                    continue
                if not buf and length - pos >= MIN_PART:
                    await copy(key, pos, length)  # server-side, no bytes through the gateway
                else:
                    buf += await self._get(key, pos, length)
            if buf:
                await send(bytes(buf))  # the last part may be smaller than 5 MiB
            await self._call(
                "CompleteMultipartUpload",
                self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=target, UploadId=upload_id, MultipartUpload={"Parts": done}
                ),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await _finish(self._client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload_id))
            raise

    # --- reading -----------------------------------------------------------------------------

    async def stat(self, execution: str) -> LogStat | None:
        listing = await self._list(execution)
        if not listing.exists:
            return None
        cursor_task = asyncio.ensure_future(self._cursor(execution, listing))
        try:
            if listing.sealed:
                done = await self._done(execution)
                return LogStat(done["size"], True, done["sha256"], await cursor_task)
            return LogStat(listing.size, False, None, await cursor_task)
        except _Missing:  # deleted between the LIST and the GET
            return None
        finally:
            cursor_task.cancel()
            with contextlib.suppress(BaseException):
                await cursor_task

    async def rows(
        self, execution: str, query: RowQuery, *, max_row_bytes: int, max_response_bytes: int
    ) -> RowPage | None:
        view = await self._view(execution)
        if view is None:
            return None
        if self._pool is None:
            raise Unavailable("the blob store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, lambda: query_rows(view, query, max_row_bytes=max_row_bytes, max_response_bytes=max_response_bytes)
            )
        except _Missing:  # deleted by retention while we read
            return None

    async def _view(self, execution: str) -> "_ObjectView | None":
        listing = await self._list(execution)
        if not listing.exists:
            return None
        if listing.sealed:
            try:
                size = (await self._done(execution))["size"]
            except _Missing:
                return None
            return _ObjectView(self, execution, size, listing.files.get("log.idx", 0) // RECORD_SIZE, None)
        return _ObjectView(self, execution, listing.size, sum(listing.index.values()) // RECORD_SIZE, listing)

    async def read_raw(self, execution: str, start: int, end: int) -> AsyncIterator[bytes]:
        listing = await self._list(execution)
        pos = start
        if not listing.sealed:
            try:
                for offset, length in listing.parts:
                    if offset + length <= pos or pos >= end:
                        continue
                    async for chunk in self._stream(self._key(execution, _part(offset)), pos - offset, min(length, end - offset)):
                        pos += len(chunk)
                        yield chunk
                if pos >= end:
                    return
            except _Missing:
                pass  # composed into log.txt meanwhile: the rest comes from there
        async for chunk in self._stream(self._key(execution, "log.txt"), pos, end):
            yield chunk

    # --- retention ---------------------------------------------------------------------------

    async def delete(self, execution: str, *, only_if: Callable[[], Awaitable[bool]] | None = None) -> bool:
        async with self._locks.hold(execution, None):
            if only_if is not None and not await only_if():
                return False
            self._hashes.drop(execution)
            base = self._key(execution)
            keys: list[str] = []
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
            while True:
                page = await self._call("ListObjectsV2", self._client.list_objects_v2(**kwargs))
                keys += [obj["Key"] for obj in page.get("Contents", [])]
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
            await self._delete_keys(keys)
            return bool(keys)

    # --- the bridge for worker threads -------------------------------------------------------

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's event loop from a worker thread and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_THREAD_WAIT)


class _Appender:
    """One append session, owned by the task holding the execution's lock.

    Chunks collect in ``_pending`` until ``part_bytes``; then one part is stored (its index object,
    then the part) while the next fills, so memory is two parts whatever the log's size. A failed
    store breaks the session: nothing more is written, and the client resumes from the stored size.
    """

    def __init__(self, store: S3BlobStore, execution: str) -> None:
        self._store = store
        self._execution = execution
        #: Bytes in stored parts. Advanced by ``_store_part`` (one at a time).
        self._stored = 0
        #: Bytes accepted: stored + in flight + pending.
        self._accepted = 0
        self._pending: list[tuple[bytes, int]] = []
        self._pending_bytes = 0
        self._inflight: asyncio.Task[None] | None = None
        self._builder = IndexBuilder()
        self._broken: BaseException | None = None
        self.hash_state: HashState | None = None

    @property
    def size(self) -> int:
        return self._accepted

    async def open(self, state: HashState | None, acknowledged: int | None = None) -> None:
        store, ex = self._store, self._execution
        listing = await store._list(ex)
        if listing.sealed:
            size = listing.files.get("log.txt", 0)
            raise Conflict("the log is finalized and takes no more bytes", code="log_finalized", size=size)
        await self._cut(listing, acknowledged)
        self._stored = self._accepted = listing.size
        if not listing.exists:
            await store._put(store._key(ex, "log.started"), b"")
        if listing.orphans:  # a crash between an index object and its part (or older debris)
            await store._delete_keys([store._key(ex, k) for k in listing.orphans])
        if listing.parts:
            last = listing.parts[-1][0]
            head = await store._call("HeadObject", store._client.head_object(Bucket=store.bucket, Key=store._key(ex, _part(last))))
            try:
                self._builder = IndexBuilder.load_state(head.get("Metadata", {})[_STATE_META])
            except (KeyError, ValueError) as exc:
                raise Unavailable(f"part {last} of {ex!r} has no index state; the log cannot be resumed") from exc
        if state is not None and state.size == self._stored:
            self.hash_state = state
        elif self._stored == 0:
            self.hash_state = HashState(0, hashlib.sha256())

    async def _cut(self, listing: _Listing, acknowledged: int | None) -> None:
        """Apply ``ledger.start_decision``: drop the parts (and their index objects) of a dead
        replica's unacknowledged tail. Every acknowledged size ends a part (a session stores its
        last part before it records its size), so the tail is whole parts."""
        start = start_decision(listing.size, acknowledged)
        if start.action is Start.LOST:
            raise Unavailable(
                f"the log holds {listing.size} bytes but {acknowledged} were acknowledged: the bucket lost parts"
            )
        if start.action is not Start.CUT:
            return
        keep = [p for p in listing.parts if p[0] < start.size]
        if (keep[-1][0] + keep[-1][1] if keep else 0) != start.size:
            raise Unavailable(f"no part of {self._execution!r} ends at the acknowledged size {start.size}")
        tail = [o for o, _ in listing.parts if o >= start.size]
        keys = [_part(o) for o in tail] + [_index(o) for o in tail if o in listing.index]
        await self._store._delete_keys([self._store._key(self._execution, k) for k in keys])
        listing.parts = keep

    async def write(self, data: bytes, ts_ms: int) -> None:
        if not data:
            return
        self._check()
        if self._accepted + len(data) > self._store.max_log_bytes:
            raise PayloadTooLarge(f"the log would exceed {self._store.max_log_bytes} bytes", size=self._accepted)
        self._pending.append((data, ts_ms))
        self._pending_bytes += len(data)
        self._accepted += len(data)
        if self._pending_bytes >= self._store.settings.part_bytes:
            await self._drain()
            self._inflight = asyncio.ensure_future(self._store_part(self._take()))

    async def sync(self) -> int:
        await self._drain()
        await self._store_part(self._take())
        return self._stored

    async def commit_cursor(self, cursor: str) -> None:
        self._check()
        await self._store._put(self._store._key(self._execution, "log.cursor"), cursor.encode())

    async def aclose(self) -> None:
        try:
            await self._drain()
        finally:
            if self._broken is None:
                await self._store_part(self._take())

    def _check(self) -> None:
        if self._broken is not None:
            raise Unavailable("an earlier write of this upload failed; resume at the stored size") from self._broken

    def _take(self) -> list[tuple[bytes, int]]:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        return batch

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _store_part(self, batch: list[tuple[bytes, int]]) -> None:
        if not batch:
            return
        self._check()
        store, ex = self._store, self._execution
        data = b"".join(chunk for chunk, _ in batch)
        offset = self._stored
        try:
            records: list[IndexRecord] = []
            for chunk, ts in batch:
                records += self._builder.feed(chunk, ts)
            if records:  # the index object first: a crash before the part leaves an orphan, never a gap
                await store._put(store._key(ex, _index(offset)), b"".join(r.pack() for r in records))
            await store._put(store._key(ex, _part(offset)), data, {_STATE_META: self._builder.dump_state()})
        except BaseException as exc:
            self._broken = exc
            self.hash_state = None  # finalize re-reads the parts
            self._accepted = self._stored
            self._pending, self._pending_bytes = [], 0
            raise
        if self.hash_state is not None:
            self.hash_state.hasher.update(data)
            self.hash_state.size += len(data)
        self._stored += len(data)


class _ObjectView:
    """``logrows.IndexedLog`` over the objects of one log, fixed at the listing it was made from.
    Used from a worker thread; every fetch runs on the event loop (``S3BlobStore._blocking``).

    Sealed (``listing`` None): records are read from ``log.idx`` a page of ``_INDEX_PAGE`` at a
    time, bytes from ``log.txt``. Growing: records come from the parts' index objects (fetched
    whole, a few KiB each), bytes from the parts; if a part is gone (finalize composed it), the
    view turns into the sealed one -- same bytes, same record numbering.
    """

    def __init__(self, store: S3BlobStore, execution: str, size: int, count: int, listing: _Listing | None) -> None:
        self._store = store
        self._execution = execution
        self.size = size
        self._count = count
        self._sealed = listing is None
        self._pages: dict[int, list[IndexRecord]] = {}
        if listing is not None:
            self._parts = listing.parts
            self._part_starts = [o for o, _ in listing.parts]
            #: (offset of the part, index of its first record), for parts with index objects.
            self._index_objects: list[tuple[int, int]] = []
            first = 0
            for offset, _ in listing.parts:
                n = listing.index.get(offset, 0) // RECORD_SIZE
                if n:
                    self._index_objects.append((offset, first))
                    first += n
            self._index_firsts = [f for _, f in self._index_objects]

    def record_count(self) -> int:
        # A log whose first part carries no record cannot exist (the first line starts at 0), but a
        # reader racing a crash could see bytes without records: read them as one segment.
        return self._count if self._count or not self.size else 1

    def record(self, i: int) -> IndexRecord:
        if not self._count:
            return IndexRecord(0, 0, 0)
        if not self._sealed:
            try:
                return self._growing_record(i)
            except _Missing:
                self._sealed = True
        page = i // _INDEX_PAGE
        records = self._pages.get(page)
        if records is None:
            start = page * _INDEX_PAGE
            end = min(self._count, start + _INDEX_PAGE)
            raw = self._store._blocking(
                self._store._get(self._store._key(self._execution, "log.idx"), start * RECORD_SIZE, end * RECORD_SIZE)
            )
            records = [IndexRecord.unpack(raw[k : k + RECORD_SIZE]) for k in range(0, len(raw), RECORD_SIZE)]
            self._remember(page, records)
        return records[i - page * _INDEX_PAGE]

    def _growing_record(self, i: int) -> IndexRecord:
        j = bisect.bisect_right(self._index_firsts, i) - 1
        offset, first = self._index_objects[j]
        key = -1 - j  # growing pages are keyed by index object, negated: never a log.idx page number
        records = self._pages.get(key)
        if records is None:
            raw = self._store._blocking(self._store._get(self._store._key(self._execution, _index(offset))))
            records = [IndexRecord.unpack(raw[k : k + RECORD_SIZE]) for k in range(0, len(raw), RECORD_SIZE)]
            self._remember(key, records)
        return records[i - first]

    def _remember(self, key: int, records: list[IndexRecord]) -> None:
        if len(self._pages) >= 64:
            self._pages.pop(next(iter(self._pages)))
        self._pages[key] = records

    def read(self, offset: int, n: int) -> bytes:
        end = min(self.size, offset + n)
        if offset >= end:
            return b""
        if not self._sealed:
            try:
                return self._store._blocking(self._read_parts(offset, end))
            except _Missing:
                self._sealed = True
        return self._store._blocking(self._store._get(self._store._key(self._execution, "log.txt"), offset, end))

    async def _read_parts(self, start: int, end: int) -> bytes:
        out = []
        j = bisect.bisect_right(self._part_starts, start) - 1
        pos = start
        while pos < end and j < len(self._parts):
            offset, length = self._parts[j]
            stop = min(end, offset + length)
            out.append(await self._store._get(self._store._key(self._execution, _part(offset)), pos - offset, stop - offset))
            pos = stop
            j += 1
        return b"".join(out)


async def _finish(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): cleanup that must not be cut short, e.g. storing what an upload received."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def lifecycle_days(ttl_seconds: int, margin_days: int) -> int:
    """Days after which the bucket rule expires a blob: the retention TTL rounded up, plus the
    margin; 0 (no rule) when the margin is 0."""
    if margin_days <= 0:
        return 0
    return math.ceil(ttl_seconds / 86400) + margin_days

