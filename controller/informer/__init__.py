"""Informers: list + watch with client-go semantics into an indexed cache of raw dicts.

- ``store``     ``Store``: objects by ``namespace/name`` plus secondary indices; no I/O, no awaits.
- ``informer``  ``Informer``: keeps a ``Store`` in step with one resource via ``controller.kube``
                (paginated list, bookmarked watch, relist on 410, backoff, watchdog, resync)
                and calls synchronous handlers with what changed.
- ``metrics``   relists, watch restarts by reason, handler failures.

Owns no policy about what the objects mean; it never writes to the API server and never reaches it
except through ``KubeClient``.
"""

from controller.informer.informer import Informer
from controller.informer.metrics import InformerMetrics, PrometheusInformerMetrics
from controller.informer.store import IndexFunc, Store, object_key

__all__ = [
    "IndexFunc",
    "Informer",
    "InformerMetrics",
    "PrometheusInformerMetrics",
    "Store",
    "object_key",
]
