"""``BlobStore`` on S3-compatible object storage, through aiobotocore. Same contract as
``blobs_local`` (see ``blobs``); what differs is how an append-only log is kept in a store that
has no append.

Layout under ``s3://bucket/prefix/``::

    tasks/<execution>/parts/<offset:020d>-<end:020d>
                                           bytes [offset, end) of the log: one object per stored
                                           batch (about ``part_bytes``, or what one upload request
                                           brought, merged with the small parts before it, see
                                           ``blobs_s3_parts``); its metadata ``index-state`` is the
                                           line-index builder's state after it
    tasks/<execution>/index/<offset>-<end> the index records (``logindex``) of the lines that
                                           start in that part; absent when none does
    tasks/<execution>/log.started          empty; says the log exists before its first byte
    tasks/<execution>/log.cursor           the uploader's opaque resume cursor
    tasks/<execution>/log.done             {"size", "sha256"}: sealed; the parts are the log

Gateways before part merging wrote ``parts/<offset>`` (read as the same chain) and composed a
sealed log into ``log.txt`` + ``log.idx`` (read as a legacy sealed log, never written now).

Invariants (what makes a crash at any point safe):

- The stored size is where the chain of parts from offset 0 ends (``blobs_s3_parts.chain``: each
  starts where the previous ends; a merged part wins over the run of parts it holds the bytes of).
  A part is one PUT, which S3 makes atomic, so after a crash or a dropped connection the size is
  exactly the bytes of the parts that were written, and a retry resumes there. Parts of one
  session are PUT concurrently (``part_concurrency``); one that lands after a failed one is outside
  the chain, i.e. not stored.
- A part's index object is written before the part. An index object whose part is missing is an
  orphan (a crash between the two): readers ignore it, the next append deletes it, with the parts
  outside the chain (debris, or a run a merged part replaced: readers of an older listing re-list).
- An append resumes the index builder from the last part's ``index-state``: one HEAD, whatever the
  log's size or its longest line.
- ``finalize`` verifies size and sha256 (the running hash of this process, else by reading the
  parts), then writes ``log.done``: no byte is copied, the parts stay the log. A crash before
  ``log.done`` leaves the log appendable and finalize runs again; after it, the next finalize or
  the retention delete removes the leftovers (``log.started``, orphans).

Readers (``rows``, ``read_raw``, ``stat``) work from one LIST of the execution's prefix: a consistent
prefix of a growing log, or the sealed log. Logs-as-rows run the pure ``logrows`` query in a
worker thread over a view whose reads hop back to the event loop as ranged GETs: a page or a tail
reads a few index objects and a block or two of the log, never the whole log (``bytes_read``
counts what was fetched). A reader whose parts vanish under it (a later append merged them and
deleted the run) lists again and continues: the same bytes and the same records.

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
import io
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from gateway.blobs import LogStat
from gateway.blobs_s3_parts import Part, chain, merge_run, parse_part, part_name
from gateway.blobs_shared import ExecutionLocks, HashCache, HashState
from gateway.errors import ChecksumMismatch, Conflict, PayloadTooLarge, Unavailable
from gateway.ledger import Start, start_decision
from gateway.logindex import RECORD_SIZE, IndexBuilder, IndexRecord
from gateway.logrows import RowPage, RowQuery, query_rows
from gateway.settings import S3Settings

MIN_PART = 5 << 20
"""The smallest ``part_bytes``: S3's smallest multipart part, so the parts of a log can still be
composed into one object by whoever needs one (``UploadPartCopy``)."""
_RELIST = 3
"""Times a reader lists again when a part of its listing vanished (merged meanwhile) before it
gives up (a log deleted under it)."""
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

    candidates: list[Part]
    """Every part object, in or out of the chain."""
    index_objects: dict[str, int]
    """Part name -> bytes of ``index/<name>``, for every index object."""
    files: dict[str, int]
    """Other objects (``log.done``, ``log.cursor``, ...) -> size."""
    strays: list[str]
    """Keys (relative) under ``parts/`` or ``index/`` that name no part."""
    parts: list[Part] = field(default_factory=list)
    """The chain (``blobs_s3_parts.chain``), in order."""

    @classmethod
    def of(cls, objects: dict[str, int], limit: int | None = None) -> "_Listing":
        """From relative key -> size; the chain ends at or before ``limit`` (None: no limit)."""
        candidates: list[Part] = []
        index: dict[str, int] = {}
        files: dict[str, int] = {}
        strays: list[str] = []
        for rel, size in objects.items():
            kind, _, name = rel.partition("/")
            if kind == "parts":
                part = parse_part(name, size)
                if part is None:
                    strays.append(rel)
                else:
                    candidates.append(part)
            elif kind == "index":
                index[name] = size
            else:
                files[rel] = size
        listing = cls(candidates, index, files, strays)
        listing.parts = chain(candidates, limit)
        return listing

    def limited(self, limit: int) -> "_Listing":
        return _Listing(self.candidates, self.index_objects, self.files, self.strays, chain(self.candidates, limit))

    @property
    def size(self) -> int:
        return self.parts[-1].end if self.parts else 0

    @property
    def index(self) -> dict[str, int]:
        """Part name -> bytes of its index object, for the chain's parts that have one."""
        return {p.name: self.index_objects[p.name] for p in self.parts if p.name in self.index_objects}

    @property
    def orphans(self) -> list[str]:
        """Keys (relative) of the parts and index objects outside the chain."""
        names = {p.name for p in self.parts}
        return (
            [_part(p.name) for p in self.candidates if p.name not in names]
            + [_index(n) for n in self.index_objects if n not in names]
            + self.strays
        )

    @property
    def exists(self) -> bool:
        return bool(self.candidates or self.files)

    @property
    def sealed(self) -> bool:
        return "log.done" in self.files

    @property
    def composed(self) -> bool:
        """Sealed by a gateway before part merging: the log is ``log.txt``, its index ``log.idx``."""
        return self.sealed and "log.txt" in self.files


