"""The Kubernetes API boundary.

The only package that speaks HTTP to the API server. It owns:

- ``errors``     the exception tree every failure is translated into, and the retry predicates;
- ``resources``  ``Resource`` (group/version/plural/kind) and its URL paths; pure;
- ``config``     kubeconfig / in-cluster loading into host, TLS context and credentials;
- ``client``     ``KubeClient``: get, list, watch, create, replace, patch, delete, stream;
- ``metrics``    client-go-named request metrics, fed by ``KubeClient``'s ``on_request`` hook.

It returns raw decoded JSON (dicts), never model objects, and never decides policy: whether a
``NotFound`` is fine, when to relist or how long to back off is the caller's call, guided by the
predicates in ``errors``. Nothing outside this package imports aiohttp to reach the API server.
"""

from controller.kube.client import KubeClient, KubeStream
from controller.kube.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeConfigError,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    is_expired,
    is_permanent,
    is_retryable,
    retry_after,
)
from controller.kube.resources import CRONJOBS, EVENTS, JOBS, LEASES, PODS, TASKS, Resource

__all__ = [
    "AlreadyExists",
    "ApiError",
    "CRONJOBS",
    "Conflict",
    "EVENTS",
    "Forbidden",
    "Gone",
    "Invalid",
    "JOBS",
    "KubeClient",
    "KubeConfigError",
    "KubeError",
    "KubeStream",
    "LEASES",
    "NotFound",
    "PODS",
    "Resource",
    "ServerError",
    "TASKS",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "is_expired",
    "is_permanent",
    "is_retryable",
    "retry_after",
]
