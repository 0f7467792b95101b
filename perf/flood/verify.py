"""Every stored log, read back from where it landed and hashed: the gateway's raw log endpoint,
or the operator's log directory. Not a sample: each execution whose log the operator reports
stored is read in full.

``Verifier`` owns its queue and workers; it writes only the landed/verified fields of the
``Execution`` it is handed.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp

from perf.flood.tracker import Execution, TaskInfo

CHUNK = 1 << 20


class Verifier:
    def __init__(self, tasks: dict[str, TaskInfo], *, gateway_url: str | None = None, log_dir: Path | None = None,
                 workers: int = 2) -> None:
        self.tasks = tasks
        self.gateway_url = gateway_url
        self.log_dir = log_dir
        self.queue: asyncio.Queue[Execution] = asyncio.Queue()
        self.workers = workers
        self.bytes_read = 0

    def submit(self, execution: Execution) -> None:
        if execution.log_state == "stored":
            self.queue.put_nowait(execution)

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as http:
            await asyncio.gather(*(self._worker(http) for _ in range(self.workers)))

    async def _worker(self, http: aiohttp.ClientSession) -> None:
        while True:
            execution = await self.queue.get()
            try:
                size, sha = await self._landed(http, execution.name)
                expected = self.tasks[execution.task].expected
                execution.landed_size, execution.landed_sha256 = size, sha
                execution.verified = (size == expected.size == execution.log_size
                                      and sha == expected.sha256 == execution.log_sha256)
                if not execution.verified:
                    execution.verify_error = (f"landed {size} B {sha[:12]}, pod wrote {expected.size} B "
                                              f"{expected.sha256[:12]}, status says {execution.log_size} B "
                                              f"{(execution.log_sha256 or '')[:12]}")
            except Exception as exc:  # noqa: BLE001  (recorded on the execution: a failed verification)
                execution.verified = False
                execution.verify_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.queue.task_done()

    async def _landed(self, http: aiohttp.ClientSession, execution: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        if self.gateway_url:
            async with http.get(f"{self.gateway_url}/v1/tasks/{execution}/logs/raw") as response:
                if response.status != 200:
                    raise RuntimeError(f"gateway answered {response.status} for {execution}'s log")
                async for chunk in response.content.iter_chunked(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    self.bytes_read += len(chunk)
            return size, digest.hexdigest()
        path = self.log_dir / "tasks" / execution / "log.txt"

        def read() -> tuple[int, str]:
            nonlocal size
            with path.open("rb") as f:
                while block := f.read(CHUNK):
                    digest.update(block)
                    size += len(block)
            return size, digest.hexdigest()

        result = await asyncio.to_thread(read)
        self.bytes_read += result[0]
        return result
