"""The operations endpoints: /metrics on one port, /healthz and /readyz on another.

/healthz answers as long as the event loop runs. /readyz answers 200 once every informer cache
has synced (a replica that is not the leader is still ready: it is a warm standby).
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controller.settings import OpsSettings


class OpsServer:
    def __init__(self, settings: OpsSettings, registry: CollectorRegistry, ready: Callable[[], bool]):
        self._settings = settings
        self._registry = registry
        self._ready = ready
        self._runners: list[web.AppRunner] = []
        self.bound_ports: dict[str, int] = {}

    async def start(self) -> None:
        metrics = web.Application()
        metrics.router.add_get("/metrics", self._metrics)
        health = web.Application()
        health.router.add_get("/healthz", self._healthz)
        health.router.add_get("/readyz", self._readyz)
        for name, app, port in (("metrics", metrics, self._settings.metrics_port),
                                ("health", health, self._settings.health_port)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self._settings.bind_host, port)
            await site.start()
            self._runners.append(runner)
            self.bound_ports[name] = runner.addresses[0][1]

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="informer caches not synced\n")
