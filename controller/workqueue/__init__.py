"""The workqueue: which Task keys need reconciling, when, and by whom (client-go semantics).

Owns: a dedup FIFO that hands each key to at most one worker at a time and never loses a change
seen during processing (``queue``); delayed adds from one timer heap on the injected clock
(``delaying``); retry policy (``rate_limiters``, pure) and its wiring (``rate_limiting``); and the
``workqueue_*`` Prometheus metrics (``metrics``).

Must never: know about Kubernetes, Tasks or HTTP (items are opaque hashable keys); read the real
time other than through the ``Clock`` it is given; leave a background task behind after shutdown.

Layers, one file each, each wrapping the one before::

    Queue  <-  DelayingQueue (add_after)  <-  RateLimitingQueue (add_rate_limited, forget)
"""

from controller.workqueue.delaying import DelayingQueue
from controller.workqueue.metrics import WorkqueueMetrics
from controller.workqueue.queue import BackgroundExit, Queue, ShutDown
from controller.workqueue.rate_limiters import (
    BucketRateLimiter,
    ItemBackoffRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from controller.workqueue.rate_limiting import RateLimitingQueue

__all__ = [
    "BackgroundExit",
    "BucketRateLimiter",
    "DelayingQueue",
    "ItemBackoffRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "Queue",
    "RateLimiter",
    "RateLimitingQueue",
    "ShutDown",
    "WorkqueueMetrics",
    "default_controller_rate_limiter",
]
