"""Lease-based leader election (client-go ``tools/leaderelection`` semantics).

One ``coordination.k8s.io/v1`` Lease names the leader. A candidate takes the Lease when it is
free or when it has not changed for ``lease_duration`` *as observed by this process's own clock*
(never by comparing the holder's timestamps with ours, so clock skew between machines cannot make
two leaders). Every write carries the Lease's resourceVersion, so two candidates racing for it
cannot both win: the loser gets 409 and tries again later.

The timing invariant (why two replicas never reconcile at once)::

    t0 = start of the leader's last successful acquire/renew attempt (its GET, before its PUT)

    another replica can take the Lease only after it has seen our last write unchanged for
    lease_duration, and it cannot see that write before it happened, so no earlier than
        t0 + lease_duration                                          (on its clock)
    this replica stops leading at the latest at
        t0 + renew_deadline                                          (on ours)
    and its workers are cancelled and awaited within the margin
        lease_duration - renew_deadline                              (5 s by default)

Hence every attempt is bounded (client-go's ``RenewDeadline``): an attempt may only run until
``t0 + renew_deadline``. A GET or PUT that hangs (a frozen connection, an API server that accepts
and never answers) is abandoned there, not after the HTTP client's own request timeout (30 s,
twice, for GET then PUT), and a late answer never extends leadership: success counts from the
attempt's *start*. Waits between attempts never run past the deadline either. ``lead(work)``
runs the workers, cancels them as soon as leadership is lost and waits up to the margin for them
to end. The margin also absorbs clock-rate differences between machines (not offsets: nothing
compares timestamps across machines). A renewal that timed out here may still have been applied by
the server; that only makes us stop early, never late.

The leader renews every ``retry_period``, a candidate retries as often (a fixed
``BackoffPolicy``). On a clean shutdown the leader releases the Lease so a standby takes over at
once instead of after a full lease duration; the caller exits after losing leadership, as
client-go's ``OnStoppedLeading`` usually does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from controller.clock import Clock
from controller.kube import AlreadyExists, Conflict, KubeClient, KubeError, NotFound
from controller.kube.resources import LEASES
from controller.retry import Backoff, BackoffPolicy
from controller.settings import LeaderElectionSettings

RELEASE_TIMEOUT_SECONDS = 5.0

log = structlog.get_logger(__name__)

T = TypeVar("T")


def _micro_time(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Observed:
    holder: str
    resource_version: str
    at: float  # our monotonic time when we last saw the Lease change


class LeaderElector:
    def __init__(self, client: KubeClient, settings: LeaderElectionSettings, clock: Clock):
        if settings.renew_deadline_seconds >= settings.lease_duration_seconds:
            raise ValueError("renew deadline must be shorter than the lease duration")
        if settings.retry_period_seconds >= settings.renew_deadline_seconds:
            raise ValueError("the retry period must be shorter than the renew deadline")
        self._client = client
        self._settings = settings
        self._clock = clock
        self._retry = Backoff(BackoffPolicy(initial=settings.retry_period_seconds,
                                            maximum=settings.retry_period_seconds, factor=1, jitter=0),
                              clock)
        # The last Lease record seen and when; written only by the acquire/renew loop.
        self._observed: _Observed | None = None
        self._lease: dict | None = None
        # Monotonic start of the last successful acquire/renew attempt ("t0" in the module
        # docstring): leadership ends at the latest renew_deadline after it. Written by the
        # acquire/renew loop only.
        self._renewed_at: float | None = None
        self.is_leader = False

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        s = self._settings
        log.info("waiting for leadership", lease=f"{s.lease_namespace}/{s.lease_name}", identity=s.identity)
        while True:
            started = self._clock.monotonic()
            if await self._attempt(started + s.renew_deadline_seconds):
                break
            await self._clock.sleep(self._retry.next() or s.retry_period_seconds)
        self._retry.reset()
        self._renewed_at = started
        self.is_leader = True
        log.info("became leader", identity=s.identity)

    @property
    def deadline(self) -> float | None:
        """Monotonic time by which this replica stops leading unless it renews (None: not leading)."""
        if not self.is_leader or self._renewed_at is None:
            return None
        return self._renewed_at + self._settings.renew_deadline_seconds

    async def hold(self) -> None:
        """Renew every ``retry_period``; return when leadership is lost, which is at the latest
        ``renew_deadline`` after the start of the last successful attempt (module docstring)."""
        s = self._settings
        while True:
            deadline = self.deadline
            if deadline is None:
                return
            now = self._clock.monotonic()
            if now < deadline:
                await self._clock.sleep(min(s.retry_period_seconds, deadline - now))
            started = self._clock.monotonic()
            if started >= deadline:
                self.is_leader = False
                log.error("lost leadership: could not renew the lease within the renew deadline",
                          identity=s.identity, renew_deadline=s.renew_deadline_seconds)
                return
            if await self._attempt(deadline):
                self._renewed_at = started
            elif self._observed is not None and self._observed.holder not in ("", s.identity):
                self.is_leader = False  # another replica holds it already: no point waiting
                log.error("lost leadership: the lease is held by another replica",
                          identity=s.identity, holder=self._observed.holder)
                return

    async def lead(self, work: Awaitable[Any]) -> bool:
        """Run ``work`` while this replica leads (after ``acquire``), renewing meanwhile.

        When leadership is lost ``work`` is cancelled at once and awaited for at most the margin
        ``lease_duration - renew_deadline``, so it has stopped before another replica may take
        the Lease; then this returns True. If ``work`` ends first, renewing stops and this
        returns False (or raises what ``work`` raised). Cancelling ``lead`` cancels both.
        """
        working = asyncio.ensure_future(work)
        holding = asyncio.ensure_future(self.hold())
        try:
            await asyncio.wait({working, holding}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not holding.done():
                holding.cancel()
            if not working.done():
                working.cancel()
                margin = self._settings.lease_duration_seconds - self._settings.renew_deadline_seconds
                if await self._within(asyncio.wait({working}), margin) is None:
                    log.error("workers still running when the lease may expire",
                              identity=self._settings.identity)
            await asyncio.gather(holding, return_exceptions=True)
        if holding.done() and not holding.cancelled():
            holding.result()  # raises what hold() raised
            return True
        working.result()
        return False

    async def release(self) -> None:
        """Give the Lease up so another replica need not wait for it to expire."""
        if not self.is_leader or self._lease is None:
            return
        self.is_leader = False
        body = dict(self._lease)
        body["spec"] = dict(body.get("spec") or {}, holderIdentity=None, leaseDurationSeconds=1,
                            renewTime=_micro_time(self._clock))
        try:
            # Bounded: after a network freeze the pooled connection may be dead, and waiting out
            # the client's request timeout would hold up shutdown; the Lease expires anyway.
            await asyncio.wait_for(
                self._client.replace(LEASES, body["metadata"]["name"], body,
                                     namespace=self._settings.lease_namespace),
                RELEASE_TIMEOUT_SECONDS)
            log.info("released leadership", identity=self._settings.identity)
        except (KubeError, asyncio.TimeoutError) as exc:
            log.warning("could not release the lease; it expires by itself", error=repr(exc))

    async def _attempt(self, deadline: float) -> bool:
        """One acquire or renew (GET, then create or PUT), abandoned at ``deadline``."""
        done = await self._within(self._try_acquire_or_renew(), deadline - self._clock.monotonic())
        if done is None:
            log.warning("lease request abandoned at the renew deadline", identity=self._settings.identity)
        return bool(done)

    async def _within(self, aw: Awaitable[T], seconds: float) -> T | None:
        """``aw``'s result if it ends within ``seconds`` of the clock; else cancel it and return
        None once it has ended."""
        task = asyncio.ensure_future(aw)
        timer: asyncio.Future[None] | None = None
        try:
            if seconds > 0:
                timer = asyncio.ensure_future(self._clock.sleep(seconds))
                await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return None
        return task.result()

    async def _try_acquire_or_renew(self) -> bool:
        s = self._settings
        now = _micro_time(self._clock)
        try:
            lease = await self._client.get(LEASES, s.lease_name, namespace=s.lease_namespace)
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.lease_name, "namespace": s.lease_namespace},
                "spec": {
                    "holderIdentity": s.identity,
                    "leaseDurationSeconds": int(s.lease_duration_seconds),
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                self._lease = await self._client.create(LEASES, body, namespace=s.lease_namespace)
            except (AlreadyExists, Conflict):
                return False
            except KubeError as exc:
                log.warning("lease create failed", error=str(exc))
                return False
            self._observe(self._lease)
            return True
        except KubeError as exc:
            log.warning("lease read failed", error=str(exc))
            return False

        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(lease)
        held_by_other = holder not in ("", s.identity)
        if held_by_other:
            duration = float(spec.get("leaseDurationSeconds") or s.lease_duration_seconds)
            if self._clock.monotonic() - self._observed.at < duration:
                return False  # another replica leads and its Lease is fresh

        new_spec = dict(spec)
        new_spec["holderIdentity"] = s.identity
        new_spec["leaseDurationSeconds"] = int(s.lease_duration_seconds)
        new_spec["renewTime"] = now
        if holder != s.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        body = dict(lease)
        body["spec"] = new_spec
        try:
            self._lease = await self._client.replace(LEASES, s.lease_name, body, namespace=s.lease_namespace)
        except Conflict:
            return False  # someone else wrote it first; look again next round
        except KubeError as exc:
            log.warning("lease update failed", error=str(exc))
            return False
        self._observe(self._lease)
        return True

    def _observe(self, lease: dict) -> None:
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        version = lease["metadata"].get("resourceVersion", "")
        if self._observed is None or self._observed.resource_version != version:
            self._observed = _Observed(holder, version, self._clock.monotonic())

