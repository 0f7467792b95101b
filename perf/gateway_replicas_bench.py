"""Multi-replica upload benchmark (not a test): log upload throughput through 1 and through 2
gateway processes on one throwaway PostgreSQL and one blob directory, in the same run, and their
ratio (issue 16, "horizontal gateway").

    .venv/bin/python perf/gateway_replicas_bench.py                  # 200 MiB in 8 logs, 4 MiB PUTs
    .venv/bin/python perf/gateway_replicas_bench.py --total-mb 1024 --logs 16 --put-mb 1

Each run gets a fresh database and blob directory and its own gateway processes (fsync on, as in
production). ``--logs`` logs are uploaded concurrently, one client task per log, in ``--put-mb``
PUTs (``PUT /internal/tasks/{execution}/logs?offset=N``) and finalized with their sha256; with 2
replicas the PUTs are sent round robin (each log's PUTs alternate between the replicas, so every
upload takes the ledger's lock on another process than the last one). Prints MiB/s for each run
and ``2 replicas / 1 replica``. On a machine with fewer free cores than gateway processes plus
PostgreSQL the ratio shows the ledger's cost rather than the scaling: say so next to the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from perf.gateway_bench import TOKEN, file_part, generate_log, start_gateway, start_postgres  # noqa: E402


async def _create_database(server_url: str, name: str) -> str:
    import asyncpg

    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


async def upload_all(urls: list[str], src: str, digest: str, size: int, logs: int, put: int) -> float:
    """Seconds to upload and finalize ``logs`` copies of ``src`` concurrently, PUTs round robin."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    turn = itertools.cycle(urls)

    async def one(http: aiohttp.ClientSession, execution: str) -> None:
        offset = 0
        while offset < size:
            end = min(offset + put, size)
            async with http.put(f"{next(turn)}/internal/tasks/{execution}/logs", params={"offset": str(offset)},
                                data=file_part(src, offset, end), headers=auth) as resp:
                if resp.status != 200:
                    raise SystemExit(f"upload {execution}@{offset}: {resp.status} {await resp.text()}")
                offset = (await resp.json())["size"]
        async with http.post(f"{next(turn)}/internal/tasks/{execution}/logs/finalize",
                             json={"size": size, "sha256": digest}, headers=auth) as resp:
            if resp.status != 200:
                raise SystemExit(f"finalize {execution}: {resp.status} {await resp.text()}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(one(http, f"bench-{len(urls)}r-{i:03d}") for i in range(logs)))
        return time.perf_counter() - started


async def run(args: argparse.Namespace, work: str, server_url: str) -> None:
    per_log = (args.total_mb << 20) // args.logs
    src = os.path.join(work, "bench.log")
    digest = generate_log(src, per_log)
    results: dict[int, float] = {}
    for replicas in (1, 2):
        database_url = await _create_database(server_url, f"bench_{replicas}r")
        blob_dir = os.path.join(work, f"blobs-{replicas}r")
        env = {"FABRIC_GATEWAY_REPLICAS": str(replicas), "FABRIC_GATEWAY_FSYNC": "true"}
        procs = [await start_gateway(database_url, blob_dir, env) for _ in range(replicas)]
        try:
            seconds = await upload_all([url for _, url in procs], src, digest, per_log, args.logs, args.put_mb << 20)
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait()
        results[replicas] = per_log * args.logs / seconds / (1 << 20)
        print(f"{replicas} replica{'s' if replicas > 1 else ''}: {args.logs} logs x {per_log >> 20} MiB in "
              f"{args.put_mb} MiB PUTs: {seconds:.1f} s, {results[replicas]:.1f} MiB/s")
    print(f"2 replicas / 1 replica: {results[2] / results[1]:.2f}  (cores: {os.cpu_count()}, "
          f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--total-mb", type=int, default=200, help="MiB uploaded per run, over all logs")
    p.add_argument("--logs", type=int, default=8, help="logs uploaded concurrently")
    p.add_argument("--put-mb", type=int, default=4, help="MiB per upload request")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="gateway-replicas-bench-")
    url, stop = start_postgres(work)
    try:
        asyncio.run(run(args, work, url))
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
