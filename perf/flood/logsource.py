"""What each pod writes, and what it is known to have written (size and sha256 of the content).

Two sources behind one small interface:

- ``KwokLogs`` (the local devcluster): kwok serves ``pods/log`` from a CRI-format file; one file
  per log size is generated (``tests/e2e/crilog.py``) before the Tasks exist and a ``ClusterLogs``
  points every ``task`` container of that size's namespace at it.
- ``ContainerLogs`` (kind or a real cluster): a small busybox container writes ``size`` bytes of
  fixed 100-byte lines to stdout (``yes LINE | head -c N``); the expected sha256 is computed here.

Cluster writes happen only in ``prepare``/``cleanup``; ``template`` and ``expected`` are pure.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from controller.kube import KubeClient, NotFound
from controller.kube.resources import Resource
from controller.model.labels import CONTAINER_NAME

CLUSTER_LOGS = Resource(group="kwok.x-k8s.io", version="v1alpha1", plural="clusterlogs", kind="ClusterLogs",
                        namespaced=False)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
RUN_FOR = "fabric.dev/kwok-run-for"
IMAGE = "busybox:1.36"
LINE = ("fabric flood line " + "0123456789abcdef" * 6)[:99]
"""Each line a container writes (plus a newline: 100 bytes)."""


@dataclass(frozen=True)
class Expected:
    size: int
    sha256: str


class LogSource(Protocol):
    kind: str

    async def prepare(self, kube: KubeClient, namespace: str, size: int) -> Expected:
        """Make pods of ``namespace`` write ``size`` bytes; return what they will have written."""

    def template(self, size: int, run_for: str, labels: dict[str, str]) -> dict:
        """A Task's ``spec.template`` whose pod writes ``size`` bytes."""

    def baseline_pod(self, name: str, size: int, labels: dict[str, str]) -> dict:
        """A bare Pod whose ``task`` container's log the curl/kubectl baselines read."""

    async def cleanup(self, kube: KubeClient) -> None: ...


class KwokLogs:
    kind = "kwok"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._generated: dict[int, Expected] = {}  # size -> content; owned by prepare()
        self._cluster_logs: list[str] = []  # ClusterLogs this source created; owned by prepare()

    async def prepare(self, kube: KubeClient, namespace: str, size: int) -> Expected:
        from crilog import write_cri_log  # tests/e2e, on sys.path through perf.common

        path = self.workdir / f"container-{size}.log"
        if size not in self._generated:
            # Long lines (40-240 KiB, some as 16 KiB containerd pieces) only where they fit.
            long_lines = 6 if size >= 4 * 1024 * 1024 else 0
            generated = await asyncio.to_thread(write_cri_log, path, size, seed=size % 1000 + 7,
                                                long_lines=long_lines)
            self._generated[size] = Expected(generated.size, generated.sha256)
        await kube.create(CLUSTER_LOGS, {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": namespace},
            "spec": {"selector": {"matchNamespaces": [namespace]},
                     "logs": [{"containers": [CONTAINER_NAME], "logsFile": str(path)}]},
        })
        self._cluster_logs.append(namespace)
        return self._generated[size]

    def template(self, size: int, run_for: str, labels: dict[str, str]) -> dict:
        return {"metadata": {"labels": labels, "annotations": {RUN_FOR: run_for}},
                "image": IMAGE, "command": ["sh", "-c", "cat /dev/null"]}

    def baseline_pod(self, name: str, size: int, labels: dict[str, str]) -> dict:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "annotations": {RUN_FOR: "24h"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": CONTAINER_NAME, "image": IMAGE}]}}

    async def cleanup(self, kube: KubeClient) -> None:
        for name in self._cluster_logs:
            try:
                await kube.delete(CLUSTER_LOGS, name)
            except NotFound:
                pass
        for size in self._generated:
            (self.workdir / f"container-{size}.log").unlink(missing_ok=True)


PACE_CHUNK = 10_485_700
"""Bytes a paced writer writes between two sleeps: whole 100-byte lines, so the content is the
same as one unpaced stream."""


def writer_command(size: int, bytes_per_second: int | None = None) -> list[str]:
    """busybox sh writing ``size`` bytes of LINE to stdout, at about ``bytes_per_second`` when given
    (a kubelet rotates logs at containerLogMaxSize; a writer faster than the follower would make
    rotated files vanish before they are read, as in production)."""
    if not bytes_per_second or size <= PACE_CHUNK:
        return ["sh", "-c", f"yes '{LINE}' | head -c {size}"]
    chunks, rest = divmod(size, PACE_CHUNK)
    pause = PACE_CHUNK / bytes_per_second
    return ["sh", "-c", f"i=0; while [ $i -lt {chunks} ]; do yes '{LINE}' | head -c {PACE_CHUNK}; sleep {pause:.2f}; "
                        f"i=$((i+1)); done; yes '{LINE}' | head -c {rest}"]


def container_expected(size: int) -> Expected:
    """The content of ``writer_command(size)``: LINE + newline, repeated, cut at ``size`` bytes."""
    line = (LINE + "\n").encode()
    block = line * ((1 << 20) // len(line))  # whole lines, so every block starts a line
    digest = hashlib.sha256()
    left = size
    while left >= len(block):
        digest.update(block)
        left -= len(block)
    digest.update(block[:left])
    return Expected(size, digest.hexdigest())


class ContainerLogs:
    kind = "container"

    def __init__(self, bytes_per_second: Callable[[int], int | None] = lambda size: None, image: str = IMAGE) -> None:
        self.bytes_per_second = bytes_per_second  # log size -> how fast its writers write
        self.image = image

    async def prepare(self, kube: KubeClient, namespace: str, size: int) -> Expected:
        return await asyncio.to_thread(container_expected, size)

    def template(self, size: int, run_for: str, labels: dict[str, str]) -> dict:
        return {"metadata": {"labels": labels}, "image": self.image,
                "command": writer_command(size, self.bytes_per_second(size))}

    def baseline_pod(self, name: str, size: int, labels: dict[str, str]) -> dict:
        # Writes, then sleeps so the log stays readable from the same container while curl reads it.
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": CONTAINER_NAME, "image": self.image,
                    "command": ["sh", "-c", f"yes '{LINE}' | head -c {size}; sleep 86400"]}]}}

    async def cleanup(self, kube: KubeClient) -> None:
        return None


async def detect(kube: KubeClient) -> str:
    """``kwok`` when every node is a kwok fake node (kwok's node annotation), else ``container``."""
    nodes = (await kube.list(NODES))["items"]
    fake = [n for n in nodes if "kwok.x-k8s.io/node" in (n["metadata"].get("annotations") or {})]
    return "kwok" if nodes and len(fake) == len(nodes) else "container"