def _part(name: str) -> str:
    return f"parts/{name}"


def _index(name: str) -> str:
    return f"index/{name}"


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
        if settings.part_concurrency < 1:
            raise ValueError("part_concurrency must be at least 1")
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
            # No SigV4 hash of each body (botocore signs bodies over plain http, a second sha256
            # pass over every byte on the event loop): over https TLS protects them, as AWS's own
            # SDKs do by default, and on loopback there is nothing to protect.
            s3={"addressing_style": "path" if s.path_style else "auto", "payload_signing_enabled": False},
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

    async def _put(self, key: str, body: bytes | io.BytesIO, metadata: dict[str, str] | None = None) -> None:
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
        objects: dict[str, int] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
        while True:
            page = await self._call("ListObjectsV2", self._client.list_objects_v2(**kwargs))
            for obj in page.get("Contents", []):
                objects[obj["Key"][len(base):]] = obj["Size"]
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return _Listing.of(objects)

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
                await self._delete_parts(execution, listing)  # a crash after log.done: finish the cleanup
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
                for part in listing.parts:
                    async for chunk in self._stream(self._key(execution, _part(part.name)), 0, part.size):
                        hasher.update(chunk)
                digest = hasher.hexdigest()
            if sha256 is not None and digest != sha256:
                raise ChecksumMismatch("sha256 of the stored bytes differs", size=stored, sha256=digest)
            await self._put(self._key(execution, "log.done"), json.dumps({"size": size, "sha256": digest}).encode())
            await self._delete_parts(execution, listing)
            self._hashes.drop(execution)
            return LogStat(size, True, digest, cursor)

    async def _delete_parts(self, execution: str, listing: _Listing) -> None:
        """What a sealed log no longer needs: ``log.started`` and the objects outside its chain
        (composed logs of older gateways: every part, their bytes are in ``log.txt``)."""
        keys = list(listing.orphans)
        if listing.composed:
            keys += [_part(p.name) for p in listing.parts] + [_index(n) for n in listing.index]
        if "log.started" in listing.files:
            keys.append("log.started")
        await self._delete_keys([self._key(execution, k) for k in keys])

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
        size = listing.size
        if listing.sealed:
            try:
                size = (await self._done(execution))["size"]
            except _Missing:
                return None
        return _ObjectView(self, execution, size, listing)

    async def read_raw(self, execution: str, start: int, end: int) -> AsyncIterator[bytes]:
        pos = start
        listing = await self._list(execution)
        for attempt in range(_RELIST + 1):
            if listing.composed:
                async for chunk in self._stream(self._key(execution, "log.txt"), pos, end):
                    pos += len(chunk)
                    yield chunk
                return
            try:
                for part in listing.parts:
                    if part.end <= pos or pos >= end:
                        continue
                    key = self._key(execution, _part(part.name))
                    async for chunk in self._stream(key, pos - part.offset, min(part.size, end - part.offset)):
                        pos += len(chunk)
                        yield chunk
                return
            except _Missing:  # merged meanwhile (or the log was deleted): list again, go on from pos
                if attempt == _RELIST:
                    raise
                listing = await self._list(execution)

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


