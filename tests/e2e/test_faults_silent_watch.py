"""A watch that goes silent, end to end: the operator talks to the API server through a TCP relay
(TLS passes through untouched) that can freeze the connections open at a given moment: they stay
established but carry nothing either way, the way a half-dead NAT or load balancer leaves them.
New connections work. The operator's watches then hear nothing; its watchdog gives up on each
after ``silence_timeout`` (90 s, the default; there is no flag for it), re-opens it on a new
connection and the Task created meanwhile is served. Requests caught on frozen pooled connections
time out (30 s) and are retried, so the renew deadline is raised above that for this test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from cluster import OPERATOR_NAMESPACE
from controller.kube import NotFound
from controller.kube.resources import Resource
from tasks import create_task, eventually, jobs_of, task_manifest, wait_phase

pytestmark = pytest.mark.e2e

SILENCE_TIMEOUT = 90.0
LEASES = Resource(group="coordination.k8s.io", version="v1", plural="leases", kind="Lease")


class FreezingRelay:
    """A loopback TCP relay; ``freeze()`` stops every connection open at that moment, for good."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.gates: list[asyncio.Event] = []  # one per relayed connection; cleared = frozen
        self.pipes: set[asyncio.Task] = set()
        self.port = 0

    async def start(self) -> "FreezingRelay":
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        gate = asyncio.Event()
        gate.set()
        self.gates.append(gate)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink, gate))
            self.pipes.add(pipe)
            pipe.add_done_callback(self.pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        try:
            while data := await source.read(65536):
                await gate.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    def freeze(self) -> int:
        for gate in self.gates:
            gate.clear()
        return len(self.gates)

    def thaw(self) -> None:
        """Let the frozen connections carry their held data again (so a shutdown can release
        the Lease through them)."""
        for gate in self.gates:
            gate.set()

    async def close(self) -> None:
        self.server.close()
        for pipe in list(self.pipes):
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)


@pytest.fixture
async def relayed_kubeconfig(operator_kubeconfig: str, tmp_path: Path):
    """The operator's kubeconfig, pointed at a FreezingRelay in front of the API server."""
    config = yaml.safe_load(Path(operator_kubeconfig).read_text())
    cluster = config["clusters"][0]["cluster"]
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    relay = await FreezingRelay(host, int(port)).start()
    cluster["server"] = f"https://{host}:{relay.port}"
    path = tmp_path / "relayed-kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config))
    yield relay, str(path)
    await relay.close()


async def test_a_silent_watch_is_given_up_and_reopened(start_operator, relayed_kubeconfig, kube, namespace):
    relay, config = relayed_kubeconfig
    # A Lease of its own: should this operator fail to release it, no later test waits for it.
    lease = f"silent-watch-{namespace}"
    operator = start_operator("--kubeconfig", config, "--lease-name", lease,
                              "--lease-duration-seconds", "60", "--renew-deadline-seconds", "45",
                              "--retry-period-seconds", "2")
    try:
        await _silence(operator, relay, kube, namespace)
    finally:
        relay.thaw()
        # Bounded but slow: the Lease release may ride a pooled connection the freeze killed, and
        # waits out the 30 s request timeout before the process exits.
        operator.stop(timeout=120)
        try:
            await kube.delete(LEASES, lease, namespace=OPERATOR_NAMESPACE)
        except NotFound:
            pass


async def _silence(operator, relay, kube, namespace) -> None:
    await eventually(lambda: _logged(operator, "informer caches synced"), timeout=60, message="synced")
    await create_task(kube, namespace, task_manifest("before"))
    await wait_phase(kube, namespace, "before", "Succeeded")

    frozen = relay.freeze()
    frozen_at = time.monotonic()
    await create_task(kube, namespace, task_manifest("during-silence"))
    await asyncio.sleep(20)
    assert not await jobs_of(kube, namespace, "during-silence"), \
        "the Task was seen although every watch was frozen (no silence to test)"

    await eventually(lambda: jobs_of(kube, namespace, "during-silence"), timeout=SILENCE_TIMEOUT + 90, interval=1,
                     message="the Task created during the silence is served")
    recovered = time.monotonic() - frozen_at
    await wait_phase(kube, namespace, "during-silence", "Succeeded")
    silent = sorted({e["informer"] for e in operator.log_entries() if e.get("event") == "informer.watch_silent"})
    print(f"\n{frozen} connections frozen; watches given up as silent: {silent}; "
          f"Task served {recovered:.0f}s after the freeze (silence timeout {SILENCE_TIMEOUT:.0f}s)")
    assert "tasks" in silent
    assert recovered >= SILENCE_TIMEOUT - 30, "served before the watchdog could have fired"
    assert operator.process.poll() is None


async def _logged(operator, event: str) -> bool:
    return any(e.get("event") == event for e in operator.log_entries())
