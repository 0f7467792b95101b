"""Lease-based leader election (client-go ``tools/leaderelection`` semantics).

One ``coordination.k8s.io/v1`` Lease names the leader. A candidate takes the Lease when it is
free or when it has not changed for ``lease_duration`` *as observed by this process's own clock*
(never by comparing the holder's timestamps with ours, so clock skew between machines cannot make
two leaders). Every write carries the Lease's resourceVersion, so two candidates racing for it
cannot both win: the loser gets 409 and tries again later.

The leader renews every ``retry_period``. If it cannot renew for ``renew_deadline`` (< lease
duration) it stops leading *before* another replica may take over; the caller then exits, as
client-go's ``OnStoppedLeading`` usually does. On a clean shutdown the leader releases the Lease
so a standby takes over at once instead of after a full lease duration.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from controller.clock import Clock
from controller.kube import AlreadyExists, Conflict, KubeClient, KubeError, NotFound
from controller.kube.resources import LEASES
from controller.settings import LeaderElectionSettings

RELEASE_TIMEOUT_SECONDS = 5.0

log = structlog.get_logger(__name__)


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
        self._client = client
        self._settings = settings
        self._clock = clock
        # The last Lease record seen and when; written only by the acquire/renew loop.
        self._observed: _Observed | None = None
        self._lease: dict | None = None
        self.is_leader = False

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        s = self._settings
        log.info("waiting for leadership", lease=f"{s.lease_namespace}/{s.lease_name}", identity=s.identity)
        while not await self._try_acquire_or_renew():
            await self._clock.sleep(s.retry_period_seconds)
        self.is_leader = True
        log.info("became leader", identity=s.identity)

    async def hold(self) -> None:
        """Renew until renewal fails for ``renew_deadline``; then return (leadership is lost)."""
        s = self._settings
        last_renewed = self._clock.monotonic()
        while True:
            await self._clock.sleep(s.retry_period_seconds)
            if await self._try_acquire_or_renew():
                last_renewed = self._clock.monotonic()
                continue
            if self._clock.monotonic() - last_renewed >= s.renew_deadline_seconds:
                self.is_leader = False
                log.error("lost leadership: could not renew the lease in time", identity=s.identity)
                return

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

