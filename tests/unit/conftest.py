"""Fixtures shared by the unit tests.

Helpers live in plain modules beside the tests (``fakeclock``, ``fakekube``, ``logs_fakes``,
``report_support``, ``s3server``, ``gateway_harness``); test modules import those, never each other.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fakeclock import FakeClock
from fakekube import FakeKube
from gateway_harness import Gateway, Sections, merge_sections, start_gateway


@pytest.fixture
def clock() -> FakeClock:
    """A stepped clock; time moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
async def kube(clock: FakeClock) -> AsyncIterator[FakeKube]:
    """The in-memory API server (``fakekube.FakeKube``), its timestamps from ``clock``."""
    fake = FakeKube(clock)
    yield fake
    await fake.close()


@pytest.fixture
def gateway_sections() -> Sections:
    """Settings every gateway of a test module gets (``gateway_harness.gateway_settings``);
    a module overrides this fixture to choose its store, tokens or limits."""
    return {}


@pytest.fixture
async def make_gateway(tmp_path: Path, clock: FakeClock, gateway_sections: Sections) -> AsyncIterator[Callable[..., Any]]:
    """``await make_gateway(**sections)``: a started ``gateway_harness.Gateway`` on ``clock``, with
    the module's ``gateway_sections`` and then ``sections`` applied; stopped after the test."""
    started: list[Gateway] = []

    async def make(**sections: dict[str, Any]) -> Gateway:
        gateway = await start_gateway(tmp_path / f"gateway-{len(started)}", merge_sections(gateway_sections, sections),
                                      clock=clock)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.close()


# --- a real PostgreSQL server for the session ---------------------------------------------------


def _pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Any:
    """A throwaway PostgreSQL server: data and socket directories under /tmp, TCP on a free
    loopback port, trust auth, durability off (tests only). PostgreSQL refuses to run as root, so
    as root it runs as the Debian package's ``postgres`` user through runuser."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "install them with `apt-get install postgresql` (CI's .ci/run does)"
        )
    base = tempfile.mkdtemp(prefix="gateway-pg-", dir="/tmp")
    sockdir = os.path.join(base, "sock")
    os.mkdir(sockdir)
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (base, sockdir):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(base, "data")
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}\n{result.stderr}")

    run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockdir} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
    )
    try:
        run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(base, "server.log"), "-w", "-t", "60", "-o", options, "start")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        try:
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def database_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database for the test's records: a SQLite file, or a database of its own on the
    session's ``postgres_server``; ``store_kind`` (sqlite | postgres | s3) is the module's fixture."""
    if store_kind in ("sqlite", "s3"):
        yield f"sqlite:///{tmp_path}/db/tasks.db"
        return
    import asyncpg

    server = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(server + "/postgres")
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield f"{server}/{name}"
    admin = await asyncpg.connect(server + "/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