@dataclass
class _Batch:
    """A part on its way: cut from the received bytes in order, stored by ``_Appender._put``."""

    offset: int
    chunks: list[bytes]
    """Its bytes, as received (copied once, into the request body, by ``_put``)."""
    size: int
    index: bytes
    """Its packed index records."""
    state: str
    """The index builder's state after it."""
    run: list[Part]
    """The trailing parts it absorbs (``merge_run``): stored as one part with them, from the first's
    offset."""


class _Appender:
    """One append session, owned by the task holding the execution's lock.

    Chunks collect in ``_pending`` until ``part_bytes``; then a part is cut (index records, hash,
    merge decision, in log order) and stored by a task of its own (its index object, then the
    part), up to ``part_concurrency`` at once while the next fills: memory is that many parts plus
    one, whatever the log's size. Parts complete in order (``_settle``); the first failure breaks
    the session: nothing more is written, the parts after it are outside the chain, and the client
    resumes from the stored size.
    """

    def __init__(self, store: S3BlobStore, execution: str) -> None:
        self._store = store
        self._execution = execution
        #: The log's chain as stored: the listing's, then each settled part. Owned by the session's task.
        self._chain: list[Part] = []
        #: Bytes in stored parts (where ``_chain`` ends). Advanced by ``_settle``, in order.
        self._stored = 0
        #: Bytes cut into parts (stored or in flight): where the next part starts.
        self._cut_at = 0
        #: Bytes accepted: cut + pending.
        self._accepted = 0
        self._pending: list[tuple[bytes, int]] = []
        self._pending_bytes = 0
        #: Parts being stored, oldest first, with the tasks storing them.
        self._inflight: deque[tuple[_Batch, asyncio.Task[Part]]] = deque()
        #: The hash updates, chained in log order in a worker thread; the last one.
        self._hashing: asyncio.Future[None] | None = None
        self._merged = False  # whether the session's first part was cut (only it merges)
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
            size = listing.files.get("log.txt", 0) if listing.composed else listing.size
            with contextlib.suppress(_Missing):
                size = (await store._done(ex))["size"]
            raise Conflict("the log is finalized and takes no more bytes", code="log_finalized", size=size)
        listing = self._cut(listing, acknowledged)
        self._stored = self._cut_at = self._accepted = listing.size
        self._chain = listing.parts
        if not listing.exists:
            await store._put(store._key(ex, "log.started"), b"")
        if listing.orphans:  # debris of a crash or of a dead replica, runs replaced by merged parts
            await store._delete_keys([store._key(ex, k) for k in listing.orphans])
        if listing.parts:
            last = listing.parts[-1].name
            head = await store._call("HeadObject", store._client.head_object(Bucket=store.bucket, Key=store._key(ex, _part(last))))
            try:
                self._builder = IndexBuilder.load_state(head.get("Metadata", {})[_STATE_META])
            except (KeyError, ValueError) as exc:
                raise Unavailable(f"part {last} of {ex!r} has no index state; the log cannot be resumed") from exc
        if state is not None and state.size == self._stored:
            self.hash_state = state
        elif self._stored == 0:
            self.hash_state = HashState(0, hashlib.sha256())

    def _cut(self, listing: _Listing, acknowledged: int | None) -> _Listing:
        """Apply ``ledger.start_decision``: the chain that ends at the acknowledged size; the parts
        of a dead replica's unacknowledged tail (a merged part reaching past it included) are then
        outside it, deleted with the other orphans. Every acknowledged size ends a part (a session
        stores its last part before it records its size, and a run a merged part replaced stays
        until a session starts past that part's end)."""
        start = start_decision(listing.size, acknowledged)
        if start.action is Start.LOST:
            raise Unavailable(
                f"the log holds {listing.size} bytes but {acknowledged} were acknowledged: the bucket lost parts"
            )
        if start.action is not Start.CUT:
            return listing
        cut = listing.limited(start.size)
        if cut.size != start.size:
            raise Unavailable(f"no part of {self._execution!r} ends at the acknowledged size {start.size}")
        return cut

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
            await self._launch()

    async def sync(self) -> int:
        await self._launch()
        await self._settle(0)
        return self._stored

    async def commit_cursor(self, cursor: str) -> None:
        self._check()
        await self._store._put(self._store._key(self._execution, "log.cursor"), cursor.encode())

    async def aclose(self) -> None:
        try:
            if self._broken is None:
                await self._launch()
        finally:
            await self._settle(0)

    def _check(self) -> None:
        if self._broken is not None:
            raise Unavailable("an earlier write of this upload failed; resume at the stored size") from self._broken

    async def _launch(self) -> None:
        """Cut the pending bytes into a part and start storing it, once fewer than
        ``part_concurrency`` parts are in flight."""
        if not self._pending:
            return
        self._check()
        await self._settle(self._store.settings.part_concurrency - 1)
        batch = self._take()
        self._inflight.append((batch, asyncio.ensure_future(self._put(batch))))

    def _take(self) -> _Batch:
        pending, size, self._pending, self._pending_bytes = self._pending, self._pending_bytes, [], 0
        records: list[IndexRecord] = []
        for chunk, ts in pending:
            records += self._builder.feed(chunk, ts)
        chunks = [chunk for chunk, _ in pending]
        run: list[Part] = []
        if not self._merged:
            self._merged = True
            n = merge_run(self._chain, size, self._store.settings.part_bytes)
            run = self._chain[len(self._chain) - n :] if n else []
        batch = _Batch(self._cut_at, chunks, size, b"".join(r.pack() for r in records), self._builder.dump_state(), run)
        self._cut_at += size
        if self.hash_state is not None:
            self._hashing = asyncio.ensure_future(_hash_after(self._hashing, self.hash_state, chunks))
        return batch

    async def _put(self, batch: _Batch) -> Part:
        """Store one part (its index object first: a crash before the part leaves an orphan, never
        a gap), absorbing its run: the run's bytes and records are fetched and stored before its own."""
        store, ex = self._store, self._execution
        pieces, index, offset = batch.chunks, batch.index, batch.offset
        if batch.run:
            offset = batch.run[0].offset
            listed = await asyncio.gather(
                *(store._get(store._key(ex, _part(p.name))) for p in batch.run),
                *(self._index_of(p) for p in batch.run),
            )
            pieces = [*listed[: len(batch.run)], *pieces]
            index = b"".join([*listed[len(batch.run):], index])
        # One copy, into a buffer of its own: botocore would wrap bytes in a BytesIO sharing them,
        # which aiohttp's payload (``getbuffer``) then copies once more.
        body = io.BytesIO()
        for piece in pieces:
            body.write(piece)
        body.seek(0)
        end = batch.offset + batch.size
        name = part_name(offset, end)
        if index:
            await store._put(store._key(ex, _index(name)), index)
        await store._put(store._key(ex, _part(name)), body, {_STATE_META: batch.state})
        return Part(offset, end - offset, name)

    async def _index_of(self, part: Part) -> bytes:
        try:
            return await self._store._get(self._store._key(self._execution, _index(part.name)))
        except _Missing:  # no line starts in that part
            return b""

    async def _settle(self, keep: int) -> None:
        """Wait, oldest first, until at most ``keep`` parts are in flight; the chain and the stored
        size follow each part stored. The first failure breaks the session: the parts after it are
        cancelled (outside the chain whether they landed or not) and it is raised. A cancelled
        caller leaves the parts going (a handler cancelled mid-body still stores what arrived)."""
        while len(self._inflight) > keep:
            batch, task = self._inflight[0]
            try:
                part = await asyncio.shield(task)
            except BaseException as exc:
                if not task.done():
                    raise  # this session's task was cancelled, not the part: ``aclose`` settles it
                await self._fail(exc)
                raise
            self._inflight.popleft()
            self._chain = self._chain[: len(self._chain) - len(batch.run)] + [part]
            self._stored = part.end
        if not self._inflight and self._hashing is not None:
            await asyncio.shield(self._hashing)  # the hash's size must stay the bytes it hashed
            self._hashing = None

    async def _fail(self, exc: BaseException) -> None:
        self._broken = self._broken or exc
        self.hash_state = None  # finalize re-reads the parts
        tasks = [task for _, task in self._inflight]
        if self._hashing is not None:
            tasks.append(self._hashing)
        self._inflight.clear()
        self._hashing = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accepted = self._cut_at = self._stored
        self._pending, self._pending_bytes = [], 0


