"""``BlobStore`` on a local directory (the embedded default; a PersistentVolume in a pod).

Layout under the root::

    tasks/<execution>/log.txt    the log, byte-identical to what the container wrote
    tasks/<execution>/log.idx    its line index (``logindex``), appended as the log grows
    tasks/<execution>/log.done   {"size", "sha256"} once finalize verified them (sealed)
    tasks/<execution>/log.cursor the uploader's opaque resume cursor (X-Log-Cursor), replaced
                                 atomically after the bytes it describes are fsynced

All file I/O runs in the store's own small thread pool, never on the event loop; the event loop
only hands over batches of 2 MiB, at most one being written while the next fills, so memory per
upload is bounded by two batches (plus aiohttp's read buffer) whatever the size of the log.

Checksums: the sha256 is computed incrementally as bytes are appended and kept in memory (an
LRU of a few hundred bytes per execution) between the PUTs of one log. ``finalize`` uses it when
its byte count equals the file's size; after a gateway restart (or an eviction) it streams the file
once instead. Either way the check is against the bytes on disk as the gateway holds them.

Concurrency: one asyncio lock per execution serialises appends, finalize and delete of that
execution within this process. Alone (SQLite, one replica) that is the whole story. Several
replicas on one shared directory (PostgreSQL) go through ``blobs_ledger``, whose database lock makes
the session exclusive across processes and which passes ``append`` the acknowledged size: a
longer file is cut back to it (``ledger.start_decision``; the index follows in
``_recover_index``). Readers take no lock: they snapshot the file size first and ignore index
records past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Awaitable, Callable

from gateway.blobs import LogStat
from gateway.blobs_shared import ExecutionLocks, HashCache, HashState
from gateway.errors import ChecksumMismatch, Conflict, PayloadTooLarge, Unavailable
from gateway.ledger import Start, start_decision
from gateway.logindex import RECORD_SIZE, IndexBuilder, IndexRecord, valid_prefix
from gateway.logrows import RowPage, RowQuery, query_rows

FLUSH_BYTES = 2 << 20
READ_CHUNK = 256 << 10
_RECOVER_WINDOW = 1 << 20


class LocalBlobStore:
    def __init__(self, root: str, *, fsync: bool = True, max_log_bytes: int = 16 << 30, lock_timeout: float = 5.0, threads: int = 4) -> None:
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.max_log_bytes = max_log_bytes
        self.lock_timeout = lock_timeout
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        #: Per-execution locks and running hashes (``blobs_shared``), kept between requests.
        self._locks = ExecutionLocks()
        self._hashes = HashCache()

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        os.makedirs(os.path.join(self.root, "tasks"), exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="gateway-blobs")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            raise Unavailable("the blob store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except OSError as exc:  # disk full, permissions, I/O error: storage cannot serve now (503)
            raise Unavailable(f"blob storage error: {exc.strerror or exc}") from exc

    def _dir(self, execution: str) -> str:
        # ``execution`` is a validated DNS-1123 name (model.check_name): no separators, no '..'.
        return os.path.join(self.root, "tasks", execution)

    # --- appending ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def append(self, execution: str, acknowledged: int | None = None) -> AsyncIterator["_Appender"]:
        async with self._locks.hold(execution, self.lock_timeout):
            state = self._hashes.take(execution)
            appender = _Appender(self, execution)
            try:
                await self._run(appender.open_sync, state, acknowledged)
            except BaseException:
                await asyncio.shield(self._run(appender.abandon_sync))
                raise
            try:
                yield appender
            finally:
                # Shielded: a cancelled handler (client gone, shutdown) still flushes what arrived.
                await asyncio.shield(appender.aclose())
                if appender.hash_state is not None:
                    self._hashes.put(execution, appender.hash_state)

    # --- finalize ----------------------------------------------------------------------------

    async def finalize(self, execution: str, size: int, sha256: str | None) -> LogStat:
        async with self._locks.hold(execution, self.lock_timeout):
            state = self._hashes.peek(execution)
            return await self._run(self._finalize_sync, execution, size, sha256.lower() if sha256 else None, state)

    def _finalize_sync(self, execution: str, size: int, sha256: str | None, state: HashState | None) -> LogStat:
        base = self._dir(execution)
        stored = _file_size(os.path.join(base, "log.txt"))
        sealed = _read_done(base)
        cursor = _read_cursor(base)
        if sealed is not None:
            if sealed["size"] == size and sha256 in (None, sealed["sha256"]):
                return LogStat(size, True, sealed["sha256"], cursor)
            raise ChecksumMismatch(
                "the log is already finalized with another size or checksum",
                size=sealed["size"], sha256=sealed["sha256"],
            )
        if stored != size:
            raise ChecksumMismatch(
                f"finalize says {size} bytes but the gateway holds {stored}", code="size_mismatch", size=stored
            )
        if state is not None and state.size == stored:
            digest = state.hasher.hexdigest()
        else:
            digest = _hash_file(os.path.join(base, "log.txt"))
        if sha256 is not None and digest != sha256:
            raise ChecksumMismatch("sha256 of the stored bytes differs", size=stored, sha256=digest)
        os.makedirs(base, exist_ok=True)
        if stored == 0:  # a container that wrote nothing still has a (sealed, empty) log
            open(os.path.join(base, "log.txt"), "ab").close()
        tmp = os.path.join(base, "log.done.tmp")
        with open(tmp, "w") as f:
            json.dump({"size": size, "sha256": digest}, f)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(base, "log.done"))
        return LogStat(size, True, digest, cursor)

    # --- reading -----------------------------------------------------------------------------

    async def stat(self, execution: str) -> LogStat | None:
        return await self._run(self._stat_sync, execution)

    def _stat_sync(self, execution: str) -> LogStat | None:
        base = self._dir(execution)
        try:
            size = os.stat(os.path.join(base, "log.txt")).st_size
        except FileNotFoundError:
            return None
        sealed = _read_done(base)
        return LogStat(size, sealed is not None, sealed["sha256"] if sealed else None, _read_cursor(base))

    async def rows(
        self, execution: str, query: RowQuery, *, max_row_bytes: int, max_response_bytes: int
    ) -> RowPage | None:
        return await self._run(self._rows_sync, execution, query, max_row_bytes, max_response_bytes)

    def _rows_sync(self, execution: str, query: RowQuery, max_row_bytes: int, max_response_bytes: int) -> RowPage | None:
        view = _FileView.open(self._dir(execution))
        if view is None:
            return None
        with view:
            return query_rows(view, query, max_row_bytes=max_row_bytes, max_response_bytes=max_response_bytes)

    async def read_raw(self, execution: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = os.path.join(self._dir(execution), "log.txt")
        fd = await self._run(os.open, path, os.O_RDONLY)
        try:
            pos = start
            while pos < end:
                chunk = await self._run(os.pread, fd, min(READ_CHUNK, end - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    # --- deleting ----------------------------------------------------------------------------

    async def delete(self, execution: str, *, only_if: Callable[[], Awaitable[bool]] | None = None) -> bool:
        async with self._locks.hold(execution, None):
            if only_if is not None and not await only_if():
                return False
            self._hashes.drop(execution)
            return await self._run(self._delete_sync, execution)

    def _delete_sync(self, execution: str) -> bool:
        base = self._dir(execution)
        if not os.path.isdir(base):
            return False
        shutil.rmtree(base, ignore_errors=True)
        return True


class _Appender:
    """One append session, created, used and closed by the task holding the execution's lock.

    Two sides: the event loop accepts chunks into ``_pending``; the store's thread pool writes
    batches (log bytes, index records, checksum). At most one batch is in flight while the next
    one fills, so reading the network overlaps with writing the disk, and memory stays at two
    batches. The ``*_sync`` methods run in the pool strictly one after another (each is awaited
    before the next starts), so the fields they own -- fds, builder, hash, ``_stored`` -- are never
    touched by two threads at once."""

    def __init__(self, store: LocalBlobStore, execution: str) -> None:
        self._store = store
        self._dir = store._dir(execution)
        self._fd = -1
        self._idx_fd = -1
        #: Bytes on disk (written by batches). Owned by the pool side.
        self._stored = 0
        #: Bytes accepted: on disk + in flight + pending. Owned by the event loop side.
        self._accepted = 0
        #: Chunks accepted but not yet handed to a batch, with their timestamps (< FLUSH_BYTES).
        self._pending: list[tuple[bytes, int]] = []
        self._pending_bytes = 0
        #: The batch being written, if any.
        self._inflight: asyncio.Future[None] | None = None
        self._builder = IndexBuilder()
        self.hash_state: HashState | None = None

    @property
    def size(self) -> int:
        return self._accepted

    async def write(self, data: bytes, ts_ms: int) -> None:
        if not data:
            return
        if self._accepted + len(data) > self._store.max_log_bytes:
            raise PayloadTooLarge(f"the log would exceed {self._store.max_log_bytes} bytes", size=self._accepted)
        self._pending.append((data, ts_ms))
        self._pending_bytes += len(data)
        self._accepted += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            await self._drain()
            self._inflight = asyncio.ensure_future(self._store._run(self._write_batch_sync, self._take()))

    def _take(self) -> list[tuple[bytes, int]]:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        return batch

    async def _drain(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def sync(self) -> int:
        await self._drain()
        await self._store._run(self._sync_sync, self._take())
        return self._stored

    async def commit_cursor(self, cursor: str) -> None:
        await self._store._run(self._commit_cursor_sync, cursor)

    def _commit_cursor_sync(self, cursor: str) -> None:
        tmp = os.path.join(self._dir, "log.cursor.tmp")
        with open(tmp, "w") as f:
            f.write(cursor)
            f.flush()
            if self._store.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self._dir, "log.cursor"))

    async def aclose(self) -> None:
        """Write what was accepted, fsync, close the files (also after an error or cancel)."""
        try:
            await self._drain()
        finally:
            await self._store._run(self.close_sync, self._take())

    def _sync_sync(self, batch: list[tuple[bytes, int]]) -> None:
        self._write_batch_sync(batch)
        if self._store.fsync:
            os.fsync(self._fd)
            os.fsync(self._idx_fd)

    def open_sync(self, state: HashState | None, acknowledged: int | None) -> None:
        os.makedirs(self._dir, exist_ok=True)
        if os.path.exists(os.path.join(self._dir, "log.done")):
            size = _file_size(os.path.join(self._dir, "log.txt"))
            raise Conflict("the log is finalized and takes no more bytes", code="log_finalized", size=size)
        self._fd = os.open(os.path.join(self._dir, "log.txt"), os.O_RDWR | os.O_CREAT, 0o644)
        self._idx_fd = os.open(os.path.join(self._dir, "log.idx"), os.O_RDWR | os.O_CREAT, 0o644)
        self._stored = os.fstat(self._fd).st_size
        start = start_decision(self._stored, acknowledged)
        if start.action is Start.LOST:
            raise Unavailable(
                f"the log holds {self._stored} bytes but {acknowledged} were acknowledged: the blob "
                "directory lost bytes (is it the volume every replica shares?)"
            )
        if start.action is Start.CUT:  # a dead replica's unacknowledged tail (``gateway.ledger``)
            os.ftruncate(self._fd, start.size)
            if self._store.fsync:
                os.fsync(self._fd)
            self._stored = start.size
        self._accepted = self._stored
        self._recover_index()
        if state is not None and state.size == self._stored:
            self.hash_state = state
        elif self._stored == 0:
            self.hash_state = HashState(0, hashlib.sha256())
        # else: the in-memory hash is gone (restart) or stale; finalize re-reads the file.

    def _recover_index(self) -> None:
        """Make log.idx agree with log.txt: drop records past the log's end (a torn write), then
        rebuild the builder from the last record by re-reading at most one block plus a line."""
        idx_size = os.fstat(self._idx_fd).st_size
        count = idx_size // RECORD_SIZE

        def get(i: int) -> IndexRecord:
            return IndexRecord.unpack(os.pread(self._idx_fd, RECORD_SIZE, i * RECORD_SIZE))

        valid = valid_prefix(get, count, self._stored)
        if valid * RECORD_SIZE != idx_size:
            os.ftruncate(self._idx_fd, valid * RECORD_SIZE)
        if self._stored == 0:
            self._builder = IndexBuilder()
            return
        if valid == 0:
            self._builder = IndexBuilder()
            ts = int(os.fstat(self._fd).st_mtime * 1000)
            start = 0
        else:
            last = get(valid - 1)
            self._builder = IndexBuilder.resume(last)
            ts = last.ts_ms
            start = last.offset
        records: list[IndexRecord] = []
        pos = start
        while pos < self._stored:
            data = os.pread(self._fd, min(_RECOVER_WINDOW, self._stored - pos), pos)
            if not data:
                break
            records += self._builder.feed(data, ts)
            pos += len(data)
        if records:
            os.pwrite(self._idx_fd, b"".join(r.pack() for r in records), valid * RECORD_SIZE)

    def _write_batch_sync(self, batch: list[tuple[bytes, int]]) -> None:
        if not batch:
            return
        data = b"".join(chunk for chunk, _ in batch)
        records: list[IndexRecord] = []
        for chunk, ts in batch:
            records += self._builder.feed(chunk, ts)
        view = memoryview(data)
        written = 0
        while written < len(data):  # pwrite may be partial
            written += os.pwrite(self._fd, view[written:], self._stored + written)
        # The log first, then its index: a crash between the two leaves records missing (rebuilt
        # on reopen), never records pointing at bytes that are not there.
        if records:
            idx_end = os.fstat(self._idx_fd).st_size
            os.pwrite(self._idx_fd, b"".join(r.pack() for r in records), idx_end)
        if self.hash_state is not None:
            self.hash_state.hasher.update(data)
            self.hash_state.size += len(data)
        self._stored += len(data)

    def abandon_sync(self) -> None:
        """Close the files of a session that failed to open; writes nothing."""
        self._pending = []
        self._fd, fd = -1, self._fd
        self._idx_fd, idx_fd = -1, self._idx_fd
        for f in (fd, idx_fd):
            if f >= 0:
                os.close(f)

    def close_sync(self, batch: list[tuple[bytes, int]]) -> None:
        try:
            if self._fd >= 0:
                self._write_batch_sync(batch)
                if self._store.fsync:
                    os.fsync(self._fd)
                    os.fsync(self._idx_fd)
        finally:
            for fd in (self._fd, self._idx_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._idx_fd = -1


class _FileView:
    """``logrows.IndexedLog`` over log.txt + log.idx, fixed at the size seen when opened."""

    def __init__(self, fd: int, idx_fd: int, size: int, count: int, mtime_ms: int) -> None:
        self._fd = fd
        self._idx_fd = idx_fd
        self.size = size
        self._count = count
        self._mtime_ms = mtime_ms
        self._cache: dict[int, IndexRecord] = {}

    @classmethod
    def open(cls, base: str) -> "_FileView | None":
        try:
            fd = os.open(os.path.join(base, "log.txt"), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            idx_fd = os.open(os.path.join(base, "log.idx"), os.O_RDONLY)
        except FileNotFoundError:
            idx_fd = -1
        except BaseException:
            os.close(fd)
            raise
        size = st.st_size
        count = 0
        if idx_fd >= 0:
            count = os.fstat(idx_fd).st_size // RECORD_SIZE
        view = cls(fd, idx_fd, size, count, int(st.st_mtime * 1000))
        view._count = valid_prefix(view._raw_record, count, size) if count else 0
        return view

    def __enter__(self) -> "_FileView":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)
        if self._idx_fd >= 0:
            os.close(self._idx_fd)

    def _raw_record(self, i: int) -> IndexRecord:
        return IndexRecord.unpack(os.pread(self._idx_fd, RECORD_SIZE, i * RECORD_SIZE))

    def record_count(self) -> int:
        # A reader racing the very first flush can see bytes before their first record; the log
        # then reads as one segment from 0.
        return self._count if self._count or not self.size else 1

    def record(self, i: int) -> IndexRecord:
        if not self._count:
            return IndexRecord(0, 0, self._mtime_ms)
        rec = self._cache.get(i)
        if rec is None:
            rec = self._raw_record(i)
            if len(self._cache) < 4096:
                self._cache[i] = rec
        return rec

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self._fd, n, offset)


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _read_done(base: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(base, "log.done")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _read_cursor(base: str) -> str | None:
    try:
        with open(os.path.join(base, "log.cursor")) as f:
            return f.read() or None
    except FileNotFoundError:
        return None


def _hash_file(path: str) -> str:
    hasher = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(FLUSH_BYTES):
                hasher.update(chunk)
    except FileNotFoundError:
        pass
    return hasher.hexdigest()
