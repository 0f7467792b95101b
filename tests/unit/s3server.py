"""A real S3-compatible server for the gateway's S3 tests: SeaweedFS started by
``tools/s3server.sh up`` on loopback (random ports, fresh credentials) once per test module, and a
fresh bucket per test. Skips, saying how to get it, when ``weed`` has not been built.

Import the fixture into a test module: ``from s3server import s3_server  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "s3server.sh"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def client(self) -> Any:
        """An aiobotocore S3 client context for this server (``async with server.client() as s3``)."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        return get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            config=AioConfig(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                             response_checksum_validation="when_required"),
        )

    async def new_bucket(self) -> str:
        """A fresh, empty bucket (retried while the server's filer finishes starting)."""
        name = "t-" + uuid.uuid4().hex[:20]
        async with self.client() as s3:
            for attempt in range(100):
                try:
                    await s3.create_bucket(Bucket=name)
                    return name
                except Exception:  # noqa: BLE001 - the filer may not be up yet
                    if attempt == 99:
                        raise
                    await asyncio.sleep(0.2)
        raise AssertionError("unreachable")


# Module scope, not session: a session fixture's teardown (stopping SeaweedFS takes seconds) would be
# charged to whichever test runs last, under that test's own timeout.
@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    if subprocess.run([str(SCRIPT), "path"], capture_output=True).returncode != 0:
        pytest.skip("SeaweedFS `weed` is not built: run `tools/s3server.sh build` (CI's .ci/run does)")
    base = tempfile.mkdtemp(prefix="gateway-s3-", dir="/tmp")
    result = subprocess.run([str(SCRIPT), "up", base], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        subprocess.run([str(SCRIPT), "down", base], capture_output=True)
        raise RuntimeError(f"tools/s3server.sh up failed:\n{result.stderr}")
    env = dict(line.split("=", 1) for line in Path(base, "env").read_text().split())
    try:
        yield S3Server(env["S3_ENDPOINT"], env["S3_ACCESS_KEY_ID"], env["S3_SECRET_ACCESS_KEY"])
    finally:
        subprocess.run([str(SCRIPT), "down", base], capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", base])
