"""Gateway benchmark (not a test): list latency at N records, tail latency on a large log, upload
throughput against a local-file baseline, all through the real HTTP API of a real gateway process.

    .venv/bin/python perf/gateway_bench.py                       # 100k records, 256 MiB log, SQLite
    .venv/bin/python perf/gateway_bench.py --records 1000000 --log-mb 1024
    .venv/bin/python perf/gateway_bench.py --database-url postgresql://user@127.0.0.1:5432/bench
    .venv/bin/python perf/gateway_bench.py --postgres --records 1000000 --log-mb 0   # a throwaway PostgreSQL
    .venv/bin/python perf/gateway_bench.py --postgres --records 1000000 --log-mb 0 --explain --busy 4   # plans; loaded
    .venv/bin/python perf/gateway_bench.py --s3 --records 1000 --log-mb 1024         # logs in SeaweedFS (tools/s3server.sh)

What it does:

1. Seeds N records straight into the record store (bulk insert / COPY; the HTTP upsert path is
   measured by the unit tests, seeding through it would only measure the seeding). 90 % are
   executions spread over 30 days, with 20 skills, 5 statuses, 200 schedules, 10 projects.
   The target is 1 M records; seeding runs at roughly 30-60 k records/s on SQLite on one core
   (about 20-40 s per million) and faster with COPY on PostgreSQL.
2. Starts ``python -m gateway`` as a separate process on a free loopback port.
3. List: for each of several filters, walks ``--pages`` pages of 50 (``nextCursor``), timing every
   request; prints p50/p99 per filter and overall.
4. Log: generates a ``--log-mb`` log in a temporary file (bounded memory), copies it to another
   local file with fsync before and after the upload (the baseline: the disk's write path; the
   mean of the two), and uploads it through
   ``PUT /internal/tasks/{execution}/logs?offset=N`` in ``--put-mb`` requests with fsync on (as in
   production) and finalizes it; prints both throughputs and their ratio, measured in the same run,
   with and without the finalize, and the CPU seconds the gateway, this client and (``--s3``)
   SeaweedFS spent on each.
5. Tail: ``tail=100`` on that log ``--samples`` times (and a page from the middle, and a time
   window); prints p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, AsyncIterator

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.model import COLUMNS  # noqa: E402
from gateway.server import make_stores  # noqa: E402
from gateway.settings import Settings, StorageSettings  # noqa: E402
from perf.common import proc_cpu_seconds, start_busy, stop_busy  # noqa: E402

TOKEN = "bench-token"
DAY_MS = 86_400_000
T0_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SKILLS = [f"skill-{i}" for i in range(20)]
STATUSES = ["Succeeded", "Failed", "Running", "Pending", "Queued"]
PROJECTS = [f"proj-{i}" for i in range(10)]


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def fmt_ms(samples: list[float]) -> str:
    return f"p50 {pct(samples, 50) * 1000:7.2f} ms   p99 {pct(samples, 99) * 1000:7.2f} ms   (n={len(samples)})"


# --- seeding -------------------------------------------------------------------------------------


def make_rows(start: int, count: int, rnd: random.Random) -> list[dict[str, Any]]:
    """Rows 0..199 are the 200 scheduled tasks; every other row is an execution of one of them."""
    rows = []
    for i in range(start, start + count):
        is_task = i < 200
        sched = f"sched-{i % 200}"
        start_ms = T0_MS + rnd.randrange(30 * DAY_MS)
        row: dict[str, Any] = {c: None for c in COLUMNS}
        row.update(
            name=sched if is_task else f"{sched}-{27_000_000 + i}",
            namespace="team-a",
            kind="task" if is_task else "execution",
            task_type="scheduled" if i % 3 else "onetime",
            parent=None if is_task else sched,
            status=rnd.choice(STATUSES),
            start_ms=start_ms,
            end_ms=start_ms + 60_000,
            project_id=rnd.choice(PROJECTS),
            skill_name=rnd.choice(SKILLS),
            action_name="invoke",
            user_name=f"user-{rnd.randrange(100)}",
            source="gateway",
            payload={"text": "hello", "n": i},
            channel_id=f"chan-{rnd.randrange(1000)}",
            ref_id=f"ref-{i}",
            sequence=3,
            log_size=0,
            log_state="none",
            created_ms=start_ms,
            updated_ms=start_ms,
            expires_ms=start_ms + 3650 * DAY_MS,
            sort_ms=start_ms,
        )
        rows.append(row)
    return rows


# --- throwaway servers ---------------------------------------------------------------------------


def start_postgres(work: str) -> tuple[str, Any]:
    """A throwaway PostgreSQL (Debian's binaries) under ``work``, as tests/unit/test_gateway_api.py
    starts it but with its default durability (fsync on): (URL, stop function)."""
    import glob
    import pwd

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql")
    bindir = os.path.dirname(found[-1])
    base = os.path.join(work, "pg")
    os.makedirs(os.path.join(base, "sock"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (work, base, os.path.join(base, "sock")):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(base, "data"), free_port()
    subprocess.run([*prefix, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base}/sock -c shared_buffers=256MB -c max_connections=50"
    subprocess.run([*prefix, f"{bindir}/pg_ctl", "-D", data, "-l", f"{base}/server.log", "-w", "-o", options, "start"],
                   check=True, capture_output=True)
    subprocess.run([*prefix, f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench"], check=True)

    def stop() -> None:
        subprocess.run([*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)

    return f"postgresql://postgres@127.0.0.1:{port}/bench", stop


def start_s3(work: str) -> tuple[dict[str, str], Any]:  # before main's event loop: uses its own
    """SeaweedFS from tools/s3server.sh with a bucket ``bench``: (gateway environment, stop)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "s3server.sh")
    base = os.path.join(work, "s3")
    subprocess.run([script, "up", base], check=True, stdout=subprocess.DEVNULL)
    env = dict(line.split("=", 1) for line in open(os.path.join(base, "env")).read().split())

    async def bucket() -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(s3={"addressing_style": "path"})
        async with get_session().create_client(
            "s3", endpoint_url=env["S3_ENDPOINT"], region_name="us-east-1", config=config,
            aws_access_key_id=env["S3_ACCESS_KEY_ID"], aws_secret_access_key=env["S3_SECRET_ACCESS_KEY"],
        ) as s3:
            for attempt in range(100):
                try:
                    await s3.create_bucket(Bucket="bench")
                    return
                except Exception:  # noqa: BLE001 - the filer may still be starting
                    if attempt == 99:
                        raise
                    await asyncio.sleep(0.2)

    gateway_env = {
        "FABRIC_GATEWAY_BLOB_URL": "s3://bench/gw",
        "FABRIC_GATEWAY_S3_ENDPOINT": env["S3_ENDPOINT"],
        "FABRIC_GATEWAY_S3_ACCESS_KEY_ID": env["S3_ACCESS_KEY_ID"],
        "FABRIC_GATEWAY_S3_SECRET_ACCESS_KEY": env["S3_SECRET_ACCESS_KEY"],
    }

    def stop() -> None:
        subprocess.run([script, "down", base], capture_output=True)

    try:
        asyncio.run(bucket())
    except BaseException:
        stop()
        raise
    return gateway_env, stop


