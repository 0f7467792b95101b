"""A throwaway PostgreSQL server for the tests that need a real one (one session fixture, shared
by every test module that imports it), from Debian's server binaries."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from typing import Any, AsyncIterator

import pytest


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


async def create_database(server: str) -> str:
    """A fresh empty database on ``server``; answers its URL."""
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(server + "/postgres")
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return f"{server}/{name}"


async def drop_database(url: str) -> None:
    import asyncpg

    server, _, name = url.rpartition("/")
    admin = await asyncpg.connect(server + "/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
