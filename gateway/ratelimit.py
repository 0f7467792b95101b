"""Rate limit of failed authentications, per source address (token buckets). Pure: no I/O, no
aiohttp; time comes from the injected ``Clock``. The middlewares (``auth_http``, ``server``) ask
``retry_after`` before they look a token up and call ``failed`` after a refusal.

Policy: each source (the client's IP address as the connection shows it, ``request.remote``;
``X-Forwarded-For`` is not trusted, so behind a proxy every client shares the proxy's bucket) has
a bucket of ``burst`` tries that refills at ``per_second``. Only failed authentications (401)
take from it; a source whose bucket is empty is refused (429 with ``Retry-After``) *before* its
token is looked at, so even a right guess does not get in while it is limited. Successful
requests cost nothing, so a client with a valid token is never limited by its own traffic.

Bounded memory: at most ``max_sources`` buckets, O(1) per call. When the table is full the
least recently failed source is forgotten (a bucket that refilled is the same as none; one that
did not starts again full: an attacker spread over more than ``max_sources`` addresses gets
``burst`` tries per address per eviction cycle; the limit is against one client guessing, not a
distributed attack).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from gateway.clock import Clock


@dataclass
class _Bucket:
    tokens: float
    at: float
    """``clock.monotonic()`` when ``tokens`` was last brought up to date."""


class FailureLimiter:
    def __init__(self, *, burst: int, per_second: float, max_sources: int, clock: Clock) -> None:
        if burst < 1 or per_second <= 0 or max_sources < 1:
            raise ValueError("burst and max_sources must be at least 1 and per_second positive")
        self._burst = float(burst)
        self._rate = per_second
        self._max = max_sources
        self._clock = clock
        #: source -> its bucket, least recently failed first. Invariant: at most ``max_sources``
        #: entries; a source without an entry has a full bucket. Touched on the event loop only.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)

    def retry_after(self, source: str) -> int | None:
        """Whole seconds until ``source`` may try again, or None: it may try now."""
        bucket = self._buckets.get(source)
        if bucket is None:
            return None
        level = self._level(bucket, self._clock.monotonic())
        if level >= 1.0:
            return None
        return max(1, math.ceil((1.0 - level) / self._rate))

    def failed(self, source: str) -> None:
        """``source`` presented a missing or wrong token: one try less."""
        now = self._clock.monotonic()
        bucket = self._buckets.pop(source, None)
        level = self._burst if bucket is None else self._level(bucket, now)
        self._buckets[source] = _Bucket(max(0.0, level - 1.0), now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
