"""Resource types the operator talks about, and the URL paths that address them.

Pure: no I/O. A ``Resource`` is the (group, version, plural) triple the API server routes on, plus
the kind and scope needed to build manifests and keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    """One REST resource, e.g. ``batch/v1 jobs``; ``group`` is ``""`` for the core group."""

    group: str
    """API group; ``""`` means the core group served under ``/api``."""
    version: str
    """API version within the group, e.g. ``v1``."""
    plural: str
    """The lower-case plural used in URLs, e.g. ``cronjobs``."""
    kind: str
    """The object kind, e.g. ``CronJob``."""
    namespaced: bool = True
    """Whether objects live in a namespace (``False`` for e.g. Nodes)."""

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field of objects of this resource: ``v1`` or ``batch/v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path of the collection, one object, or one object's subresource.

        ``namespace=None`` on a namespaced resource addresses the collection across all namespaces
        (list and watch only). Raises ``ValueError`` for combinations the API does not serve.
        """
        if subresource is not None and name is None:
            raise ValueError(f"subresource {subresource!r} of {self.plural} needs a name")
        if namespace is not None and not self.namespaced:
            raise ValueError(f"{self.plural} is cluster-scoped; got namespace {namespace!r}")
        if name is not None and self.namespaced and namespace is None:
            raise ValueError(f"{self.plural}/{name} is namespaced; a namespace is required")
        if name == "" or namespace == "":
            raise ValueError("names and namespaces must not be empty")

        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


TASKS = Resource("fabric.dev", "v1alpha1", "tasks", "Task")
JOBS = Resource("batch", "v1", "jobs", "Job")
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
TASKPOOLS = Resource("fabric.dev", "v1alpha1", "taskpools", "TaskPool", namespaced=False)
