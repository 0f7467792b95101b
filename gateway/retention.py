"""Retention: the sweeper that removes expired records together with their log blobs.

A record expires ``ttl`` after its last write (``expires_ms``, pushed forward by every upsert and
log upload). For each expired name the sweeper, holding the blob store's lock for that execution,
deletes the record if it is still expired and only then the blob: an upload in flight touches the
record under the same lock, so it either makes the record live again (nothing is removed) or
starts after the removal (and begins a new log). A crash between the two deletes leaves a blob
without a record: bytes on disk, never a record pointing at a removed log.

The sweeper is one background task owned by the server: started on startup, cancelled and awaited
on shutdown. Time comes from the injected clock, so tests step it instead of waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.blobs import BlobStore
from gateway.clock import Clock, now_ms
from gateway.metrics import Metrics
from gateway.records import RecordStore
from gateway.settings import RetentionSettings


class Sweeper:
    def __init__(
        self,
        records: RecordStore,
        blobs: BlobStore,
        clock: Clock,
        settings: RetentionSettings,
        metrics: Metrics,
        logger: Any,
    ) -> None:
        self._records = records
        self._blobs = blobs
        self._clock = clock
        self._settings = settings
        self._metrics = metrics
        self._log = logger

    async def run(self) -> None:
        """Sweep every ``sweep_interval_seconds`` until cancelled. A failed sweep is logged and
        retried at the next interval; it never ends the loop."""
        while True:
            await self._clock.sleep(self._settings.sweep_interval_seconds)
            try:
                removed = await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a sweep must not kill the loop
                self._metrics.retention_sweeps.labels(result="error").inc()
                self._log.warning("retention sweep failed", error=str(exc), error_type=type(exc).__name__)
            else:
                self._metrics.retention_sweeps.labels(result="ok").inc()
                if removed:
                    self._log.info("retention sweep", removed=removed)

    async def sweep_once(self) -> int:
        """Remove every record (and blob) expired now; returns how many records went."""
        now = now_ms(self._clock)
        removed = 0
        seen: set[str] = set()
        while True:
            names = [n for n in await self._records.expired(now, self._settings.batch_size) if n not in seen]
            if not names:
                return removed
            for name in names:
                seen.add(name)
                gone = False

                async def delete_record(name: str = name) -> bool:
                    nonlocal gone
                    gone = await self._records.delete([name], now) == 1
                    return gone

                had_blob = await self._blobs.delete(name, only_if=delete_record)
                if gone:
                    removed += 1
                    self._metrics.retention_removed.labels(what="record").inc()
                    if had_blob:
                        self._metrics.retention_removed.labels(what="blob").inc()