async def seed(database_url: str, blob_dir: str, n: int) -> float:
    records, _ = make_stores(Settings(storage=StorageSettings(database_url=database_url, blob_dir=blob_dir)))
    await records.open()
    rnd = random.Random(42)
    started = time.monotonic()
    try:
        batch = 20_000
        for first in range(0, n, batch):
            await records.bulk_insert(make_rows(first, min(batch, n - first), rnd))  # type: ignore[attr-defined]
        await records.analyze()  # type: ignore[attr-defined]
    finally:
        await records.close()
    return time.monotonic() - started


# --- the gateway process -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_gateway(database_url: str, blob_dir: str, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        **extra_env,
        "FABRIC_GATEWAY_PORT": str(port),
        "FABRIC_GATEWAY_DATABASE_URL": database_url,
        "FABRIC_GATEWAY_BLOB_DIR": blob_dir,
        "FABRIC_GATEWAY_INTERNAL_TOKEN": TOKEN,
        "FABRIC_GATEWAY_LOG_LEVEL": "warning",
        "FABRIC_GATEWAY_MAX_LOG_BYTES": str(64 << 30),
    }
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the gateway exited during startup")
            await asyncio.sleep(0.1)
    proc.terminate()
    raise SystemExit("the gateway did not become ready")


# --- list ----------------------------------------------------------------------------------------


def list_filters(rnd: random.Random) -> dict[str, Any]:
    """Each filter the list part walks: label -> a maker of its query parameters."""
    return {
        "no filter": lambda: {},
        "skill": lambda: {"skill": rnd.choice(SKILLS)},
        "status+project": lambda: {"status": "Failed", "project": rnd.choice(PROJECTS)},
        "status in (Failed, Running)": lambda: {"status": ["Failed", "Running"]},
        "schedule (executions of one)": lambda: {"schedule": f"sched-{rnd.randrange(200)}"},
        "type+since/until": lambda: {"type": "scheduled", "since": "2025-01-10T00:00:00Z", "until": "2025-01-12T00:00:00Z"},
        "skill, oldest first": lambda: {"skill": rnd.choice(SKILLS), "sort": "start"},
    }


