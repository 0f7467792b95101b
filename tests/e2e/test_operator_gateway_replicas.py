"""The real operator shipping a pod's log to two gateway replicas (issue 16, "horizontal
gateway"): two ``python -m gateway`` processes on one PostgreSQL and one blob directory behind a
round-robin HTTP proxy (a Service's view), the operator's ``--gateway-url`` pointed at the proxy,
so its PUTs alternate between the replicas; one replica SIGKILLed while the log streams. The log
is stored byte-identical, the record arrives, the Job goes, and the operator saw only answers it
retries (the proxy's 502 for the dead replica, 503 ``upload_in_progress``, 409 resume)."""

from __future__ import annotations

import hashlib
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the gateway's test helpers

from crilog import write_cri_log  # noqa: E402
from pgserver import create_database, drop_database, postgres_server  # noqa: E402,F401 - session fixture
from tasks import create_task, eventually, jobs_of, task_manifest  # noqa: E402
from test_gateway_replicas import RoundRobinProxy  # noqa: E402
from test_gateway_shutdown import TOKEN, GatewayProcess  # noqa: E402
from test_operator_logs import no_jobs, serve_logs, wait_log  # noqa: E402,F401 - fixture

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


@pytest.fixture
async def replicas(postgres_server, tmp_path):  # noqa: F811
    database = await create_database(postgres_server)
    started: list[GatewayProcess] = []
    try:
        for i in range(2):
            root = tmp_path / f"replica-{i}"
            root.mkdir()
            started.append(await GatewayProcess(root, database_url=database, blob_dir=tmp_path / "shared-blobs",
                                                args=("--replicas", "2")).start())
        yield started
    finally:
        for gw in started:
            await gw.kill()
        await drop_database(database)


async def test_operator_uploads_alternate_between_two_replicas_and_one_is_killed_mid_stream(
        start_operator, kube, namespace, serve_logs, replicas, tmp_path):  # noqa: F811
    generated = write_cri_log(tmp_path / "container.log", 40 * MB, seed=11)
    await serve_logs(generated.path)
    proxy = await RoundRobinProxy([gw.url for gw in replicas]).start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        operator = start_operator("--gateway-url", proxy.url, "--gateway-token-file", str(token_file),
                                  "--log-bytes-per-second", str(6 * MB))
        await create_task(kube, namespace, task_manifest("two-replicas", run_for="30s"))
        [job] = await eventually(lambda: jobs_of(kube, namespace, "two-replicas"), message="job created")
        execution = job["metadata"]["name"]
        stored = tmp_path / "shared-blobs" / "tasks" / execution / "log.txt"

        async def alternating() -> bool:  # both replicas took PUTs of this log, and it is under way
            puts = proxy.uploads.get(execution, [])
            return set(puts) == {0, 1} and stored.exists() and stored.stat().st_size >= 8 * MB

        await eventually(alternating, timeout=120, message="uploads alternate between the replicas")
        latest = proxy.uploads[execution][-1]  # the replica of the latest PUT
        victim, survivor = replicas[latest], replicas[1 - latest]
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()

        entry = await wait_log(kube, namespace, "two-replicas", timeout=300)
        assert entry["sha256"] == generated.sha256 and entry["size"] == generated.size
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{survivor.url}/v1/tasks/{execution}/logs/raw") as response:
                assert response.status == 200
                digest = hashlib.sha256()
                async for chunk in response.content.iter_chunked(1 << 20):
                    digest.update(chunk)
            assert digest.hexdigest() == generated.sha256

            async def record():
                async with http.get(f"{survivor.url}/v1/tasks/{execution}") as response:
                    body = await response.json() if response.status == 200 else {}
                return body if body.get("status") == "Succeeded" else None

            await eventually(record, timeout=60, message="execution record in the gateway")
        await eventually(lambda: no_jobs(kube, namespace, "two-replicas"), timeout=60, message="job deleted")
        # What the operator was answered: successes, and only answers it retries.
        assert set(proxy.statuses) <= {200, 409, 502, 503}, proxy.statuses
        assert proxy.statuses[502] >= 1 and proxy.routed[1 - replicas.index(survivor)] >= 1  # the kill was felt
        print(f"proxy answered {dict(proxy.statuses)}; PUTs of the log per replica: "
              f"{dict(sorted(Counter(proxy.uploads[execution]).items()))}")
        assert not [e for e in operator.log_entries() if e.get("event") == "log shipping failed"]
    finally:
        await proxy.close()
