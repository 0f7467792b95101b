"""DirectorySink on a failing disk: storage errors become sink errors the shipper understands
(a full disk is retried, not reported as an internal crash), and bytes written before the
failure are resumed from, not duplicated."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from controller.logs.errors import SinkRejected, SinkUnavailable, is_retryable
from controller.logs.sinks import DirectorySink

FULL_DISK_SCRIPT = r"""
import asyncio, resource, sys
from controller.logs.sinks import DirectorySink
from controller.logs.errors import SinkUnavailable
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
async def main():
    sink = DirectorySink(sys.argv[1], fsync=False)
    try:
        await sink.append("full", 0, b"x" * 10000, None)
    except SinkUnavailable as exc:
        print("unavailable", type(exc.__cause__).__name__, exc.__cause__.errno)
    print("held", (await sink.state("full")).size)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    size = (await sink.state("full")).size
    print("appended", await sink.append("full", size, b"y" * 10000, None))
asyncio.run(main())
"""


def test_a_file_size_limit_is_a_retryable_sink_outage_and_the_held_bytes_stay(tmp_path):
    """EFBIG from RLIMIT_FSIZE (Python ignores SIGXFSZ) is what a full volume looks like."""
    done = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"unavailable OSError {errno.EFBIG}"
    assert lines[1] == "held 4096", "a short write keeps what fitted; the shipper resumes after it"
    assert lines[2] == "appended 14096"


@pytest.mark.parametrize("code, kind", [
    pytest.param(errno.ENOSPC, SinkUnavailable, id="disk-full"),
    pytest.param(errno.EDQUOT, SinkUnavailable, id="quota"),
    pytest.param(errno.EROFS, SinkUnavailable, id="read-only-volume"),
    pytest.param(errno.EIO, SinkUnavailable, id="io-error"),
    pytest.param(errno.EACCES, SinkRejected, id="permission-denied"),
    pytest.param(errno.ENAMETOOLONG, SinkRejected, id="name-too-long"),
])
async def test_os_errors_are_translated_once(tmp_path, monkeypatch, code, kind):
    sink = DirectorySink(tmp_path, fsync=False)

    def failing_write(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(sink, "_write", failing_write)
    with pytest.raises(kind) as caught:
        await sink.append("e", 0, b"data", None)
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == code
    assert is_retryable(caught.value) == (kind is SinkUnavailable)