async def bench_list(http: aiohttp.ClientSession, url: str, pages: int, walks: int) -> None:
    filters = list_filters(random.Random(7))
    everything: list[float] = []
    print(f"\nlist: {walks} walks of {pages} pages x 50 per filter")
    for label, make in filters.items():
        samples: list[float] = []
        for _ in range(walks):
            params = [(k, v) for k, vs in make().items() for v in (vs if isinstance(vs, list) else [vs])]
            params.append(("limit", "50"))
            cursor = None
            for _ in range(pages):
                q = params + ([("cursor", cursor)] if cursor else [])
                t = time.perf_counter()
                async with http.get(url + "/v1/tasks", params=q) as resp:
                    body = await resp.json()
                samples.append(time.perf_counter() - t)
                assert resp.status == 200, body
                cursor = body["nextCursor"]
                if not cursor:
                    break
        everything += samples
        print(f"  {label:30s} {fmt_ms(samples)}")
    print(f"  {'all':30s} {fmt_ms(everything)}")


async def explain_list(database_url: str) -> None:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of each filter's first page, with the SQL the gateway runs
    (``gateway.records.list_sql``) for the same query parameters (PostgreSQL only)."""
    import asyncpg

    from gateway.model import parse_list_query
    from gateway.records import POSTGRES, list_sql

    print("\nlist plans (EXPLAIN ANALYZE of each filter's first page):")
    conn = await asyncpg.connect(database_url)
    try:
        for label, make in list_filters(random.Random(7)).items():
            params = {k: (v if isinstance(v, list) else [v]) for k, v in make().items()}
            sql, args = list_sql(POSTGRES, parse_list_query({**params, "limit": ["50"]}))
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
            plan = [r[0] for r in rows]
            nodes = [line.strip() for line in plan if "Scan" in line or "Sort" in line or "Merge" in line]
            timing = next((line for line in plan if line.startswith("Execution Time")), "?")
            print(f"  {label}: {timing}")
            for node in nodes[:4]:
                print(f"      {node[:150]}")
    finally:
        await conn.close()


# --- log -----------------------------------------------------------------------------------------


def generate_log(path: str, size: int) -> str:
    rnd = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi".split()
    pool = [" ".join(rnd.choice(words) for _ in range(rnd.randrange(3, 25))) for _ in range(4096)]
    digest = hashlib.sha256()
    written = 0
    line = 0
    with open(path, "wb") as f:
        while written < size:
            block = "".join(f"{line + j:010d} {pool[(line + j) % 4096]}\n" for j in range(8192)).encode()
            block = block[: size - written]
            f.write(block)
            digest.update(block)
            written += len(block)
            line += 8192
    return digest.hexdigest()


def copy_baseline(src: str, dst: str) -> float:
    started = time.perf_counter()
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        os.fsync(fout.fileno())
    return time.perf_counter() - started


async def file_part(path: str, start: int, end: int) -> AsyncIterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        pos = start
        while pos < end:
            chunk = f.read(min(1 << 20, end - pos))
            if not chunk:
                return
            pos += len(chunk)
            yield chunk


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each labelled process."""
    return {label: proc_cpu_seconds(pid) for label, pid in pids.items()}