async def _hash_after(previous: "asyncio.Future[None] | None", state: HashState, chunks: list[bytes]) -> None:
    """Add ``chunks`` to the running hash after ``previous`` did (log order), in a worker thread
    (sha256 releases the GIL: the event loop keeps receiving meanwhile)."""
    if previous is not None:
        await previous

    def update() -> None:
        for chunk in chunks:
            state.hasher.update(chunk)

    await asyncio.to_thread(update)
    state.size += sum(len(c) for c in chunks)


class _ObjectView:
    """``logrows.IndexedLog`` over the objects of one log, the first ``size`` bytes of the listing it
    was made from. Used from a worker thread; every fetch runs on the event loop
    (``S3BlobStore._blocking``).

    Records come from the chain's index objects (fetched whole, a few KiB each), bytes from its
    parts. If a part or an index object is gone (a later append merged its run), the view lists
    again: the same bytes and the same record numbering, from fewer objects. A log composed by an
    older gateway reads records from ``log.idx`` a page of ``_INDEX_PAGE`` at a time, bytes from
    ``log.txt``.
    """

    def __init__(self, store: S3BlobStore, execution: str, size: int, listing: _Listing) -> None:
        self._store = store
        self._execution = execution
        self.size = size
        self._pages: dict[int, list[IndexRecord]] = {}
        self._load(listing)
        self._count = self._listed_count

    def _load(self, listing: _Listing) -> None:
        self._pages.clear()
        self._composed = listing.composed
        if self._composed:
            self._listed_count = listing.files.get("log.idx", 0) // RECORD_SIZE
            return
        self._parts = listing.parts
        self._part_starts = [p.offset for p in listing.parts]
        #: (name of the part, index of its first record), for parts with index objects.
        self._index_objects: list[tuple[str, int]] = []
        first = 0
        index = listing.index
        for part in listing.parts:
            n = index.get(part.name, 0) // RECORD_SIZE
            if n and part.offset < self.size:
                self._index_objects.append((part.name, first))
                first += n
        self._index_firsts = [f for _, f in self._index_objects]
        self._listed_count = first

    def _relisted(self, attempt: int) -> None:
        """After a fetch found an object gone: list again (bounded; then it is gone for good)."""
        if attempt == _RELIST:
            raise _Missing(self._execution)
        listing = self._store._blocking(self._store._list(self._execution))
        if not listing.exists:
            raise _Missing(self._execution)
        self._load(listing)

    def record_count(self) -> int:
        # A log whose first part carries no record cannot exist (the first line starts at 0), but a
        # reader racing a crash could see bytes without records: read them as one segment.
        return self._count if self._count or not self.size else 1

    def record(self, i: int) -> IndexRecord:
        if not self._count:
            return IndexRecord(0, 0, 0)
        for attempt in range(_RELIST + 1):
            try:
                return self._composed_record(i) if self._composed else self._part_record(i)
            except _Missing:
                self._relisted(attempt)
        raise AssertionError("unreachable")

    def _composed_record(self, i: int) -> IndexRecord:
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

    def _part_record(self, i: int) -> IndexRecord:
        j = bisect.bisect_right(self._index_firsts, i) - 1
        name, first = self._index_objects[j]
        records = self._pages.get(j)
        if records is None:
            raw = self._store._blocking(self._store._get(self._store._key(self._execution, _index(name))))
            records = [IndexRecord.unpack(raw[k : k + RECORD_SIZE]) for k in range(0, len(raw), RECORD_SIZE)]
            self._remember(j, records)
        return records[i - first]

    def _remember(self, key: int, records: list[IndexRecord]) -> None:
        if len(self._pages) >= 64:
            self._pages.pop(next(iter(self._pages)))
        self._pages[key] = records

    def read(self, offset: int, n: int) -> bytes:
        end = min(self.size, offset + n)
        if offset >= end:
            return b""
        for attempt in range(_RELIST + 1):
            try:
                if self._composed:
                    return self._store._blocking(self._store._get(self._store._key(self._execution, "log.txt"), offset, end))
                return self._store._blocking(self._read_parts(offset, end))
            except _Missing:
                self._relisted(attempt)
        raise AssertionError("unreachable")

    async def _read_parts(self, start: int, end: int) -> bytes:
        out = []
        j = bisect.bisect_right(self._part_starts, start) - 1
        pos = start
        while pos < end and j < len(self._parts):
            part = self._parts[j]
            stop = min(end, part.end)
            out.append(await self._store._get(self._store._key(self._execution, _part(part.name)), pos - part.offset, stop - part.offset))
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

