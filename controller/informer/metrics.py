"""Informer health metrics: relists, watch restarts by reason, failing handlers.

``InformerMetrics`` is the seam and records nothing; ``PrometheusInformerMetrics`` records into the
``CollectorRegistry`` it is given (no global registry). One instance can serve many informers: the
``informer`` label tells them apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

WATCH_RESTART_REASONS = ("closed", "expired", "silence", "error")
"""Why a watch was re-opened: the server ended it (normally on timeout); 410 Gone, so the
informer relisted; the watchdog heard nothing for ``silence_timeout``; an error (backed off)."""


class InformerMetrics:
    """Records nothing; the default."""

    def relisted(self, informer: str) -> None:
        """A full list completed and replaced the cache."""

    def watch_restarted(self, informer: str, reason: str) -> None:
        """A watch ended and will be re-opened; ``reason`` is one of ``WATCH_RESTART_REASONS``."""

    def handler_failed(self, informer: str) -> None:
        """An event handler raised; the event was still delivered to the other handlers."""


class PrometheusInformerMetrics(InformerMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.relists = Counter(
            "informer_relists_total",
            "Full lists that replaced an informer's cache (the first sync included).",
            ["informer"],
            registry=registry,
        )
        self.watch_restarts = Counter(
            "informer_watch_restarts_total",
            "Watches re-opened, by reason (closed, expired, silence, error).",
            ["informer", "reason"],
            registry=registry,
        )
        self.handler_errors = Counter(
            "informer_handler_errors_total",
            "Exceptions raised by informer event handlers.",
            ["informer"],
            registry=registry,
        )

    def relisted(self, informer: str) -> None:
        self.relists.labels(informer=informer).inc()

    def watch_restarted(self, informer: str, reason: str) -> None:
        self.watch_restarts.labels(informer=informer, reason=reason).inc()

    def handler_failed(self, informer: str) -> None:
        self.handler_errors.labels(informer=informer).inc()