async def bench_log(
    http: aiohttp.ClientSession, url: str, work: str, log_mb: int, put_mb: int, samples: int, pids: dict[str, int]
) -> None:
    size = log_mb << 20
    src = os.path.join(work, "bench.log")
    t = time.perf_counter()
    digest = generate_log(src, size)
    print(f"\nlog: generated {log_mb} MiB in {time.perf_counter() - t:.1f} s")
    before = copy_baseline(src, os.path.join(work, "copy.log"))
    os.unlink(os.path.join(work, "copy.log"))
    name = "bench-exec-28950000"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cpu0 = cpu_of(pids)
    started = time.perf_counter()
    offset = 0
    while offset < size:
        end = min(size, offset + (put_mb << 20))
        async with http.put(
            f"{url}/internal/tasks/{name}/logs?offset={offset}", data=file_part(src, offset, end), headers=auth
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            offset = body["size"]
    upload = time.perf_counter() - started
    cpu1 = cpu_of(pids)
    t = time.perf_counter()
    async with http.post(f"{url}/internal/tasks/{name}/logs/finalize", json={"size": size, "sha256": digest}, headers=auth) as resp:
        assert resp.status == 200, await resp.text()
    finalize = time.perf_counter() - t
    cpu2 = cpu_of(pids)
    after = copy_baseline(src, os.path.join(work, "copy.log"))
    os.unlink(os.path.join(work, "copy.log"))
    baseline = (before + after) / 2  # the disk's state drifts (writeback); bracket the upload
    mib = size / (1 << 20)
    print(f"  local file copy + fsync      {mib / baseline:8.1f} MiB/s   (before {mib / before:.0f}, after {mib / after:.0f})")
    print(f"  HTTP upload ({put_mb} MiB PUTs)    {mib / upload:8.1f} MiB/s   ratio {baseline / upload:.2f} of the local copy")
    print(f"  finalize (sha256 check)      {finalize * 1000:8.1f} ms")
    print(f"  upload + finalize            {mib / (upload + finalize):8.1f} MiB/s   ratio {baseline / (upload + finalize):.2f} of the local copy")
    for label in pids:
        print(f"  CPU s of {label:20s}upload {cpu1[label] - cpu0[label]:6.1f}   finalize {cpu2[label] - cpu1[label]:6.1f}")

    if samples <= 0:
        return

    async def timed(params: dict[str, Any]) -> float:
        t = time.perf_counter()
        async with http.get(f"{url}/v1/tasks/{name}/logs", params=params) as resp:
            body = await resp.json()
        elapsed = time.perf_counter() - t
        assert resp.status == 200 and body["rows"], body
        return elapsed

    total = (await (await http.get(f"{url}/v1/tasks/{name}/logs", params={"tail": "1"})).json())["totalLines"]
    tail = [await timed({"tail": "100"}) for _ in range(samples)]
    back = [await timed({"tail": "100", "before": str(random.randrange(101, total))}) for _ in range(samples)]
    middle = [await timed({"offset": str(random.randrange(total - 100)), "limit": "100"}) for _ in range(samples)]
    grep_tail = [await timed({"tail": "10", "grep": "0000000"}) for _ in range(max(3, samples // 10))]
    print(f"  lines: {total}")
    print(f"  tail=100                     {fmt_ms(tail)}")
    print(f"  tail=100&before=<random>     {fmt_ms(back)}")
    print(f"  offset=<random>&limit=100    {fmt_ms(middle)}")
    print(f"  tail=10&grep=<rare, at start> {fmt_ms(grep_tail)}   (scans the whole log backwards)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000, help="records to seed (target: 1000000)")
    p.add_argument("--log-mb", type=int, default=256, help="size of the generated log in MiB (target: 1024; 0: no log part)")
    p.add_argument("--put-mb", type=int, default=64, help="MiB per upload request")
    p.add_argument("--pages", type=int, default=20, help="pages per list walk")
    p.add_argument("--walks", type=int, default=10, help="list walks per filter")
    p.add_argument("--samples", type=int, default=50, help="requests per log query kind (0: upload and finalize only)")
    p.add_argument("--database-url", default=None, help="default: a SQLite file in the work directory")
    p.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server for the records")
    p.add_argument("--s3", action="store_true", help="logs in SeaweedFS started by tools/s3server.sh (built first)")
    p.add_argument("--workdir", default=None, help="default: a temporary directory (removed at the end)")
    p.add_argument("--busy", type=int, default=0,
                   help="processes spinning on a CPU each while the list and log parts run (a loaded machine)")
    p.add_argument("--explain", action="store_true", help="PostgreSQL: print EXPLAIN ANALYZE of each list filter")
    args = p.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="gateway-bench-")
    os.makedirs(work, exist_ok=True)
    stops: list[Any] = []
    try:
        database_url = args.database_url or f"sqlite:///{work}/tasks.db"
        if args.postgres:
            database_url, stop = start_postgres(work)
            stops.append(stop)
        extra_env: dict[str, str] = {}
        if args.s3:
            extra_env, stop = start_s3(work)
            stops.append(stop)
        blobs = extra_env.get("FABRIC_GATEWAY_BLOB_URL", "local directory")
        print(f"gateway bench: {args.records} records, {args.log_mb} MiB log, store {database_url.split(':')[0]}, "
              f"logs {blobs}, work dir {work}")
        asyncio.run(run(args, work, database_url, extra_env))
    finally:
        for stop in reversed(stops):
            stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


async def run(args: argparse.Namespace, work: str, database_url: str, extra_env: dict[str, str]) -> None:
    blob_dir = os.path.join(work, "blobs")
    seconds = await seed(database_url, blob_dir, args.records)
    print(f"seeded {args.records} records in {seconds:.1f} s ({args.records / max(seconds, 1e-9):,.0f}/s)")
    proc, url = await start_gateway(database_url, blob_dir, extra_env)
    busy = start_busy(args.busy)
    if busy:
        print(f"loaded: {len(busy)} processes spinning on a CPU each, on {os.cpu_count()} CPUs")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as http:
            await bench_list(http, url, args.pages, args.walks)
            if args.explain and database_url.startswith("postgres"):
                await explain_list(database_url)
            if args.log_mb > 0:
                pids = {"the gateway": proc.pid, "this client": os.getpid()}
                s3_pid = os.path.join(work, "s3", "pid")
                if os.path.exists(s3_pid):
                    pids["SeaweedFS"] = int(open(s3_pid).read())
                await bench_log(http, url, work, args.log_mb, args.put_mb, args.samples, pids)
    finally:
        stop_busy(busy)
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
